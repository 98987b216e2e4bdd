//! A real S3-compatible peer for the backup store: moto's server (PyPI `moto[s3]`), installed by
//! `scripts/test` into `.dev/moto` (or named by `MOTO_SERVER`), on a free port, with one bucket.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub const BUCKET: &str = "tenant-backups";
pub const ACCESS_KEY_ID: &str = "test-access-key";
pub const SECRET_ACCESS_KEY: &str = "test-secret-key";
pub const REGION: &str = "us-east-1";

pub struct S3Peer {
    pub port: u16,
    _child: Child,
}

fn moto_server() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return Ok(path.into());
    }
    let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.dev/moto/bin/moto_server");
    anyhow::ensure!(
        installed.exists(),
        "moto_server not found at {} (scripts/test installs it; or set MOTO_SERVER)",
        installed.display()
    );
    Ok(installed)
}

impl S3Peer {
    /// Starts the server and creates [`BUCKET`].
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(moto_server()?)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let peer = S3Peer { port, _child: child };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // CreateBucket; moto accepts it unsigned.
            match client.put(format!("{}/{BUCKET}", peer.endpoint())).send().await {
                Ok(res) if res.status().is_success() => return Ok(peer),
                Ok(res) => anyhow::bail!("creating the bucket answered {}", res.status()),
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(err) => anyhow::bail!("moto_server did not start on port {port}: {err}"),
            }
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The service's settings for this bucket.
    pub fn env(&self) -> [(&'static str, String); 5] {
        [
            ("BACKUP_S3_BUCKET", BUCKET.to_owned()),
            ("BACKUP_S3_ENDPOINT", self.endpoint()),
            ("BACKUP_S3_REGION", REGION.to_owned()),
            ("BACKUP_S3_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("BACKUP_S3_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
        ]
    }
}
