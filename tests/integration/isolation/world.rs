//! The two tenants of the attack: A (the attacker's, on Enterprise so its rate limit never gets in
//! the way) and B (the victim, on Basic), both provisioned through the API by a real worker, each
//! with an invoice; and a third tenant of B's side, deleted by the saga, whose backup id the
//! attacker tries to restore. The worker is stopped before the attack: nothing but the attacker's
//! requests can change B afterwards.

use super::routes::{Names, Operation};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use tenant_api::http::auth::{Claims, TokenVerifier};
use tenant_domain::billing::period::Period;
use tenant_domain::billing::store::{self, LineKind, NewLine};
use tenant_domain::money::{Currency, Money};
use tenant_domain::{TenantId, db};
use tenant_tests::TestApp;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(60);

/// A bearer token and the user id (`sub`) inside it.
pub struct User {
    pub sub: String,
    pub token: String,
}

impl User {
    pub fn mint(app: &TestApp, sub: &str, role: &str, tenant: Option<&str>) -> User {
        let claims = Claims {
            sub: sub.to_owned(),
            tenant_id: tenant.map(|t| Uuid::parse_str(t).expect("tenant uuid")),
            roles: vec![role.to_owned()],
            exp: chrono::Utc::now().timestamp() + 3600,
        };
        User { sub: sub.to_owned(), token: TokenVerifier::new(&app.config).sign(&claims).expect("sign") }
    }
}

/// One tenant as its own users and the platform know it.
pub struct Side {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub domain: String,
    pub owner_id: String,
    pub owner_email: String,
    pub admin: User,
    pub member: User,
    /// Its provisioning job.
    pub job: String,
    pub invoice: String,
    pub invoice_number: String,
}

/// B's deleted sibling: what its backup holds is B's side's data.
pub struct Archived {
    pub id: String,
    pub slug: String,
    pub backup: String,
    pub jobs: Vec<String>,
}

pub struct World {
    pub app: TestApp,
    pub platform: User,
    pub a: Side,
    pub b: Side,
    pub archived: Archived,
}

impl World {
    pub async fn build() -> World {
        let app = TestApp::spawn().await;
        let worker = app.spawn_worker();
        let (a_id, a_job) = crate::lifecycle::create(&app, "attacker-alpha", "enterprise").await;
        let (b_id, b_job) = crate::lifecycle::create(&app, "victim-beta", "basic").await;
        let (gone_id, gone_job) = crate::lifecycle::create(&app, "victim-beta-archived", "basic").await;
        for job in [&a_job, &b_job, &gone_job] {
            let job = app.wait_job(job, DEADLINE).await;
            assert_eq!(job["status"], json!("succeeded"), "{job}");
        }
        let backup = crate::lifecycle::delete_and_wait(&app, &gone_id).await;
        let gone_jobs = job_ids(&app, &gone_id).await;
        assert_eq!(gone_jobs.len(), 2, "provisioning and deletion of the archived tenant");
        worker.stop().await.expect("worker stops");

        let platform = User::mint(&app, "platform-staff", "platform_admin", None);
        let a = side(&app, &platform, &a_id, a_job).await;
        let b = side(&app, &platform, &b_id, b_job).await;
        World {
            app,
            platform,
            a,
            b,
            archived: Archived { id: gone_id, slug: "victim-beta-archived".into(), backup, jobs: gone_jobs },
        }
    }

