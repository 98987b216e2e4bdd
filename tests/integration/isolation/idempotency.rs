//! `Idempotency-Key` reuse: B's admin stores two answers under keys (a configuration change and a
//! plan-change preview); attackers send the same keys with the same bodies, on A's paths and on
//! B's. None of them may receive B's stored answer; B's own repeats must still get it, untouched.
//!
//! Keys are scoped by user, and one user's second use of a key for another request is its own
//! 422, so each attacker uses each key once. The second test is the awkward case: a token for A
//! carrying B's admin's user id (`sub` and `tenant_id` are independent claims, so one person may
//! hold tokens for two tenants).

use super::probe::{Body, Ledger, send};
use super::routes::{CROSS_TENANT, Expect};
use super::snapshot::{self, Denials};
use super::world::{User, World};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test]
async fn idempotency_keys_never_hand_b_answers_to_a() {
    let world = World::build().await;
    let other_admin = User::mint(&world.app, &format!("{}-admin-2", world.a.slug), "tenant_admin", Some(&world.a.id));
    let attacks = [
        // On A's path the key is A's to use: A's admin gets its own, fresh answer.
        Attack { who: "tenant_admin of A", user: &world.a.admin, on_b: false, expect: Expect::Served },
        Attack { who: "another tenant_admin of A", user: &other_admin, on_b: true, expect: CROSS_TENANT },
        Attack { who: "tenant_member of A", user: &world.a.member, on_b: true, expect: CROSS_TENANT },
    ];
    run(&world, &attacks).await;
}

#[tokio::test]
async fn a_user_id_with_tokens_for_two_tenants_gets_no_replay_of_b_through_a() {
    let world = World::build().await;
    let twin = User::mint(&world.app, &world.b.admin.sub, "tenant_admin", Some(&world.a.id));
    let who = "B's admin's user id with a tenant_admin token for A";
    let attacks = [
        // The key is taken by this user id already: anything but B's answer will do.
        Attack { who, user: &twin, on_b: false, expect: Expect::Anything },
        Attack { who, user: &twin, on_b: true, expect: CROSS_TENANT },
    ];
    run(&world, &attacks).await;
}

struct Attack<'a> {
    who: &'a str,
    user: &'a User,
    /// On B's path (else A's).
    on_b: bool,
    expect: Expect,
}

/// A request B's admin made with a key, and the answer stored for it.
struct Keyed {
    method: Method,
    on_b: String,
    on_a: String,
    body: Value,
    key: String,
    answer: Value,
}

/// B's admin makes B's configuration name B's owner (so any stored answer about it betrays B),
/// then stores a configuration change and a plan-change preview under fresh keys.
async fn keyed_answers_of_b(world: &World) -> Vec<Keyed> {
    let (app, a, b) = (&world.app, &world.a, &world.b);
    let alert = json!({ "notifications": { "alertEmail": b.owner_email } });
    let config = |tenant: &str| format!("/api/v1/tenants/{tenant}/config");
    let reply = send(app, Method::PUT, &config(&b.id), &b.admin.token, Body::Json(&alert), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let preview = |tenant: &str| format!("/api/v1/tenants/{tenant}/billing/plans?preview=true");
    let requests = [
        (Method::PUT, config(&b.id), config(&a.id), json!({ "branding": { "companyName": "Same Body Inc" } })),
        (Method::POST, preview(&b.id), preview(&a.id), json!({ "planId": "pro", "interval": "month" })),
    ];
    let mut keyed = Vec::new();
    for (method, on_b, on_a, body) in requests {
        let key = format!("iso-{}", Uuid::new_v4());
        let reply = send(app, method.clone(), &on_b, &b.admin.token, Body::Json(&body), Some(&key)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        keyed.push(Keyed { method, on_b, on_a, body, key, answer: reply.json() });
    }
    assert!(keyed[0].answer.to_string().contains(&b.owner_email), "B's stored answer names B: {}", keyed[0].answer);
    keyed
}

async fn run(world: &World, attacks: &[Attack<'_>]) {
    let keyed = keyed_answers_of_b(world).await;
    let secrets = world.secrets_of_b();
    let before = snapshot::of_b(world).await;
    let denials = Denials::read(world).await;
    let mut ledger = Ledger::default();
    for k in &keyed {
        for attack in attacks {
            let path = if attack.on_b { &k.on_b } else { &k.on_a };
            let reply =
                send(&world.app, k.method.clone(), path, &attack.user.token, Body::Json(&k.body), Some(&k.key)).await;
            let what = format!("{}: {} {path} with B's Idempotency-Key", attack.who, k.method);
            ledger.judge(&what, &reply, attack.expect, &secrets);
            ledger.check(!reply.replayed() && reply.json() != k.answer, || {
                format!("{what}: received B's stored answer ({}, replayed: {})", reply.summary(), reply.replayed())
            });
        }
        // B's admin still gets B's own answer, replayed and unchanged.
        let again =
            send(&world.app, k.method.clone(), &k.on_b, &world.b.admin.token, Body::Json(&k.body), Some(&k.key)).await;
        ledger.check(again.replayed() && again.status == StatusCode::OK && again.json() == k.answer, || {
            format!(
                "B's admin repeating {} {}: got {} `{}`, first `{}`",
                k.method,
                k.on_b,
                again.summary(),
                again.text,
                k.answer
            )
        });
    }
    let attackers: Vec<&str> = attacks.iter().map(|a| a.user.sub.as_str()).collect();
    snapshot::conclude(world, &mut ledger, &before, &denials, &attackers).await;
}
