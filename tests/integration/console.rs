//! The operator console (`/console/`) in a real browser: the real API and worker, Debian's
//! chromium driven by npm's playwright-core through `tests/browser/console.test.mjs`. The script
//! signs in, creates a tenant and watches its job live, searches, pages and filters, changes the
//! plan after the preview, suspends, reactivates, deletes and restores it, opens the service page,
//! and checks a tenant admin's console; every request must go to the API's own origin and the
//! browser must log no error. Missing tools fail the test (`scripts/test` installs them).
//!
//! Screenshots go to `CONSOLE_SCREENSHOT_DIR` when set (the README's come from
//! `CONSOLE_SCREENSHOT_DIR=$PWD/docs/screenshots`), else to a scratch directory.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tenant_domain::TenantId;
use tenant_domain::TenantStatus;
use tenant_tests::{SERVICE_TOKEN, TestApp, scratch_dir};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

const SCRIPT_DEADLINE: Duration = Duration::from_secs(240);
const START_WORKER: &str = "console-test: start the worker";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate sits in the repository").to_path_buf()
}

fn missing(what: &str) -> ! {
    panic!(
        "the console browser test needs {what}. `scripts/test` installs what is missing (as root on Debian: \
         `apt-get install chromium nodejs npm`; then `npm install --prefix .dev/node playwright-core` with \
         PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1). Set CHROMIUM, NODE or PLAYWRIGHT_CORE to use other copies."
    )
}

/// Node, chromium and the playwright-core package, from the environment or where scripts/test
/// puts them.
fn tools() -> (String, String, String) {
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
    let runs = std::process::Command::new(&node).arg("--version").output().is_ok_and(|o| o.status.success());
    if !runs {
        missing(&format!("Node.js (`{node}` does not run)"));
    }
    let chromium = std::env::var("CHROMIUM").ok().or_else(|| {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists()).map(Into::into)
    });
    let Some(chromium) = chromium.filter(|c| Path::new(c).exists()) else { missing("chromium (/usr/bin/chromium)") };
    let playwright = std::env::var("PLAYWRIGHT_CORE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".dev/node/node_modules/playwright-core"));
    if !playwright.join("index.mjs").exists() {
        missing(&format!("playwright-core ({} has no index.mjs)", playwright.display()));
    }
    (node, chromium, playwright.to_string_lossy().into_owned())
}

/// Records usage through the internal API, as the platform's services do.
async fn use_quota(app: &TestApp, tenant: &str, resource: &str, amount: i64) {
    let res = app
        .client
        .post(app.url(&format!("/internal/tenants/{tenant}/usage")))
        .header("x-service-token", SERVICE_TOKEN)
        .json(&json!({ "resource": resource, "amount": amount }))
        .send()
        .await
        .expect("usage sent");
    assert_eq!(res.status(), StatusCode::OK, "usage of {resource}");
}

async fn ok(app: &TestApp, method: Method, path: &str, body: Value) {
    let (status, answer) = app.call(method, path, Some(&app.admin_token()), Some(body)).await;
    assert!(status.is_success(), "{path}: {status} {answer}");
}

