//! A real Stripe-compatible peer: localstripe 1.15.10 (PyPI), a stateful Stripe fake, started by
//! `support/localstripe_loopback.py` on 127.0.0.1 and a free port, with an empty in-memory store.
//!
//! The Python that runs it is `LOCALSTRIPE` (set by `scripts/test`), else the venv in
//! `.dev/localstripe`, which is installed there on first use (`python3 -m venv` and
//! `pip install localstripe==1.15.10`, as `scripts/test` does). Helpers read its objects back over
//! its HTTP API.

use anyhow::Context;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};
use tenant_domain::config::StripeSettings;
use tenant_domain::{Secret, TenantId};
use tokio::process::{Child, Command};

/// localstripe accepts any `sk_…` key.
pub const SECRET_KEY: &str = "sk_test_localstripe";
const PACKAGE: &str = "localstripe==1.15.10";

pub struct LocalStripe {
    pub port: u16,
    child: Child,
    log: PathBuf,
    http: reqwest::Client,
}

impl LocalStripe {
    /// Starts an empty localstripe and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        let python = tokio::task::spawn_blocking(python).await??;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/localstripe_loopback.py");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = Path::new(&crate::scratch_dir("localstripe")).join("localstripe.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(&python)
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {} {}", python.display(), script.display()))?;
        let mut peer = LocalStripe { port, child, log, http: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(res) = peer.request(reqwest::Method::GET, "/v1/customers?limit=1").send().await
                && res.status().is_success()
            {
                return Ok(peer);
            }
            if let Some(exit) = peer.child.try_wait()? {
                anyhow::bail!("localstripe exited ({exit}): {}", peer.log_tail());
            }
            if Instant::now() > deadline {
                anyhow::bail!("localstripe did not answer on port {port} within 30 s: {}", peer.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The service's Stripe settings for this peer.
    pub fn settings(&self) -> StripeSettings {
        StripeSettings { secret_key: Secret::new(SECRET_KEY.to_owned()), api_base: Some(self.url()) }
    }

    /// Forgets every object (`DELETE /_config/data`).
    pub async fn reset(&self) -> anyhow::Result<()> {
        let res = self.request(reqwest::Method::DELETE, "/_config/data").send().await?;
        anyhow::ensure!(res.status().is_success(), "reset answered {}", res.status());
        Ok(())
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Self::json(self.request(reqwest::Method::GET, path).send().await?).await
    }

    /// A form-encoded POST, as Stripe's API takes it.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<Value> {
        Self::json(self.request(reqwest::Method::POST, path).form(form).send().await?).await
    }

    /// Every object of a list endpoint (`path` may carry a query), page by page.
    pub async fn list(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.get(&format!("{path}{sep}limit=100{after}")).await?;
            let data = page["data"].as_array().context("a list has data")?;
            all.extend(data.iter().cloned());
            match data.last().and_then(|last| last["id"].as_str()) {
                Some(last) if page["has_more"] == true => after = format!("&starting_after={last}"),
                _ => return Ok(all),
            }
        }
    }

    /// The customers tagged with `tenant` (metadata `tenant_id`).
    pub async fn customers_of(&self, tenant: TenantId) -> anyhow::Result<Vec<Value>> {
        Ok(of_tenant(self.list("/v1/customers").await?, tenant))
    }

    /// The subscriptions tagged with `tenant`, whatever their status.
    pub async fn subscriptions_of(&self, tenant: TenantId) -> anyhow::Result<Vec<Value>> {
        Ok(of_tenant(self.list("/v1/subscriptions?status=all").await?, tenant))
    }

    pub async fn payment_intents_of(&self, tenant: TenantId) -> anyhow::Result<Vec<Value>> {
        Ok(of_tenant(self.list("/v1/payment_intents").await?, tenant))
    }

    /// A card payment method (not attached to anyone) for a test card number.
    pub async fn card(&self, number: &str) -> anyhow::Result<String> {
        let form = [
            ("type", "card"),
            ("card[number]", number),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2034"),
            ("card[cvc]", "123"),
        ];
        let method = self.post("/v1/payment_methods", &form).await?;
        method["id"].as_str().map(str::to_owned).with_context(|| format!("no payment method: {method}"))
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url())).bearer_auth(SECRET_KEY)
    }

    async fn json(res: reqwest::Response) -> anyhow::Result<Value> {
        let status = res.status();
        let body: Value = res.json().await?;
        anyhow::ensure!(status.is_success(), "localstripe answered {status}: {body}");
        Ok(body)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        // SIGKILL to the child's pid (it is the Python process itself, not a shell).
        let _ = self.child.start_kill();
    }
}

fn of_tenant(objects: Vec<Value>, tenant: TenantId) -> Vec<Value> {
    let tenant = tenant.to_string();
    objects.into_iter().filter(|o| o["metadata"]["tenant_id"].as_str() == Some(tenant.as_str())).collect()
}

/// The Python to run localstripe with, installing it into `.dev/localstripe` when missing.
fn python() -> anyhow::Result<PathBuf> {
    if let Some(python) = std::env::var_os("LOCALSTRIPE") {
        return Ok(python.into());
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.dev/localstripe");
    install(&venv)?;
    Ok(venv.join("bin/python"))
}

/// `python3 -m venv` + `pip install`, once: parallel test processes wait for the one that holds
/// the lock (a directory beside the venv; one older than ten minutes is taken for abandoned).
fn install(venv: &Path) -> anyhow::Result<()> {
    // pip writes the console script last: its presence means a complete install.
    let installed = || venv.join("bin/localstripe").exists();
    let lock = venv.with_extension("installing");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if installed() {
            return Ok(());
        }
        if let Some(parent) = lock.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::create_dir(&lock) {
            Ok(()) => break,
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                let age = std::fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                if age.is_some_and(|age| age > Duration::from_secs(600)) {
                    let _ = std::fs::remove_dir(&lock);
                }
                anyhow::ensure!(Instant::now() < deadline, "waited 10 min for {} to be released", lock.display());
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(err) => return Err(err).with_context(|| format!("creating {}", lock.display())),
        }
    }
    let result = (|| {
        if installed() {
            return Ok(());
        }
        eprintln!("installing {PACKAGE} into {}", venv.display());
        let venv_ok = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv)
            .status()
            .context("python3 is needed to run localstripe")?;
        anyhow::ensure!(venv_ok.success(), "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)");
        let pip_ok = std::process::Command::new(venv.join("bin/pip")).args(["install", "-q", PACKAGE]).status()?;
        anyhow::ensure!(pip_ok.success(), "pip could not install {PACKAGE}");
        Ok(())
    })();
    let _ = std::fs::remove_dir(&lock);
    result
}
