//! The OpenAPI 3 document (`GET /api/v1/openapi.json`), generated from the handlers'
//! annotations, and the Swagger UI at `/docs`, whose assets are compiled into the binary so the
//! page works offline.

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Tenant management service", description = "Tenants, their lifecycle, configuration, quotas and billing."),
    paths(
        super::health::health,
        super::health::livez,
        super::tenants::list,
        super::tenants::get,
        super::tenants::update,
        super::tenants::set_status,
        super::lifecycle::create,
        super::lifecycle::delete,
        super::lifecycle::restore,
        super::jobs::get,
        super::jobs::events,
        super::monitoring::service,
        super::monitoring::tenant,
        super::monitoring::all_tenants,
        super::monitoring::tenant_health,
        super::jobs::list_for_tenant,
        super::plans::list,
        super::plans::get,
        super::plans::create,
        super::plans::update,
        super::internal::validate,
        super::quotas::internal_check,
        super::quotas::public_check,
        super::quotas::record_usage,
        super::quotas::internal_list,
        super::quotas::list,
        super::quotas::set_limits,
        super::quotas::usage,
        super::settings::get,
        super::settings::put,
        super::settings::reset,
        super::features::get,
        super::features::patch,
        super::features::internal,
        super::internal::context,
        super::audit::list,
        super::billing::show,
        super::billing::change_plan,
        super::billing::invoices,
        super::billing::invoice,
        super::billing::pay,
        super::billing_webhook::receive,
    ),
    modifiers(&Security, &StandardErrors),
    tags(
        (name = "tenants", description = "Tenants and their lifecycle"),
        (name = "jobs", description = "Asynchronous jobs and their progress"),
        (name = "plans", description = "Subscription plans"),
        (name = "billing", description = "Billing: plan changes, invoices, payments, Stripe webhooks"),
        (name = "quotas", description = "Quota limits, checks and usage"),
        (name = "config", description = "Layered tenant configuration"),
        (name = "features", description = "Feature flags"),
        (name = "audit", description = "The audit log"),
        (name = "internal", description = "For the platform's other services (X-Service-Token)"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components.add_security_scheme(
            "serviceToken",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Service-Token"))),
        );
    }
}

/// The answers every operation can give besides its own, added where its annotation does not
/// list them, so the document states every status a client can meet: 400 for bad input, 401 and
/// 403 where credentials are needed, 404 for an unknown id, 413 for a body over 1 MiB, 422 and 409
/// for a reused or in-flight `Idempotency-Key`, 429 for the per-tenant rate limit, 503 when a
/// dependency is down or the request deadline passes.
struct StandardErrors;

impl Modify for StandardErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        for (path, item) in &mut openapi.paths.paths {
            // The Stripe webhook is authenticated by its signature and outside the idempotency
            // layer: none of the token or Idempotency-Key answers apply to it.
            let public = path.starts_with("/api/v1/")
                && !path.ends_with("/health")
                && !path.ends_with("openapi.json")
                && !path.starts_with("/api/v1/billing/stripe/");
            let operations = [
                (false, item.get.as_mut()),
                (true, item.put.as_mut()),
                (true, item.post.as_mut()),
                (true, item.delete.as_mut()),
                (true, item.patch.as_mut()),
            ];
            for (mutating, operation) in operations {
                let Some(op) = operation else { continue };
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_input = op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let mut standard = Vec::new();
                if has_input {
                    standard.push(("400", "`VALIDATION_FAILED`: malformed or invalid input, named in `details.field`"));
                }
                if secured {
                    standard.push(("401", "`UNAUTHORIZED`: no, bad or expired credentials"));
                }
                if secured && public {
                    standard.push(("403", "`FORBIDDEN` or `CROSS_TENANT_ACCESS_DENIED`: the token may not do this"));
                }
                if path.contains("{id}") {
                    standard.push(("404", "`TENANT_NOT_FOUND` or `JOB_NOT_FOUND`"));
                }
                if op.request_body.is_some() {
                    standard.push(("413", "`PAYLOAD_TOO_LARGE`: the body exceeds 1 MiB"));
                }
                if public && mutating {
                    standard.push(("409", "`IDEMPOTENCY_IN_PROGRESS`: a request with this key is in progress"));
                    standard.push(("422", "`IDEMPOTENCY_KEY_REUSED`: the key was used for a different request"));
                }
                if public && secured {
                    standard.push(("429", "`RATE_LIMITED`: the tenant's API rate limit is reached (`Retry-After`)"));
                }
                if path != "/livez" {
                    standard
                        .push(("503", "`DEPENDENCY_UNAVAILABLE`: PostgreSQL or Redis is down, or the deadline passed"));
                }
                for (status, description) in standard {
                    op.responses.responses.entry(status.to_owned()).or_insert_with(|| error(description).into());
                }
            }
        }
    }
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    SwaggerUi::new("/docs").url("/api/v1/openapi.json", ApiDoc::openapi()).into()
}