    /// The attackers: A's tenant admin and A's tenant member.
    pub fn attackers(&self) -> [(&'static str, &User); 2] {
        [("tenant_admin of A", &self.a.admin), ("tenant_member of A", &self.a.member)]
    }

    /// Every string that would betray B (or its archived sibling) in an answer to A.
    pub fn secrets_of_b(&self) -> Vec<String> {
        let b = &self.b;
        let mut secrets = vec![
            b.id.clone(),
            b.slug.clone(),
            b.name.clone(),
            b.domain.clone(),
            b.owner_id.clone(),
            b.owner_email.clone(),
            b.job.clone(),
            b.invoice.clone(),
            b.invoice_number.clone(),
            b.admin.sub.clone(),
            self.archived.id.clone(),
            self.archived.slug.clone(),
            self.archived.backup.clone(),
        ];
        secrets.extend(self.archived.jobs.iter().cloned());
        secrets
    }

    /// `op`'s path with its parameters naming B's things.
    pub fn path_to_b(&self, op: &Operation) -> String {
        op.path(|names| match names {
            Names::Tenant => self.b.id.clone(),
            Names::Job => self.b.job.clone(),
            Names::Invoice => self.b.invoice.clone(),
            Names::Plan => "basic".into(),
        })
    }

    /// `op`'s path with its parameters naming A's own things.
    pub fn path_to_a(&self, op: &Operation) -> String {
        op.path(|names| match names {
            Names::Tenant => self.a.id.clone(),
            Names::Job => self.a.job.clone(),
            Names::Invoice => self.a.invoice.clone(),
            Names::Plan => "enterprise".into(),
        })
    }

    /// A body that would do real harm to B if it got through (`{}` for an operation this table
    /// does not know yet: a new route is still attacked, and authorisation must come first).
    pub fn plausible_body(&self, op: &Operation) -> Value {
        match (op.method.as_str(), op.template.as_str()) {
            ("PUT", "/api/v1/tenants/{id}") => json!({ "name": "Renamed by A" }),
            ("PATCH", "/api/v1/tenants/{id}/status") => json!({ "status": "suspended", "reason": "by A" }),
            ("PUT", "/api/v1/tenants/{id}/quotas") => json!({ "limits": { "users": 1 } }),
            ("POST", "/api/v1/tenants/{id}/quotas/check" | "/internal/tenants/{id}/quota-check") => {
                json!({ "resource": "api_calls", "amount": 1, "consume": true })
            }
            ("POST", "/internal/tenants/{id}/usage") => json!({ "resource": "storage", "amount": 5 }),
            ("POST", "/internal/tenants/validate") => json!({ "tenantId": self.b.id }),
            ("PUT", "/api/v1/tenants/{id}/config") => json!({ "branding": { "companyName": "Set by A" } }),
            ("POST", "/api/v1/tenants/{id}/config/reset") => json!({ "categories": ["branding", "notifications"] }),
            ("PATCH", "/api/v1/tenants/{id}/features") => json!({ "customBranding": false }),
            ("POST", "/api/v1/tenants/{id}/billing/plans") => json!({ "planId": "pro", "interval": "month" }),
            ("POST", "/api/v1/tenants/{id}/payments") => json!({ "invoiceId": self.b.invoice, "amount": 100 }),
            ("POST", "/api/v1/tenants") => crate::lifecycle::create_body("made-by-a", "free"),
            ("POST", "/api/v1/tenants/restore") => json!({ "backupId": self.archived.backup }),
            ("POST", "/api/v1/plans") => json!({
                "name": "A's plan", "slug": "a-plan", "currency": "usd", "priceMonthly": 0, "priceYearly": 0,
                "apiRateLimit": 100000, "features": {}, "quotas": {},
            }),
            ("PUT", "/api/v1/plans/{id}") => json!({ "priceMonthly": 0 }),
            _ => json!({}),
        }
    }
}

async fn job_ids(app: &TestApp, tenant: &str) -> Vec<String> {
    sqlx::query_scalar("select id::text from jobs where tenant_id = $1 order by id")
        .bind(Uuid::parse_str(tenant).expect("uuid"))
        .fetch_all(&app.db)
        .await
        .expect("jobs")
}

async fn side(app: &TestApp, platform: &User, id: &str, job: String) -> Side {
    let (status, body) = app.get(&format!("/api/v1/tenants/{id}"), &platform.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = |field: &str| body["data"][field].as_str().expect(field).to_owned();
    let slug = text("slug");
    let (invoice, invoice_number) = issue_invoice(app, id).await;
    Side {
        id: id.to_owned(),
        name: text("name"),
        domain: text("domain"),
        owner_id: text("ownerId"),
        owner_email: text("ownerEmail"),
        admin: User::mint(app, &format!("{slug}-admin-{}", Uuid::new_v4().simple()), "tenant_admin", Some(id)),
        member: User::mint(app, &format!("{slug}-member-{}", Uuid::new_v4().simple()), "tenant_member", Some(id)),
        slug,
        job,
        invoice,
        invoice_number,
    }
}

/// An open invoice for last month (29.00 and whatever lines were pending), issued as the period
/// close issues one.
async fn issue_invoice(app: &TestApp, tenant: &str) -> (String, String) {
    let id = TenantId(Uuid::parse_str(tenant).expect("uuid"));
    let now = chrono::Utc::now();
    let period = Period { start: now - chrono::Duration::days(31), end: now - chrono::Duration::days(1) };
    let currency = Currency::parse("usd").expect("usd");
    let line = NewLine {
        kind: LineKind::Subscription,
        description: "Subscription (isolation suite)".into(),
        resource: None,
        quantity: 1,
        amount: Money::new(2900, currency),
        period,
        source_key: format!("isolation:{tenant}"),
    };
    let mut tx = db::begin_tenant(&app.db, id).await.expect("tenant transaction");
    let invoice = store::issue_invoice(&mut tx, currency, period, &[line]).await.expect("issued").expect("new");
    tx.commit().await.expect("commit");
    assert!(invoice.status == "open" && invoice.amount_due >= 2900, "{invoice:?}");
    (invoice.id.to_string(), invoice.number)
}
