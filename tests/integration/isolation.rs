//! The cross-tenant attack suite: the users of tenant A (its tenant admin and its tenant member)
//! attack tenant B through every route that names a tenant.
//!
//! Shape:
//! * [`world`] builds the victim and the attacker through the real API and a real worker — B with
//!   a provisioning job, an invoice and a deleted sibling whose backup A tries to restore — then
//!   stops the worker, so nothing but the attack can change B.
//! * [`routes`] reads the attack surface from the OpenAPI document the API serves (and checks it
//!   against the router's source): a route added later is attacked without editing this suite.
//!   Each operation's expected refusal follows from the document: 401 on service-token routes,
//!   403 `CROSS_TENANT_ACCESS_DENIED` on every route naming B (platform-only ones too), 403
//!   `FORBIDDEN` on the platform-only routes naming no tenant.
//! * [`probe`] sends each attack and judges the answer: status and code, and none of B's ids,
//!   slug, name, domain, owner, job, invoice or backup ids anywhere in headers or body.
//! * [`snapshot`] proves the rest: B (API reads and database rows) is unchanged afterwards, and
//!   every cross-tenant denial answered was counted once in `tenant_cross_tenant_denials_total`
//!   and audited once as `access.cross_tenant_denied` against B (or its archived sibling).
//!
//! The tests: the document covers the router; the direct attack by id and by slug with plausible
//! bodies; the same with malformed bodies (authorisation must come before parsing); indirect
//! references (B's jobs, invoices and backup reached through A's own paths and body fields); and
//! `Idempotency-Key` reuse, by A's users and by one user id holding tokens for both tenants.
//! Every probe's failure is collected, so one run lists every hole at once.

mod idempotency;
mod indirect;
mod probe;
mod routes;
mod snapshot;
mod world;

use probe::{Body, Ledger, MALFORMED, send};
use reqwest::Method;
use routes::{Auth, CROSS_TENANT, Expect, FORBIDDEN, Operation, UNAUTHORIZED};
use serde_json::{Value, json};
use snapshot::Denials;
use std::collections::BTreeSet;
use tenant_tests::TestApp;
use world::{User, World};

#[tokio::test]
async fn every_route_that_names_a_tenant_is_in_the_openapi_document() {
    let app = TestApp::spawn().await;
    let ops = routes::documented(&app).await;
    let documented: BTreeSet<String> = ops.iter().map(Operation::label).collect();
    for op in &ops {
        eprintln!("attack surface: {:<55} {:?}", op.label(), op.expect_for_other_tenant());
    }
    let registered = routes::registered();
    assert!(registered.len() >= 30, "the router's routes were read: {registered:?}");
    let missing: Vec<String> = registered
        .iter()
        .filter(|(_, path)| routes::concerns_a_tenant(path))
        .map(|(method, path)| format!("{method} {path}"))
        .filter(|label| !documented.contains(label))
        .collect();
    assert!(missing.is_empty(), "routes naming a tenant missing from the OpenAPI document: {missing:?}");
    let undocumented: Vec<String> = registered
        .iter()
        .map(|(method, path)| format!("{method} {path}"))
        .filter(|label| !documented.contains(label))
        .collect();
    eprintln!("registered but not documented (naming no tenant): {undocumented:?}");

    // The document says what the attack expects of the routes everyone knows.
    let expect = |label: &str| {
        ops.iter()
            .find(|op| op.label() == label)
            .unwrap_or_else(|| panic!("{label} documented"))
            .expect_for_other_tenant()
    };
    assert_eq!(expect("GET /api/v1/tenants/{id}"), CROSS_TENANT);
    assert_eq!(expect("PUT /api/v1/tenants/{id}/config"), CROSS_TENANT);
    assert_eq!(expect("GET /api/v1/jobs/{id}"), CROSS_TENANT);
    assert_eq!(expect("GET /api/v1/tenants/{id}/invoices/{invoice_id}"), CROSS_TENANT);
    assert_eq!(expect("DELETE /api/v1/tenants/{id}"), CROSS_TENANT);
    assert_eq!(expect("PATCH /api/v1/tenants/{id}/status"), CROSS_TENANT);
    assert_eq!(expect("POST /api/v1/plans"), FORBIDDEN);
    assert_eq!(expect("POST /internal/tenants/{id}/quota-check"), UNAUTHORIZED);
    assert_eq!(expect("GET /api/v1/plans"), Expect::Served);
}

