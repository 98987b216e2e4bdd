//! Indirect references: B's job, invoice and backup ids, and body fields naming B, reached
//! through routes that name no tenant or name A's own.

use super::probe::{Body, Ledger, send};
use super::routes::{self, Auth, CROSS_TENANT, Expect, FORBIDDEN};
use super::snapshot::{self, Denials};
use super::world::World;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

const INVOICE_NOT_FOUND: Expect = Expect::Refused(StatusCode::NOT_FOUND, "INVOICE_NOT_FOUND");

#[tokio::test]
async fn b_is_out_of_reach_through_job_invoice_and_backup_ids_and_body_fields() {
    let world = World::build().await;
    let ops = routes::documented(&world.app).await;
    let (app, a, b) = (&world.app, &world.a, &world.b);
    let secrets = world.secrets_of_b();
    let mut ledger = Ledger::default();
    let before = snapshot::of_b(&world).await;
    let denials = Denials::read(&world).await;

    for (who, user) in world.attackers() {
        // B's jobs, and its archived sibling's, by id: another tenant's.
        for job in std::iter::once(&b.job).chain(&world.archived.jobs) {
            for tail in ["", "/events"] {
                let reply =
                    send(app, Method::GET, &format!("/api/v1/jobs/{job}{tail}"), &user.token, Body::None, None).await;
                ledger.judge(&format!("{who}: GET /api/v1/jobs/{{B's job}}{tail}"), &reply, CROSS_TENANT, &secrets);
            }
        }

        // B's invoice under A's own path: not found, word for word as an invoice that never was.
        let path = |invoice: &str| format!("/api/v1/tenants/{}/invoices/{invoice}", a.id);
        let reply = send(app, Method::GET, &path(&b.invoice), &user.token, Body::None, None).await;
        ledger.judge(&format!("{who}: A's invoice path with B's invoice"), &reply, INVOICE_NOT_FOUND, &secrets);
        let unknown = Uuid::now_v7().to_string();
        let control = send(app, Method::GET, &path(&unknown), &user.token, Body::None, None).await;
        ledger.check(reply.text.replace(&b.invoice, "<id>") == control.text.replace(&unknown, "<id>"), || {
            format!("{who}: B's invoice answered `{}`, an unknown one `{}`", reply.text, control.text)
        });

        // Paying B's invoice through A's payments, with and without an Idempotency-Key.
        let pay = json!({ "invoiceId": b.invoice, "amount": 100 });
        let expect = if user.sub == a.admin.sub { INVOICE_NOT_FOUND } else { FORBIDDEN };
        for key in [None, Some(format!("iso-pay-{}", Uuid::new_v4()))] {
            let path = format!("/api/v1/tenants/{}/payments", a.id);
            let reply = send(app, Method::POST, &path, &user.token, Body::Json(&pay), key.as_deref()).await;
            ledger.judge(&format!("{who}: A's payments with B's invoiceId (key {key:?})"), &reply, expect, &secrets);
        }

        // Restoring B's side's backup: a platform action.
        let restore = json!({ "backupId": world.archived.backup });
        let reply = send(app, Method::POST, "/api/v1/tenants/restore", &user.token, Body::Json(&restore), None).await;
        ledger.judge(&format!("{who}: restore of B's side's backup"), &reply, FORBIDDEN, &secrets);

        // A's tenant taking B's slug or domain: refused (slugs are immutable, domains unique),
        // without a word about whose they are.
        for field in [json!({ "slug": b.slug }), json!({ "domain": b.domain })] {
            let path = format!("/api/v1/tenants/{}", a.id);
            let reply = send(app, Method::PUT, &path, &user.token, Body::Json(&field), None).await;
            ledger.judge(&format!("{who}: PUT A with {field}"), &reply, Expect::Anything, &secrets);
            ledger.check(reply.status.is_client_error(), || format!("{who}: PUT A with {field}: {}", reply.summary()));
        }

        // Body fields naming B on every route of A's own that takes a body: nothing moves to B.
        let own_writes = ops
            .iter()
            .filter(|op| op.has_body && op.auth == Auth::Bearer && op.has_tenant_param() && !op.platform_only);
        for op in own_writes {
            let mut body = world.plausible_body(op);
            if body.get("invoiceId").is_some() {
                body["invoiceId"] = json!(a.invoice);
            }
            body["tenantId"] = json!(b.id);
            body["id"] = json!(b.id);
            let reply = send(app, op.method.clone(), &world.path_to_a(op), &user.token, Body::Json(&body), None).await;
            ledger.judge(
                &format!("{who}: {} on A naming B in its body", op.label()),
                &reply,
                Expect::Anything,
                &secrets,
            );
        }
    }

    let paid: i64 = sqlx::query_scalar("select count(*) from payments where invoice_id::text = $1")
        .bind(&b.invoice)
        .fetch_one(&app.db)
        .await
        .expect("payments");
    ledger.check(paid == 0, || format!("{paid} payments recorded against B's invoice"));
    let restores: i64 = sqlx::query_scalar("select count(*) from jobs where kind = 'restore_tenant'")
        .fetch_one(&app.db)
        .await
        .expect("jobs");
    ledger.check(restores == 0, || format!("{restores} restore jobs created"));
    snapshot::conclude(&world, &mut ledger, &before, &denials, &[&a.admin.sub, &a.member.sub]).await;
}
