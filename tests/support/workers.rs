//! Workers for a [`TestApp`]: in-process (the `run` function) or as real processes of the worker
//! program, which tests can `kill -9`.

use crate::TestApp;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tenant_domain::Config;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// A worker running inside the test process; stops (gracefully) when dropped.
pub struct InProcessWorker {
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessWorker {
    /// Stops it like SIGTERM would and waits for it to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await?
    }
}

impl Drop for InProcessWorker {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A worker process.
pub struct WorkerProcess {
    pub child: Child,
}

impl WorkerProcess {
    /// `kill -9`.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

impl TestApp {
    pub fn spawn_worker(&self) -> InProcessWorker {
        self.spawn_worker_with(|_| {})
    }

    pub fn spawn_worker_with(&self, customize: impl FnOnce(&mut HashMap<String, String>)) -> InProcessWorker {
        let mut env = self.env.clone();
        customize(&mut env);
        let config = Config::from_lookup(|k| env.get(k).cloned()).expect("worker config");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(tenant_worker::run(config, async move {
            let _ = rx.await;
        }));
        InProcessWorker { stop: Some(tx), task }
    }

    /// Starts the worker program `exe` (integration tests pass
    /// `env!("CARGO_BIN_EXE_worker-under-test")`, which only they can see).
    pub fn spawn_worker_process(&self, exe: &str) -> WorkerProcess {
        let child = Command::new(exe)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.env)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("worker process starts");
        WorkerProcess { child }
    }

    /// Polls the job until it is final (or the deadline passes); returns it.
    pub async fn wait_job(&self, job_id: &str, deadline: Duration) -> Value {
        let token = self.admin_token();
        let until = Instant::now() + deadline;
        loop {
            let (status, body) = self.get(&format!("/api/v1/jobs/{job_id}"), &token).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let job = body["data"].clone();
            if matches!(job["status"].as_str(), Some("succeeded" | "failed" | "compensated")) {
                return job;
            }
            assert!(Instant::now() < until, "job {job_id} not finished in {deadline:?}: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An API process (the `tenant-api` program), for tests that need a second, separate one.
pub struct ApiProcess {
    pub child: Child,
    pub base: String,
}

impl TestApp {
    /// Starts the API program `exe` (integration tests pass `env!("CARGO_BIN_EXE_api-under-test")`)
    /// with this app's environment, and waits until it answers.
    pub async fn spawn_api_process(&self, exe: &str) -> ApiProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let child = Command::new(exe)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.env)
            .env("SERVICE_HOST", "127.0.0.1")
            .env("SERVICE_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("api process starts");
        let base = format!("http://127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(20);
        while self.client.get(format!("{base}/livez")).send().await.is_err() {
            assert!(Instant::now() < until, "API process did not start");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        ApiProcess { child, base }
    }
}
