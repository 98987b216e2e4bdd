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
    ),
    modifiers(&Security),
    tags(
        (name = "tenants", description = "Tenants and their lifecycle"),
        (name = "jobs", description = "Asynchronous jobs and their progress"),
        (name = "plans", description = "Subscription plans"),
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

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    SwaggerUi::new("/docs").url("/api/v1/openapi.json", ApiDoc::openapi()).into()
}