#[tokio::test]
async fn tenant_users_of_a_are_refused_on_every_route_that_names_b() {
    let world = World::build().await;
    let ops = routes::documented(&world.app).await;
    let secrets = world.secrets_of_b();
    let mut ledger = Ledger::default();
    read_own_tenant(&world, &ops, &mut ledger).await;

    let before = snapshot::of_b(&world).await;
    let denials = Denials::read(&world).await;
    for op in &ops {
        let plausible = world.plausible_body(op);
        let body = || if op.has_body { Body::Json(&plausible) } else { Body::None };
        for (who, user) in world.attackers() {
            let reply = send(&world.app, op.method.clone(), &world.path_to_b(op), &user.token, body(), None).await;
            ledger.judge(&format!("{who}: {}{}", op.label(), on_b(op)), &reply, op.expect_for_other_tenant(), &secrets);
            if op.has_tenant_param() {
                by_slug(&world, op, user, body(), &format!("{who}: {} on B by slug", op.label()), &mut ledger).await;
            }
        }
    }
    // The list and its search show A's users only A.
    for (who, user) in world.attackers() {
        for query in ["", "?q=victim", "?q=beta", "?status=active&limit=100"] {
            let reply =
                send(&world.app, Method::GET, &format!("/api/v1/tenants{query}"), &user.token, Body::None, None).await;
            ledger.judge(&format!("{who}: GET /api/v1/tenants{query}"), &reply, Expect::Served, &secrets);
            let ids: Vec<Value> =
                reply.json()["data"].as_array().into_iter().flatten().map(|t| t["id"].clone()).collect();
            ledger.check(ids.iter().all(|id| *id == json!(world.a.id)), || format!("{who}: the list shows {ids:?}"));
        }
    }
    ledger.check(ledger.denials > 0, || "no cross-tenant denial at all".into());
    snapshot::conclude(&world, &mut ledger, &before, &denials, &[&world.a.admin.sub, &world.a.member.sub]).await;
}

/// The issue asks for authorisation before body parsing: a body that is not even JSON, sent by
/// A's users to a route naming B (or to a platform-only route), gets the same refusal as a
/// plausible one — never a 400 that tells the route exists and parses for them.
#[tokio::test]
async fn malformed_bodies_for_b_are_refused_before_they_are_parsed() {
    let world = World::build().await;
    let ops = routes::documented(&world.app).await;
    let secrets = world.secrets_of_b();
    let mut ledger = Ledger::default();
    let before = snapshot::of_b(&world).await;
    let denials = Denials::read(&world).await;
    let with_body = ops.iter().filter(|op| op.has_body && op.auth != Auth::Public);
    for op in with_body.filter(|op| op.names_tenant() || op.platform_only) {
        for (who, user) in world.attackers() {
            let path = world.path_to_b(op);
            let reply = send(&world.app, op.method.clone(), &path, &user.token, Body::Raw(MALFORMED), None).await;
            let what = format!("{who}: {}{}, malformed body", op.label(), on_b(op));
            ledger.judge(&what, &reply, op.expect_for_other_tenant(), &secrets);
        }
    }
    let probes = ledger.probes;
    ledger.check(probes >= 24, || format!("only {probes} probes: the document lost its request bodies?"));
    snapshot::conclude(&world, &mut ledger, &before, &denials, &[&world.a.admin.sub, &world.a.member.sub]).await;
}

/// The control: A's admin reads A through every readable route naming a tenant, and what it sees
/// of its own tenant holds nothing of B's either.
async fn read_own_tenant(world: &World, ops: &[Operation], ledger: &mut Ledger) {
    let secrets = world.secrets_of_b();
    let readable = ops
        .iter()
        .filter(|op| op.method == Method::GET && op.auth == Auth::Bearer && op.names_tenant() && !op.platform_only);
    for op in readable {
        let reply = send(&world.app, Method::GET, &world.path_to_a(op), &world.a.admin.token, Body::None, None).await;
        ledger.judge(&format!("tenant_admin of A: {} on A", op.label()), &reply, Expect::Served, &secrets);
    }
}

/// B's slug where its id belongs must be answered exactly as an unknown slug is (the value
/// echoed aside): nothing tells A that B exists.
async fn by_slug(world: &World, op: &Operation, user: &User, body: Body<'_>, what: &str, ledger: &mut Ledger) {
    let path = |slug: &str| world.path_to_b(op).replacen(&world.b.id, slug, 1);
    // The same shape as B's slug (the refusal may describe the value), naming no tenant.
    let unknown = format!("{}x", world.b.slug);
    let reply = send(&world.app, op.method.clone(), &path(&world.b.slug), &user.token, body, None).await;
    let control = send(&world.app, op.method.clone(), &path(&unknown), &user.token, body, None).await;
    let echoed = reply.text.replace(&world.b.slug, "<slug>");
    ledger.check(reply.status.is_client_error(), || format!("{what}: got {}, expected a refusal", reply.summary()));
    // On a bearer route naming a tenant, both are cross-tenant attempts: counted and audited (the
    // unknown slug without a tenant).
    if op.names_tenant() && matches!(op.auth, Auth::Bearer) {
        let counted = ledger.count(&reply) & ledger.count(&control);
        ledger.check(counted, || {
            format!(
                "{what}: got {} (unknown slug {}), expected 403 CROSS_TENANT_ACCESS_DENIED",
                reply.summary(),
                control.summary()
            )
        });
        ledger.anonymous_denials += 1;
    }
    ledger.check(reply.status == control.status && echoed == control.text.replace(&unknown, "<slug>"), || {
        format!(
            "{what}: answered {} `{}`, an unknown slug {} `{}`",
            reply.summary(),
            reply.text,
            control.summary(),
            control.text
        )
    });
    let secrets: Vec<String> = world.secrets_of_b().into_iter().filter(|s| *s != world.b.slug).collect();
    ledger.no_leak(what, &probe::Reply { text: echoed, ..reply }, &secrets);
}

/// How a probe names its target in a failure.
fn on_b(op: &Operation) -> &'static str {
    if op.names_tenant() { " on B's id" } else { "" }
}