/// "Acme Corp": provisioned by the real job, with usage at every bar colour, a secret in its
/// configuration and a feature override — what the tenant page shows.
async fn showcase_tenant(app: &TestApp) -> String {
    let body = json!({
        "name": "Acme Corp", "slug": "acme", "planId": "basic", "domain": "acme.example.com",
        "ownerId": "0b7e2c4a-3f55-4d8e-9a1c-6d2f8e4b7a90", "ownerEmail": "ops@acme.example.com"
    });
    let (status, created) = app.call(Method::POST, "/api/v1/tenants", Some(&app.admin_token()), Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let job = created["data"]["job"]["id"].as_str().expect("job id");
    let done = app.wait_job(job, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let id = created["data"]["tenant"]["id"].as_str().expect("tenant id").to_owned();
    // basic: 25 users, 10,000 api calls a day, 1,000 emails a day, 3 databases, 10 GiB.
    use_quota(app, &id, "users", 19).await; // 76 %: amber
    use_quota(app, &id, "api_calls", 9_200).await; // 92 %: orange
    use_quota(app, &id, "email_sends", 960).await; // 96 %: red
    use_quota(app, &id, "databases", 1).await;
    use_quota(app, &id, "storage", 3_758_096_384).await; // 3.5 GiB
    let config = json!({ "integrations": { "slack": { "enabled": true, "apiKey": "xoxb-console-demo-4242" } },
                         "branding": { "companyName": "Acme Corp" } });
    ok(app, Method::PUT, &format!("/api/v1/tenants/{id}/config"), config).await;
    ok(app, Method::PATCH, &format!("/api/v1/tenants/{id}/features"), json!({ "realTimeChat": true })).await;
    id
}

/// Two dozen more tenants, written directly, so the list has two pages and every status.
async fn more_tenants(app: &TestApp) {
    let names = [
        "Globex",
        "Initech",
        "Umbrella Labs",
        "Hooli",
        "Stark Industries",
        "Wayne Enterprises",
        "Wonka Foods",
        "Cyberdyne",
        "Soylent",
        "Tyrell Corp",
        "Aperture Science",
        "Black Mesa",
        "Vandelay Imports",
        "Pied Piper",
        "Massive Dynamic",
        "Gringotts",
        "Monsters Inc",
        "Oceanic Air",
        "Nakatomi",
        "Dunder Mifflin",
        "Bluth Company",
        "Prestige Worldwide",
        "Sterling Cooper",
        "Los Pollos",
    ];
    let statuses = [
        TenantStatus::Active,
        TenantStatus::Active,
        TenantStatus::Suspended,
        TenantStatus::Active,
        TenantStatus::Failed,
    ];
    let plans = ["free", "basic", "pro", "enterprise"];
    for (i, name) in names.iter().enumerate() {
        let slug = name.to_lowercase().replace(' ', "-");
        app.insert_tenant(name, &slug, plans[i % plans.len()], statuses[i % statuses.len()]).await;
    }
}

#[tokio::test]
async fn the_console_drives_the_api_in_a_browser() {
    let (node, chromium, playwright) = tools();
    let app = TestApp::spawn().await;
    let worker = app.spawn_worker();
    let acme = showcase_tenant(&app).await;
    // From here the worker is stopped, so the new tenant's job is seen queued first and then
    // progressing once the script asks for the worker.
    worker.stop().await.expect("worker stops");
    more_tenants(&app).await;
    let acme_id = TenantId(acme.parse().expect("uuid"));
    let tenant_admin = app.token(&["tenant_admin"], Some(acme_id));
    let shots = std::env::var("CONSOLE_SCREENSHOT_DIR").unwrap_or_else(|_| scratch_dir("console-screenshots"));

    let mut child = Command::new(&node)
        .arg(repo_root().join("tests/browser/console.test.mjs"))
        .env("CONSOLE_BASE_URL", format!("http://{}", app.addr))
        .env("CONSOLE_ADMIN_TOKEN", app.admin_token())
        .env("CONSOLE_TENANT_ADMIN_TOKEN", tenant_admin)
        .env("CONSOLE_TENANT_SLUG", "acme")
        .env("CONSOLE_NEW_SLUG", "console-test-co")
        .env("CONSOLE_WAIT_FOR_WORKER", "1")
        .env("CONSOLE_SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut stderr = child.stderr.take().expect("stderr");
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut output = Vec::new();
    let mut worker = None;
    let run = async {
        while let Some(line) = lines.next_line().await.expect("script output") {
            if line == START_WORKER && worker.is_none() {
                worker = Some(app.spawn_worker());
            }
            output.push(line);
        }
        child.wait().await.expect("script ends")
    };
    let status = tokio::time::timeout(SCRIPT_DEADLINE, run).await;
    let errors = errors.await.unwrap_or_default();
    let output = output.join("\n");
    let status =
        status.unwrap_or_else(|_| panic!("the browser script ran over {SCRIPT_DEADLINE:?}\n{output}\n{errors}"));
    assert!(status.success(), "the browser script failed ({status})\n{output}\n{errors}\nscreenshots: {shots}");
    assert!(worker.is_some(), "the script never asked for the worker:\n{output}");
    assert!(output.contains("console-test: ok:"), "{output}");
    eprintln!("{output}\nscreenshots: {shots}");
    for shot in ["tenant-list", "tenant-page", "plan-change-preview", "job-progress", "service-page"] {
        assert!(Path::new(&shots).join(format!("{shot}.png")).exists(), "no {shot}.png in {shots}");
    }

    // What the browser did, as the API sees it.
    let (_, tenants) = app.get("/api/v1/tenants?q=console-test-co", &app.admin_token()).await;
    let created = &tenants["data"][0];
    assert_eq!(created["status"], "active", "restored: {tenants}");
    let (_, metrics) = app.get("/api/v1/metrics", &app.admin_token()).await;
    let by_kind = &metrics["data"]["jobsByKind"];
    for kind in ["provision_tenant", "change_plan", "delete_tenant", "restore_tenant"] {
        assert!(by_kind[kind]["finishedLast24Hours"]["succeeded"].as_i64() >= Some(1), "{kind}: {by_kind}");
    }
}

#[tokio::test]
async fn console_assets_are_served_with_a_strict_policy() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/console")).send().await.expect("sent");
    assert_eq!(res.url().path(), "/console/", "redirected to the directory");
    let csp = res.headers()["content-security-policy"].to_str().expect("ascii").to_owned();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let html = res.text().await.expect("html");
    // No other host anywhere in the page.
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"), "{html}");

    for (path, mime) in [
        ("/console/js/app.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
        ("/console/favicon.svg", "image/svg+xml"),
    ] {
        let res = app.client.get(app.url(path)).send().await.expect("sent");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(res.headers()["content-type"], mime, "{path}");
        assert_eq!(res.headers()["cache-control"], "no-cache", "{path}");
        let etag = res.headers()["etag"].clone();
        let text = res.text().await.expect("asset");
        if !path.ends_with(".svg") {
            assert!(!text.contains("://"), "{path} names another host");
        }
        let again = app.client.get(app.url(path)).header("if-none-match", etag).send().await.expect("sent");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
    }
    let (status, body) = app.call(Method::GET, "/console/js/nope.js", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "NOT_FOUND");
}
