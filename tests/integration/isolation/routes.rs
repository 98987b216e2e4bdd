//! The attack surface, read from what the service itself says it serves: every operation of the
//! OpenAPI document (`GET /api/v1/openapi.json`), what each path parameter names (from its
//! documented description), who may call it (its security scheme, and "Platform admins only" in
//! its documented 403), and whether it takes a body. The router's own source is read too, so a
//! route registered without a document entry fails the suite instead of escaping it.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tenant_tests::TestApp;

/// What a path parameter names, from its description in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    Tenant,
    Job,
    Invoice,
    Plan,
}

impl Names {
    fn from_description(description: &str) -> Option<Names> {
        match description {
            "Tenant id" => Some(Names::Tenant),
            "Job id" => Some(Names::Job),
            "Invoice id" => Some(Names::Invoice),
            d if d.contains("plan") => Some(Names::Plan),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Bearer,
    ServiceToken,
    Public,
}

/// One documented operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: Method,
    /// The documented path, e.g. `/api/v1/tenants/{id}/invoices/{invoice_id}`.
    pub template: String,
    /// Path parameters in order of appearance, with what each names.
    pub params: Vec<(String, Names)>,
    pub auth: Auth,
    pub platform_only: bool,
    pub has_body: bool,
}

/// What a tenant user of A must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Refused with this status and error code.
    Refused(StatusCode, &'static str),
    /// Served (2xx): the operation names nothing of B's.
    Served,
    /// No expectation on the status (unauthenticated operations); only that nothing of B leaks.
    Anything,
}

pub const CROSS_TENANT: Expect = Expect::Refused(StatusCode::FORBIDDEN, "CROSS_TENANT_ACCESS_DENIED");
pub const FORBIDDEN: Expect = Expect::Refused(StatusCode::FORBIDDEN, "FORBIDDEN");
pub const UNAUTHORIZED: Expect = Expect::Refused(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

impl Operation {
    pub fn label(&self) -> String {
        format!("{} {}", self.method, self.template)
    }

    /// Names a tenant: through a tenant, job or invoice id in its path.
    pub fn names_tenant(&self) -> bool {
        self.params.iter().any(|(_, n)| matches!(n, Names::Tenant | Names::Job | Names::Invoice))
    }

    pub fn has_tenant_param(&self) -> bool {
        self.params.iter().any(|(_, n)| *n == Names::Tenant)
    }

    /// The answer a tenant user of another tenant must get: the service token's 401 on internal
    /// routes, 403 `CROSS_TENANT_ACCESS_DENIED` on any route naming a tenant (platform-only ones
    /// included: naming another tenant is what is refused first), 403 `FORBIDDEN` on the other
    /// platform-only ones; routes naming none are served.
    pub fn expect_for_other_tenant(&self) -> Expect {
        match self.auth {
            Auth::Public => Expect::Anything,
            Auth::ServiceToken => UNAUTHORIZED,
            Auth::Bearer if self.names_tenant() => CROSS_TENANT,
            Auth::Bearer if self.platform_only => FORBIDDEN,
            Auth::Bearer => Expect::Served,
        }
    }

    /// The path with each parameter filled by `fill`.
    pub fn path(&self, fill: impl Fn(Names) -> String) -> String {
        self.params
            .iter()
            .fold(self.template.clone(), |path, (name, names)| path.replace(&format!("{{{name}}}"), &fill(*names)))
    }
}

/// Every operation of the document the API serves.
pub async fn documented(app: &TestApp) -> Vec<Operation> {
    let (status, doc) = app.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK, "the OpenAPI document is served");
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut ops = Vec::new();
    for (template, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let Ok(method) = method.to_uppercase().parse::<Method>() else { continue };
            if !matches!(method, Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
                continue;
            }
            ops.push(operation(method, template, op));
        }
    }
    assert!(ops.iter().filter(|op| op.names_tenant()).count() >= 10, "the document lists no tenant routes: {doc}");
    ops
}

fn operation(method: Method, template: &str, op: &Value) -> Operation {
    let params = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "path")
        .map(|p| {
            let name = p["name"].as_str().expect("parameter name").to_owned();
            let description = p["description"].as_str().unwrap_or_default();
            let names = Names::from_description(description).unwrap_or_else(|| {
                panic!(
                    "{method} {template}: the isolation suite does not know what path parameter `{name}` \
                     (\"{description}\") names; teach `Names::from_description`"
                )
            });
            (name, names)
        })
        .collect();
    let schemes: Vec<&str> = op["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|s| s.keys())
        .map(String::as_str)
        .collect();
    let auth = if schemes.contains(&"bearer") {
        Auth::Bearer
    } else if schemes.contains(&"serviceToken") {
        Auth::ServiceToken
    } else {
        Auth::Public
    };
    let refusal = op["responses"]["403"]["description"].as_str().unwrap_or_default();
    Operation {
        method,
        template: template.to_owned(),
        params,
        auth,
        platform_only: refusal.starts_with("Platform admins only"),
        has_body: !op["requestBody"].is_null(),
    }
}

/// `(method, path)` of every route the router registers, read from its source.
pub fn registered() -> Vec<(Method, String)> {
    parse_router(include_str!("../../../api/src/http/mod.rs"))
}

/// Finds each `.route("path", get(..).post(..))` and the methods chained in it.
fn parse_router(source: &str) -> Vec<(Method, String)> {
    let mut routes = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(\"") {
        rest = &rest[at + ".route(\"".len()..];
        let Some(end) = rest.find('"') else { break };
        let path = rest[..end].to_owned();
        let args = &rest[end..];
        let args = &args[..[args.find(".route"), args.find(';')].into_iter().flatten().min().unwrap_or(args.len())];
        for (name, method) in [
            ("get", Method::GET),
            ("post", Method::POST),
            ("put", Method::PUT),
            ("patch", Method::PATCH),
            ("delete", Method::DELETE),
        ] {
            let called = args.match_indices(&format!("{name}(")).any(|(i, _)| {
                args[..i].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'))
            });
            if called {
                routes.push((method, path.clone()));
            }
        }
    }
    routes
}

/// Whether a registered route concerns a tenant: it has a path parameter, or sits under
/// `/tenants` or `/jobs`.
pub fn concerns_a_tenant(path: &str) -> bool {
    (path.starts_with("/api/v1/") || path.starts_with("/internal/"))
        && (path.contains('{') || path.contains("/tenants") || path.contains("/jobs"))
}

#[test]
fn the_router_source_parses() {
    let routes = parse_router(
        r#".route("/x/{id}", get(a::get).put(a::update).delete(b::delete))
           .route("/y", post(c::post_it))
           .route_layer(z);
           ops = ops.route("/z", patch(d::patch));"#,
    );
    let got: Vec<String> = routes.iter().map(|(m, p)| format!("{m} {p}")).collect();
    assert_eq!(got, ["GET /x/{id}", "PUT /x/{id}", "DELETE /x/{id}", "POST /y", "PATCH /z"]);
}
