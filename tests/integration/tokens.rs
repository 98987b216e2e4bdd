//! Bearer tokens from an identity provider (RS256 with a configured public key, ES256 from a
//! JWKS with rotation and a fetch rate limit), forged tokens, and named service tokens. Keys are
//! made at test time; the JWKS comes from a local peer that counts its fetches.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use tenant_domain::TenantStatus;
use tenant_tests::TestApp;
use tenant_tests::jwks_peer::JwksPeer;
use tenant_tests::jwt_keys::{SigningKey, raw_token};
use uuid::Uuid;

const ISSUER: &str = "https://idp.example.test/";
const AUDIENCE: &str = "tenant-service";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A platform admin's claims from the identity provider, valid for ten minutes.
fn claims() -> Value {
    json!({
        "sub": format!("idp-user-{}", Uuid::new_v4().simple()),
        "roles": ["platform_admin"],
        "iss": ISSUER,
        "aud": [AUDIENCE, "some-other-api"],
        "iat": now(),
        "exp": now() + 600,
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// `GET /api/v1/tenants` with `token`: the status, and the body.
async fn list(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.get("/api/v1/tenants", token).await
}

/// Each token is refused: 401 `UNAUTHORIZED` in the error envelope.
async fn assert_refused(app: &TestApp, cases: &[(&str, String)]) {
    for (what, token) in cases {
        let (status, body) = list(app, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["success"], json!(false), "{what}: {body}");
        assert_eq!(body["error"]["code"], json!("UNAUTHORIZED"), "{what}: {body}");
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
    }
}

#[tokio::test]
async fn rs256_with_a_configured_public_key_is_accepted_and_forgeries_are_refused() {
    let idp = SigningKey::rsa();
    let stranger = SigningKey::rsa();
    let app = TestApp::spawn_with(|env| {
        env.insert("JWT_PUBLIC_KEY".into(), idp.public_pem.clone());
        env.insert("JWT_ISSUER".into(), ISSUER.into());
        env.insert("JWT_AUDIENCE".into(), format!("{AUDIENCE},admin-console"));
    })
    .await;

    let (status, body) = list(&app, &idp.sign(None, &claims())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // a `kid` the service has no JWKS for still verifies with the configured key
    assert_eq!(list(&app, &idp.sign(Some("idp-2024"), &claims())).await.0, StatusCode::OK);
    // HS256 stays enabled beside the public key; dev tokens carry the configured iss and aud
    assert_eq!(list(&app, &app.admin_token()).await.0, StatusCode::OK);

    let good = idp.sign(None, &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let hs256 = |secret: &[u8], claims: &Value| {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).expect("signed")
    };
    let tampered = {
        let forged = URL_SAFE_NO_PAD.encode(with(claims(), "sub", json!("someone-else")).to_string());
        format!("{}.{forged}.{}", parts[0], parts[2])
    };
    let rs384 = Header::new(Algorithm::RS384);
    let without = |key: &str| {
        let mut c = claims();
        c.as_object_mut().expect("object").remove(key);
        c
    };
    assert_refused(
        &app,
        &[
            ("alg none, no signature", raw_token(&json!({ "alg": "none", "typ": "JWT" }), &claims(), b"")),
            ("alg none, the RS256 signature kept", {
                let none = URL_SAFE_NO_PAD.encode(json!({ "alg": "none" }).to_string());
                format!("{none}.{}.{}", parts[1], parts[2])
            }),
            ("alg None", raw_token(&json!({ "alg": "None" }), &claims(), b"")),
            ("HS256 keyed with the RSA public key's PEM (key confusion)", hs256(idp.public_pem.as_bytes(), &claims())),
            ("HS256 keyed with the PEM, trimmed", hs256(idp.public_pem.trim().as_bytes(), &claims())),
            ("RS384 signed by the configured key (alg not pinned)", idp.sign_with_header(&rs384, &claims())),
            ("expired", idp.sign(None, &with(claims(), "exp", json!(now() - 3600)))),
            ("not yet valid", idp.sign(None, &with(claims(), "nbf", json!(now() + 3600)))),
            ("wrong issuer", idp.sign(None, &with(claims(), "iss", json!("https://evil.example.test/")))),
            ("no issuer", idp.sign(None, &without("iss"))),
            ("wrong audience", idp.sign(None, &with(claims(), "aud", json!("another-service")))),
            ("no audience", idp.sign(None, &without("aud"))),
            ("no exp", idp.sign(None, &without("exp"))),
            ("signed by a different key", stranger.sign(None, &claims())),
            ("payload changed after signing", tampered),
            ("garbage", "not-a-token".into()),
            ("two segments", format!("{}.{}", parts[0], parts[1])),
            ("four segments", format!("{good}.{}", parts[2])),
            ("bad base64", "!!!.@@@.###".into()),
            ("header is a JSON array", raw_token(&json!(["RS256"]), &claims(), b"sig")),
            ("header is a JSON string", raw_token(&json!("RS256"), &claims(), b"sig")),
            ("header is not JSON", format!("{}.{}.{}", URL_SAFE_NO_PAD.encode("{alg"), parts[1], parts[2])),
            ("claims are not JSON", format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode("nope"), parts[2])),
            ("empty", String::new()),
        ],
    )
    .await;
}

#[tokio::test]
async fn es256_keys_come_from_the_jwks_rotate_on_an_unknown_kid_and_never_verify_hs256() {
    let (first, second, stranger) = (SigningKey::ec_p256(), SigningKey::ec_p256(), SigningKey::ec_p256());
    // A symmetric key in the set must never make an HS256 token acceptable.
    let oct = json!({ "kty": "oct", "kid": "shared", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode("jwks-oct-secret") });
    let peer = JwksPeer::start(vec![first.jwk("k1"), oct]).await.expect("jwks peer");
    let app = TestApp::spawn_with(|env| {
        env.insert("JWT_JWKS_URL".into(), peer.url());
        env.insert("JWT_JWKS_MIN_REFRESH_SECS".into(), "1".into());
        env.insert("JWT_HS256_ENABLED".into(), "false".into());
        env.insert("JWT_ISSUER".into(), ISSUER.into());
        env.insert("JWT_AUDIENCE".into(), AUDIENCE.into());
    })
    .await;
    assert!(peer.fetches().is_empty(), "nothing is fetched before a token needs it");

    let (status, body) = list(&app, &first.sign(Some("k1"), &claims())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(list(&app, &first.sign(Some("k1"), &claims())).await.0, StatusCode::OK);
    assert_eq!(list(&app, &first.sign(None, &claims())).await.0, StatusCode::OK, "no kid: every ES256 key is tried");
    assert_eq!(peer.fetches().len(), 1, "the set is cached");

    let mut hs_shared = Header::new(Algorithm::HS256);
    hs_shared.kid = Some("shared".into());
    let hs_with_oct =
        jsonwebtoken::encode(&hs_shared, &claims(), &EncodingKey::from_secret(b"jwks-oct-secret")).expect("signed");
    assert_refused(
        &app,
        &[
            ("HS256 while JWT_HS256_ENABLED=false", app.admin_token()),
            ("HS256 with the JWKS's symmetric key", hs_with_oct),
            ("kid k1, signed by another key", stranger.sign(Some("k1"), &claims())),
            ("kid k1, wrong issuer", first.sign(Some("k1"), &with(claims(), "iss", json!("https://evil.test/")))),
        ],
    )
    .await;
    assert_eq!(peer.fetches().len(), 1, "known kids never refetch");

    // Rotation: the provider publishes k2; the first token naming it fetches the set once more
    // (after the 1 s minimum interval) and is accepted.
    peer.set_keys(vec![first.jwk("k1"), second.jwk_without_alg("k2")]);
    tokio::time::sleep_until((peer.fetches()[0] + Duration::from_millis(1100)).into()).await;
    let (status, body) = list(&app, &second.sign(Some("k2"), &claims())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(list(&app, &second.sign(Some("k2"), &claims())).await.0, StatusCode::OK);
    assert_eq!(list(&app, &first.sign(Some("k1"), &claims())).await.0, StatusCode::OK);
    assert_eq!(peer.fetches().len(), 2, "one refresh for the new kid");

    // The provider fails: an unknown kid costs one (failed) fetch, and the cached keys still work.
    peer.set_failing(true);
    tokio::time::sleep_until((peer.fetches()[1] + Duration::from_millis(1100)).into()).await;
    assert_refused(&app, &[("unknown kid while the provider fails", stranger.sign(Some("k3"), &claims()))]).await;
    assert_eq!(peer.fetches().len(), 3);
    assert_eq!(list(&app, &first.sign(Some("k1"), &claims())).await.0, StatusCode::OK);
    assert_eq!(list(&app, &second.sign(Some("k2"), &claims())).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_jwks_at_most_once_per_interval() {
    let key = SigningKey::ec_p256();
    let peer = JwksPeer::start(vec![key.jwk("k1")]).await.expect("jwks peer");
    let app = TestApp::spawn_with(|env| {
        env.insert("JWT_JWKS_URL".into(), peer.url());
        env.insert("JWT_AUDIENCE".into(), AUDIENCE.into());
    })
    .await;

    // 200 tokens, 50 at a time, each naming a kid nobody published (signed by a real key).
    let flood: Vec<String> =
        (0..200).map(|i| key.sign(Some(&format!("garbage-{i}-{}", Uuid::new_v4().simple())), &claims())).collect();
    for batch in flood.chunks(50) {
        let answers = futures::future::join_all(batch.iter().map(|token| list(&app, token))).await;
        for (status, body) in answers {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
            assert_eq!(body["error"]["code"], json!("UNAUTHORIZED"));
        }
    }
    // The first unknown kid fetched the set (nothing was cached); the default interval is 30 s.
    assert_eq!(peer.fetches().len(), 1, "one fetch, not one per token");
    assert_eq!(list(&app, &key.sign(Some("k1"), &claims())).await.0, StatusCode::OK);
    assert_eq!(peer.fetches().len(), 1);
}

#[tokio::test]
async fn a_service_is_named_by_its_token_not_by_the_header_it_sends() {
    let (billing, search) = (format!("billing-{}", Uuid::new_v4()), format!("search-{}", Uuid::new_v4()));
    let app = TestApp::spawn_with(|env| {
        env.insert("SERVICE_TOKENS".into(), format!("billing:{billing},search:{search}"));
    })
    .await;
    let t = app.insert_tenant("Named", "named", "basic", TenantStatus::Active).await;
    let dir = std::path::PathBuf::from(tenant_tests::scratch_dir("tokens"));
    let log = dir.join("api.log");
    // `validate` is a hot route: its access line and span are at debug level.
    let (_api, base) = crate::logs::start_api_process(&app, &[("RUST_LOG", "debug".into())], &log).await;

    let call = |token: &str, claimed: Option<&str>, request_id: &str| {
        let mut req = app
            .client
            .post(format!("{base}/internal/tenants/validate"))
            .header("x-service-token", token)
            .header("x-request-id", request_id)
            .json(&json!({ "tenantId": t.id }));
        if let Some(name) = claimed {
            req = req.header("x-service-name", name);
        }
        req.send()
    };
    for (token, claimed, id) in [
        (&billing, Some("admin"), "req-billing-as-admin"),
        (&billing, None, "req-billing"),
        (&search, Some("billing"), "req-search-as-billing"),
    ] {
        let res = call(token, claimed, id).await.expect("sent");
        assert_eq!(res.status(), StatusCode::OK, "{id}");
    }
    let res = call("wrong-token-0123456789", Some("billing"), "req-wrong").await.expect("sent");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    for (id, expected) in [
        ("req-billing-as-admin", Some("billing")),
        ("req-billing", Some("billing")),
        ("req-search-as-billing", Some("search")),
        ("req-wrong", None),
    ] {
        let line = request_line(&log, id).await;
        assert_eq!(line["span"]["service"].as_str(), expected, "{line}");
    }
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains(&billing) && !text.contains(&search), "a service token reached the log");
}

/// The `request` log line of the request with this id (waiting for it a little).
async fn request_line(log: &std::path::Path, request_id: &str) -> Value {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let lines = crate::logs::lines_with(log, request_id);
        if let Some(line) = lines.into_iter().find(|l| l["message"] == json!("request")) {
            return line;
        }
        assert!(std::time::Instant::now() < until, "no request line for {request_id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
