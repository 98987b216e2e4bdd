//! `tenantctl`, the built program (`tenantctl-under-test`, the same `main_entry`), run as a user
//! would against the real API and a real worker: job waits fed by the events stream, refusals
//! with the API's own code and message, `--json` that parses, the config file and the exit codes.
//! Every run checks that the token it was given appears nowhere in what it printed.

use crate::lifecycle::create;
use reqwest::Method;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use tenant_domain::TenantStatus;
use tenant_tests::{TestApp, scratch_dir};
use tokio::process::Command;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Runs `tenantctl args…` with a clean environment: no config file (a fresh `HOME`), `url` and
/// `token` as TENANT_API_URL / TENANT_API_TOKEN when given, stdin closed.
async fn tenantctl_env(url: Option<&str>, token: Option<&str>, extra: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantctl-under-test"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", scratch_dir("cli-home"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(url) = url {
        cmd.env("TENANT_API_URL", url);
    }
    if let Some(token) = token {
        cmd.env("TENANT_API_TOKEN", token);
    }
    for (key, value) in extra {
        cmd.env(key, value);
    }
    let out =
        tokio::time::timeout(DEADLINE * 2, cmd.output()).await.expect("tenantctl finished").expect("tenantctl ran");
    let run = Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if let Some(token) = token {
        assert!(!run.stdout.contains(token) && !run.stderr.contains(token), "the token was printed: {run:?}");
    }
    run
}

async fn tenantctl(app: &TestApp, token: &str, args: &[&str]) -> Run {
    tenantctl_env(Some(&app.url("")), Some(token), &[], args).await
}

/// A tenant's status as the API reports it.
async fn status(app: &TestApp, tenant: &str) -> Value {
    let (_, body) = app.get(&format!("/api/v1/tenants/{tenant}"), &app.admin_token()).await;
    body["data"]["status"].clone()
}

/// `{"amount": -1965, "currency": "usd"}` as the CLI prints it.
fn money(v: &Value) -> String {
    let amount = v["amount"].as_i64().expect("amount");
    let sign = if amount < 0 { "-" } else { "" };
    let currency = v["currency"].as_str().expect("currency").to_uppercase();
    format!("{sign}{}.{:02} {currency}", amount.unsigned_abs() / 100, amount.unsigned_abs() % 100)
}

#[tokio::test]
async fn create_delete_and_restore_with_wait_show_the_steps_and_end_as_asked() {
    let app = TestApp::spawn().await;
    let _worker = app.spawn_worker();
    let admin = app.admin_token();
    let owner = Uuid::new_v4().to_string();
    let args = ["tenants", "create", "--name", "CLI Acme", "--slug", "cli-acme", "--plan", "basic"];
    let run = tenantctl(&app, &admin, &[&args[..], &["--owner-id", &owner, "--wait"]].concat()).await;
    assert_eq!(run.code, 0, "{run:?}");
    for step in ["create_schema", "default_config", "quotas", "billing_account", "welcome_email", "activate"] {
        assert!(run.stdout.lines().any(|l| l.contains('✓') && l.contains(step)), "step {step} not shown: {run:?}");
    }
    assert!(run.stdout.contains("succeeded in"), "{run:?}");
    assert!(run.stdout.trim_end().ends_with("is active"), "{run:?}");
    assert_eq!(status(&app, "cli-acme").await, json!("active"));
    let (_, body) = app.get("/api/v1/tenants/cli-acme", &admin).await;
    let id = body["data"]["id"].as_str().expect("id").to_owned();

    // Deleting asks for confirmation; with no terminal to ask on, --yes is required.
    let run = tenantctl(&app, &admin, &["tenants", "delete", "cli-acme"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--yes"), "{run:?}");
    assert_eq!(status(&app, &id).await, json!("active"));

    let run = tenantctl(&app, &admin, &["tenants", "delete", "cli-acme", "--yes", "--wait"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.lines().any(|l| l.contains('✓') && l.contains("verify_backup")), "{run:?}");
    assert!(run.stdout.contains("backup ") && run.stdout.trim_end().ends_with("is deleted"), "{run:?}");
    assert_eq!(status(&app, &id).await, json!("deleted"));

    // Restore by tenant: the backup of its last deletion.
    let run = tenantctl(&app, &admin, &["tenants", "restore", "--tenant", &id, "--wait"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.lines().any(|l| l.contains('✓') && l.contains("restore_rows")), "{run:?}");
    assert!(run.stdout.trim_end().ends_with("is active") && !run.stdout.contains("backup "), "{run:?}");
    assert_eq!(status(&app, &id).await, json!("active"));
}

#[tokio::test]
async fn a_waited_job_that_is_compensated_exits_1_with_its_error() {
    let app = TestApp::spawn().await;
    // A plan priced in a currency billing can't charge: provisioning compensates.
    sqlx::query("update subscription_plans set currency = 'zzz' where slug = 'basic'")
        .execute(&app.db)
        .await
        .expect("q");
    let _worker = app.spawn_worker();
    let admin = app.admin_token();
    let owner = Uuid::new_v4().to_string();
    let args = ["--json", "tenants", "create", "--name", "Doomed", "--slug", "doomed", "--plan", "basic"];
    let run = tenantctl(&app, &admin, &[&args[..], &["--owner-id", &owner, "--wait"]].concat()).await;
    assert_eq!(run.code, 1, "{run:?}");
    // --json still prints the outcome, for scripts; the reason goes to stderr.
    let out = run.json();
    assert_eq!(out["job"]["status"], json!("compensated"), "{out}");
    assert_eq!(out["tenant"]["status"], json!("failed"), "{out}");
    let code = out["job"]["error"]["code"].as_str().expect("code");
    assert!(run.stderr.contains(&format!("compensated: {code}: ")), "{run:?}");
    assert!(run.stderr.contains("unsupported currency"), "{run:?}");

    let job = out["job"]["id"].as_str().expect("job id");
    let run = tenantctl(&app, &admin, &["jobs", "watch", job]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.lines().any(|l| l.contains('↺') && l.contains("create_schema")), "{run:?}");
    assert!(run.stdout.lines().any(|l| l.contains("billing_account") && l.contains("unsupported currency")), "{run:?}");
    // Reading the job is not failing: exit 0 whatever its status.
    let run = tenantctl(&app, &admin, &["jobs", "get", job]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("compensated") && run.stdout.contains("billing_account"), "{run:?}");
}

#[tokio::test]
async fn jobs_watch_on_a_finished_job_exits_0() {
    let app = TestApp::spawn().await;
    let _worker = app.spawn_worker();
    let (_, job) = create(&app, "watched", "basic").await;
    let finished = app.wait_job(&job, DEADLINE).await;
    assert_eq!(finished["status"], json!("succeeded"), "{finished}");
    let admin = app.admin_token();

    let run = tenantctl(&app, &admin, &["jobs", "watch", &job]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.lines().any(|l| l.contains('✓') && l.contains("activate")), "{run:?}");
    assert!(run.stdout.contains(&format!("job {job} succeeded")), "{run:?}");

    let run = tenantctl(&app, &admin, &["--json", "jobs", "watch", &job]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["id"], json!(job));

    let run = tenantctl(&app, &admin, &["--json", "jobs", "get", &job]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["status"], json!("succeeded"));

    let run = tenantctl(&app, &admin, &["jobs", "watch", &Uuid::new_v4().to_string()]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("JOB_NOT_FOUND"), "{run:?}");
}

#[tokio::test]
async fn refusals_exit_1_with_the_apis_code_and_message_and_allowed_moves_exit_0() {
    let app = TestApp::spawn().await;
    let live = app.insert_tenant("Live", "live", "basic", TenantStatus::Active).await;
    app.insert_quotas_from_plan(&live).await;
    let gone = app.insert_tenant("Gone", "gone", "basic", TenantStatus::Deleted).await;
    let admin = app.admin_token();
    let member = app.token(&["tenant_member"], Some(live.id));

    // A member may not suspend: the API's code and message, on stderr, exit 1, nothing changed.
    let (_, api) = app
        .call(Method::PATCH, "/api/v1/tenants/live/status", Some(&member), Some(json!({"status": "suspended"})))
        .await;
    let (code, message) = (api["error"]["code"].as_str().expect("code"), api["error"]["message"].as_str().expect("m"));
    let run = tenantctl(&app, &member, &["tenants", "suspend", "live"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(&format!("{code}: {message}")), "{run:?} vs {api}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert_eq!(status(&app, "live").await, json!("active"));

    // Suspending a deleted tenant: 409 INVALID_STATE.
    let run = tenantctl(&app, &admin, &["tenants", "suspend", &gone.id.to_string()]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("INVALID_STATE") && run.stderr.contains("HTTP 409"), "{run:?}");

    // A token the API refuses.
    let run = tenantctl(&app, "not-a-jwt", &["tenants", "list"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("UNAUTHORIZED") && run.stderr.contains("check the token"), "{run:?}");

    // The public quota check: allowed exits 0, beyond the limit exits 1 with the figures.
    let run = tenantctl(&app, &member, &["quota", "check", "live", "api_calls"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("allowed: api_calls 1"), "{run:?}");
    let run = tenantctl(&app, &member, &["quota", "check", "live", "users", "--amount", "1000000000"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("QUOTA_EXCEEDED") && run.stderr.contains("1000000000 requested"), "{run:?}");

    // What the member may do: read the tenant and its usage.
    let run = tenantctl(&app, &member, &["quota", "usage", "live"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let header = run.stdout.lines().next().expect("header");
    assert!(header.starts_with("RESOURCE") && header.contains("REMAINING"), "{run:?}");
    assert!(run.stdout.lines().any(|l| l.starts_with("users ") && l.contains(" 25 ")), "{run:?}");
    let run = tenantctl(&app, &member, &["--json", "quota", "usage", "live", "--history"]).await;
    assert!(run.json()["current"].as_array().is_some_and(|c| c.len() == 8), "{run:?}");
    let run = tenantctl(&app, &member, &["tenants", "get", "live"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Basic (basic)") && run.stdout.contains("features on"), "{run:?}");

    // What the admin may: suspend (quota checks denied at once), then reactivate.
    let run = tenantctl(&app, &admin, &["tenants", "suspend", "live", "--reason", "cli test"]).await;
    assert_eq!((run.code, run.stdout.trim_end().ends_with("is suspended")), (0, true), "{run:?}");
    let run = tenantctl(&app, &member, &["quota", "check", "live", "api_calls"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("TENANT_NOT_ACTIVE"), "{run:?}");
    let run = tenantctl(&app, &admin, &["tenants", "reactivate", "live"]).await;
    assert_eq!((run.code, run.stdout.trim_end().ends_with("is active")), (0, true), "{run:?}");
    assert_eq!(status(&app, "live").await, json!("active"));
}

#[tokio::test]
async fn json_output_parses_for_list_get_and_plans() {
    let app = TestApp::spawn().await;
    app.insert_tenant("Alpha", "alpha", "basic", TenantStatus::Active).await;
    app.insert_tenant("Beta", "beta", "pro", TenantStatus::Suspended).await;
    let admin = app.admin_token();

    let run = tenantctl(&app, &admin, &["--json", "tenants", "list"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let mut slugs: Vec<String> =
        run.json().as_array().expect("array").iter().map(|t| t["slug"].as_str().expect("slug").to_owned()).collect();
    slugs.sort();
    assert_eq!(slugs, ["alpha", "beta"]);

    let run = tenantctl(&app, &admin, &["tenants", "list", "--status", "suspended", "--json"]).await;
    let list = run.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["slug"], json!("beta"));

    let run = tenantctl(&app, &admin, &["--json", "tenants", "get", "alpha"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let tenant = run.json();
    assert_eq!((tenant["slug"].as_str(), tenant["plan"]["slug"].as_str()), (Some("alpha"), Some("basic")));

    let run = tenantctl(&app, &admin, &["--json", "--compact", "plans", "list"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim_end().lines().count(), 1, "--compact is one line: {run:?}");
    let plans = run.json();
    let slugs: Vec<&str> = plans.as_array().expect("array").iter().filter_map(|p| p["slug"].as_str()).collect();
    for slug in ["free", "basic", "pro", "enterprise"] {
        assert!(slugs.contains(&slug), "{slugs:?}");
    }

    // The same, for people: aligned tables, plan slugs, prices in major units.
    let run = tenantctl(&app, &admin, &["tenants", "list"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let header = run.stdout.lines().next().expect("header");
    assert!(header.starts_with("ID") && header.contains("SLUG") && header.contains("STATUS"), "{run:?}");
    let beta = run.stdout.lines().find(|l| l.contains("beta")).expect("beta row");
    assert!(beta.contains("suspended") && beta.contains(" pro "), "{run:?}");
    assert_eq!(beta.find("beta"), header.find("SLUG"), "columns aligned: {run:?}");
    assert!(run.stdout.contains("page 1 of 1 (2 tenants)"), "{run:?}");
    let run = tenantctl(&app, &admin, &["plans", "list"]).await;
    let basic = plans.as_array().expect("plans").iter().find(|p| p["slug"] == "basic").expect("basic").clone();
    let row = run.stdout.lines().find(|l| l.starts_with("basic")).expect("basic row");
    assert!(row.contains(&money(&basic["priceMonthly"])), "{row} vs {basic}");
}

#[tokio::test]
async fn usage_errors_exit_2_and_help_exits_0() {
    let url = Some("http://127.0.0.1:9");
    let token = Some("some-token-value");
    for args in [
        &[][..],
        &["tenants"][..],
        &["quota", "check", "acme", "gold"][..],
        &["tenants", "list", "--limit", "500"][..],
        &["tenants", "create", "--name", "x"][..],
        &["billing", "change-plan", "acme", "--plan", "pro", "--preview", "--wait"][..],
    ] {
        let run = tenantctl_env(url, token, &[], args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(!run.stderr.is_empty(), "{args:?}: {run:?}");
    }
    let run = tenantctl_env(url, None, &[], &["plans", "list"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("TENANT_API_TOKEN"), "{run:?}");
    let run = tenantctl_env(None, token, &[], &["plans", "list"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("TENANT_API_URL"), "{run:?}");
    let run = tenantctl_env(Some("ftp://x"), token, &[], &["plans", "list"]).await;
    assert_eq!(run.code, 2, "{run:?}");

    // An API that isn't there is a failure, not a usage error.
    let run = tenantctl_env(url, token, &[], &["plans", "list"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("cannot reach the API at 127.0.0.1:9"), "{run:?}");

    for args in [&["--help"][..], &["tenants", "create", "--help"][..], &["billing", "change-plan", "--help"][..]] {
        let run = tenantctl_env(None, None, &[], args).await;
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert!(run.stdout.contains("Examples:") && run.stdout.contains("Usage: tenantctl "), "{args:?}: {run:?}");
    }
}

#[tokio::test]
async fn the_config_file_is_read_and_env_and_flags_override_it() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token();
    let dir = scratch_dir("cli-config");
    let file = format!("{dir}/config.toml");
    std::fs::write(&file, format!("url = \"{}\"\ntoken = \"{admin}\"\n", app.url(""))).expect("config written");
    let from_file = [("TENANTCTL_CONFIG", file.as_str())];

    let run = tenantctl_env(None, None, &from_file, &["--json", "plans", "list"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.json().as_array().is_some_and(|p| !p.is_empty()), "{run:?}");
    assert!(!run.stdout.contains(&admin) && !run.stderr.contains(&admin), "the token was printed: {run:?}");
    // A token in a file others can read is worth a warning (on stderr; the JSON above parsed).
    assert!(run.stderr.contains("readable by others"), "{run:?}");
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let run = tenantctl_env(None, None, &from_file, &["plans", "list"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");

    // The environment overrides the file, and a flag the environment.
    let run = tenantctl_env(None, Some("env-token-refused"), &from_file, &["plans", "list"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("UNAUTHORIZED"), "{run:?}");
    let run = tenantctl_env(None, Some("env-token-refused"), &from_file, &["plans", "list", "--token", &admin]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = tenantctl_env(None, None, &from_file, &["plans", "list", "--url", "http://127.0.0.1:9"]).await;
    assert_eq!(run.code, 1, "{run:?}");

    // A named file that doesn't exist is a usage error.
    let missing = [("TENANTCTL_CONFIG", "/nonexistent/tenantctl.toml")];
    let run = tenantctl_env(Some(&app.url("")), Some(&admin), &missing, &["plans", "list"]).await;
    assert_eq!(run.code, 2, "{run:?}");
}

#[tokio::test]
async fn change_plan_preview_prints_the_proration_lines_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let _worker = app.spawn_worker();
    let (tenant, job) = create(&app, "planner", "basic").await;
    assert_eq!(app.wait_job(&job, DEADLINE).await["status"], json!("succeeded"));
    let admin_of_tenant = app.token(&["tenant_admin"], Some(tenant.parse().expect("tenant id")));
    let path = "/api/v1/tenants/planner/billing/plans?preview=true";
    let (_, api) =
        app.call(Method::POST, path, Some(&admin_of_tenant), Some(json!({"planId": "pro", "interval": "month"}))).await;
    let quote = api["data"].clone();
    let at = quote["prorationDate"].as_str().expect("prorationDate");
    let lines = quote["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 2, "{quote}");

    let args = ["billing", "change-plan", "planner", "--plan", "pro", "--interval", "month", "--preview"];
    let run = tenantctl(&app, &admin_of_tenant, &[&args[..], &["--proration-date", at]].concat()).await;
    assert_eq!(run.code, 0, "{run:?}");
    for line in lines {
        let description = line["description"].as_str().expect("description");
        let row =
            run.stdout.lines().find(|l| l.starts_with(description)).unwrap_or_else(|| panic!("{description}: {run:?}"));
        assert!(row.ends_with(&money(&line["amount"])), "{row} vs {line}");
    }
    let total = run.stdout.lines().find(|l| l.starts_with("total")).expect("total row");
    assert!(total.ends_with(&money(&quote["total"])), "{total} vs {quote}");
    assert!(run.stdout.contains("nothing changed"), "{run:?}");
    let run =
        tenantctl(&app, &admin_of_tenant, &[&["--json"][..], &args[..], &["--proration-date", at]].concat()).await;
    assert_eq!(run.json()["lines"], quote["lines"]);
    // Nothing changed: no plan-change job, still on basic.
    let (_, jobs) = app.get(&format!("/api/v1/tenants/{tenant}/jobs"), &app.admin_token()).await;
    assert_eq!(jobs["data"].as_array().map(Vec::len), Some(1), "{jobs}");

    let run = tenantctl(&app, &admin_of_tenant, &["billing", "show", "planner"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("(basic)") && run.stdout.contains("upcoming invoice"), "{run:?}");

    // The change itself, waited for (the interval defaults to the current one).
    let run =
        tenantctl(&app, &admin_of_tenant, &["billing", "change-plan", "planner", "--plan", "pro", "--wait"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.lines().any(|l| l.contains('✓') && l.contains("apply_plan")), "{run:?}");
    let run = tenantctl(&app, &admin_of_tenant, &["--json", "billing", "show", "planner"]).await;
    let billing = run.json();
    assert_eq!((billing["plan"]["slug"].as_str(), billing["interval"].as_str()), (Some("pro"), Some("month")));
}
