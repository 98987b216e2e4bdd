//! Following one job through the JSON logs: the API process logs the enqueue (in its request's
//! span, with the request id), the worker process logs every step of the job in a span carrying
//! the job id, so one `grep` of the job id follows a provisioning from the request to `active`.

use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tenant_tests::TestApp;
use tokio::process::{Child, Command};

const API: &str = env!("CARGO_BIN_EXE_api-under-test");
const WORKER: &str = env!("CARGO_BIN_EXE_worker-under-test");

pub(crate) fn spawn_logged(
    app: &TestApp,
    exe: &str,
    args: &[&str],
    extra: &[(&str, String)],
    log: &std::path::Path,
) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    Command::new(exe)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&app.env)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        // The log goes to stdout; errors at start to stderr.
        .stdout(Stdio::from(file.try_clone().expect("log file")))
        .stderr(Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .expect("process starts")
}

/// A real API process for `app` (its environment plus `extra`), logging JSON to `log`; answers
/// the process and its base URL once it answers `/livez`.
pub(crate) async fn start_api_process(
    app: &TestApp,
    extra: &[(&str, String)],
    log: &std::path::Path,
) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let mut env = vec![("SERVICE_HOST", "127.0.0.1".to_owned()), ("SERVICE_PORT", port.to_string())];
    env.extend(extra.iter().cloned());
    let api = spawn_logged(app, API, &["serve"], &env, log);
    let base = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(20);
    while app.client.get(format!("{base}/livez")).send().await.is_err() {
        assert!(
            Instant::now() < until,
            "API process did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    (api, base)
}

/// The log's JSON lines that mention `needle` anywhere.
pub(crate) fn lines_with(log: &std::path::Path, needle: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn one_provisioning_is_followed_by_its_job_id_across_api_and_worker_logs() {
    let app = TestApp::spawn().await;
    let dir = std::path::PathBuf::from(tenant_tests::scratch_dir("logs"));
    let (api_log, worker_log) = (dir.join("api.log"), dir.join("worker.log"));
    let (_api, base) = start_api_process(&app, &[], &api_log).await;
    let _worker = spawn_logged(&app, WORKER, &[], &[], &worker_log);
    let res = app
        .client
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(app.admin_token())
        .header("x-request-id", "req-follow-me")
        .json(&crate::lifecycle::create_body("followed", "basic"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
    let body: Value = res.json().await.expect("json");
    let (job, tenant) =
        (body["data"]["job"]["id"].as_str().expect("job"), body["data"]["tenant"]["id"].as_str().expect("tenant"));
    assert_eq!(app.wait_job(job, Duration::from_secs(30)).await["status"], json!("succeeded"));

    // The API: the enqueue, with the job, the tenant and the request it came from.
    let enqueued = lines_with(&api_log, job);
    let line = enqueued.iter().find(|l| l["message"] == json!("job enqueued")).expect("an enqueue line");
    assert_eq!((line["tenant_id"].as_str(), line["kind"].as_str()), (Some(tenant), Some("provision_tenant")), "{line}");
    assert_eq!(line["span"]["request_id"], json!("req-follow-me"), "{line}");

    // A request about the tenant carries its id, once authorized.
    let res = app
        .client
        .get(format!("{base}/api/v1/tenants/{tenant}/jobs"))
        .bearer_auth(app.admin_token())
        .header("x-request-id", "req-tenant-jobs")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let until = Instant::now() + Duration::from_secs(5);
    let request = loop {
        let lines = lines_with(&api_log, "req-tenant-jobs");
        if let Some(line) = lines.into_iter().find(|l| l["message"] == json!("request")) {
            break line;
        }
        assert!(Instant::now() < until, "no request line for req-tenant-jobs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(request["span"]["tenant_id"].as_str(), Some(tenant), "{request}");

    // The worker: every step started and succeeded in the job's span, then the job.
    let until = Instant::now() + Duration::from_secs(5);
    let worker_lines = loop {
        let lines = lines_with(&worker_log, job);
        if lines.iter().any(|l| l["message"] == json!("job succeeded")) || Instant::now() > until {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for line in &worker_lines {
        assert_eq!(line["span"]["job_id"].as_str(), Some(job), "{line}");
        assert_eq!(line["span"]["tenant_id"].as_str(), Some(tenant), "{line}");
    }
    let steps = |message: &str| -> Vec<String> {
        worker_lines
            .iter()
            .filter(|l| l["message"] == json!(message))
            .filter_map(|l| l["step"].as_str().map(str::to_owned))
            .collect()
    };
    let all = ["create_schema", "default_config", "quotas", "billing_account", "welcome_email", "activate"];
    assert_eq!(steps("step started"), all, "{worker_lines:?}");
    assert_eq!(steps("step succeeded"), all);
    assert!(worker_lines.iter().any(|l| l["message"] == json!("job succeeded")));
}

/// Secrets never reach a log line, even at `debug`: a service token, JWTs (good and forged), the
/// JWT secret, a Stripe key, the encryption keys and a secret tenant configuration value, each
/// carried by requests to a real API process and used by a real worker process.
#[tokio::test]
async fn no_secret_reaches_the_api_or_worker_log_even_at_debug() {
    let random = || uuid::Uuid::new_v4().simple().to_string();
    let service_token = format!("svc-{}", random());
    let stripe_key = format!("sk_test_{}", random());
    let config_secret = format!("cfg-secret-{}", random());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    // Events go to an audit peer, so the worker sends the service token too.
    let audit = tenant_tests::http_peer::HttpPeer::start(vec![200]).await.expect("audit peer");
    let app = TestApp::spawn_with(|env| {
        env.insert("SERVICE_TOKENS".into(), format!("billing:{service_token}"));
        env.insert("STRIPE_SECRET_KEY".into(), stripe_key.clone());
        env.insert("STRIPE_API_BASE".into(), format!("http://127.0.0.1:{closed}"));
        env.insert("AUDIT_SERVICE_URL".into(), audit.url("/audit"));
        env.insert("JOB_MAX_ATTEMPTS".into(), "2".into());
    })
    .await;
    let dir = std::path::PathBuf::from(tenant_tests::scratch_dir("logs"));
    let (api_log, worker_log) = (dir.join("api.log"), dir.join("worker.log"));
    let debug = [("RUST_LOG", "debug".to_owned())];
    let (_api, base) = start_api_process(&app, &debug, &api_log).await;
    let _worker = spawn_logged(&app, WORKER, &[], &debug, &worker_log);
    let client = &app.client;
    let jwt = app.admin_token();
    let forged = format!("{}{}", &jwt[..jwt.len() - 4], if jwt.ends_with("AAAA") { "BBBB" } else { "AAAA" });
    let wrong_service_token = format!("wrong-{}", random());

    // A secret configuration value, set through the API.
    let t = app.insert_tenant("Quiet", "quiet", "pro", tenant_domain::TenantStatus::Active).await;
    app.insert_quotas_from_plan(&t).await;
    let res = client
        .put(format!("{base}/api/v1/tenants/{}/config", t.id))
        .bearer_auth(&jwt)
        .json(&json!({ "integrations": { "slack": { "enabled": true, "apiKey": config_secret } } }))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), reqwest::StatusCode::OK, "{}", res.text().await.unwrap_or_default());
    // Service calls, one with a wrong token; a forged JWT; a provisioning whose Stripe calls fail.
    let internal = |token: &str| {
        client.get(format!("{base}/internal/tenants/{}/context", t.id)).header("x-service-token", token).send()
    };
    assert_eq!(internal(&service_token).await.expect("sent").status(), reqwest::StatusCode::OK);
    assert_eq!(internal(&wrong_service_token).await.expect("sent").status(), reqwest::StatusCode::UNAUTHORIZED);
    let res = client.get(format!("{base}/api/v1/tenants")).bearer_auth(&forged).send().await.expect("sent");
    assert_eq!(res.status(), reqwest::StatusCode::UNAUTHORIZED);
    let res = client
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(&jwt)
        .json(&crate::lifecycle::create_body("quiet-stripe", "basic"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
    let body: Value = res.json().await.expect("json");
    let job = app.wait_job(body["data"]["job"]["id"].as_str().expect("job"), Duration::from_secs(60)).await;
    assert_ne!(job["status"], json!("succeeded"), "Stripe is unreachable: {job}");
    let res = client.get(format!("{base}/health")).send().await.expect("sent");
    assert!(res.status().is_success() || res.status().is_server_error());
    let until = Instant::now() + Duration::from_secs(20);
    while !audit.received().iter().any(|r| r.body.contains("tenant.config.updated")) {
        assert!(Instant::now() < until, "the worker delivered no config event to the audit peer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = audit.received();
    assert!(delivered.iter().any(|r| r.headers.get("x-service-token") == Some(&service_token)));
    assert!(delivered.iter().all(|r| !r.body.contains(&config_secret)));

    let logs = [
        ("api", std::fs::read_to_string(&api_log).expect("api log")),
        ("worker", std::fs::read_to_string(&worker_log).expect("worker log")),
    ];
    // The logs saw all this, at debug…
    let (api, worker) = (&logs[0].1, &logs[1].1);
    assert!(api.lines().count() > 20 && worker.lines().count() > 20, "api:\n{api}\nworker:\n{worker}");
    assert!(api.contains("\"status\":401") && api.contains("DEBUG"), "{api}");
    assert!(worker.contains("billing_account") && worker.contains("DEBUG"), "{worker}");
    // …and not one secret.
    let jwt_secret = app.env["JWT_SECRET"].clone();
    let secrets: &[(&str, &str)] = &[
        ("service token", service_token.as_str()),
        ("wrong service token", &wrong_service_token),
        ("JWT", &jwt),
        ("forged JWT", &forged),
        ("JWT signature", jwt.rsplit('.').next().expect("signature")),
        ("JWT secret", &jwt_secret),
        ("Stripe key", &stripe_key),
        ("Stripe key without its prefix", &stripe_key["sk_test_".len()..]),
        ("secret config value", &config_secret),
        ("config encryption key", &app.env["CONFIG_ENCRYPTION_KEY"]),
        ("backup encryption key", &app.env["BACKUP_ENCRYPTION_KEY"]),
    ];
    for (process, text) in &logs {
        for &(what, secret) in secrets {
            if let Some(line) = text.lines().find(|l| l.contains(secret)) {
                panic!("the {what} is in the {process} log: {line}");
            }
        }
    }
}

/// At Compose's settings (`RUST_LOG=info`, JSON), the hot internal routes write no access line,
/// the public API still does, and a hot request slower than `HTTP_SLOW_REQUEST_MS` is logged.
#[tokio::test]
async fn hot_routes_cost_no_log_line_at_the_default_level_but_slow_ones_are_logged() {
    use tenant_domain::TenantStatus;
    let app = TestApp::spawn().await;
    let tenant = app.insert_tenant("Hot Path", "hot-path", "pro", TenantStatus::Active).await;
    app.insert_quotas_from_plan(&tenant).await;
    let log = std::path::PathBuf::from(tenant_tests::scratch_dir("hotlog")).join("api.log");
    // 1 ms: the first check of a tenant (its state read from PostgreSQL into Redis) is slower.
    let settings = [("RUST_LOG", "info".to_owned()), ("HTTP_SLOW_REQUEST_MS", "1".to_owned())];
    let (_api, base) = start_api_process(&app, &settings, &log).await;
    let check = format!("{base}/internal/tenants/{}/quota-check", tenant.id);
    for _ in 0..50 {
        let res = app
            .client
            .post(&check)
            .header("x-service-token", tenant_tests::SERVICE_TOKEN)
            .json(&json!({ "resource": "api_calls", "consume": true }))
            .send()
            .await
            .expect("check");
        assert!(res.status().is_success(), "{}", res.status());
    }
    let context = format!("{base}/internal/tenants/{}/context", tenant.id);
    let res =
        app.client.get(&context).header("x-service-token", tenant_tests::SERVICE_TOKEN).send().await.expect("ctx");
    assert!(res.status().is_success());
    let res =
        app.client.get(format!("{base}/api/v1/tenants")).bearer_auth(app.admin_token()).send().await.expect("list");
    assert!(res.status().is_success());
    // The process writes its log asynchronously; the public request's line is the last to come.
    let until = Instant::now() + Duration::from_secs(10);
    while lines_with(&log, "\"/api/v1/tenants\"").is_empty() {
        assert!(
            Instant::now() < until,
            "the public request was not logged: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hot = lines_with(&log, "quota-check");
    let slow: Vec<&Value> = hot.iter().filter(|l| l["message"] == json!("slow request")).collect();
    assert!(!slow.is_empty(), "the cold first check is logged as slow: {hot:?}");
    assert!(slow.iter().all(|l| l["level"] == json!("WARN")), "{slow:?}");
    assert!(
        hot.len() < 50 && hot.iter().all(|l| l["message"] == json!("slow request")),
        "hot checks are not access-logged at info: {} lines, e.g. {:?}",
        hot.len(),
        hot.first()
    );
    assert!(
        lines_with(&log, "/context").iter().all(|l| l["message"] != json!("request")),
        "the context read is not access-logged at info"
    );
}
