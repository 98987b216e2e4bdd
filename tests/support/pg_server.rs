//! A private PostgreSQL server on a free port (from the machine's PostgreSQL binaries), for tests
//! that stop and restart the database under the service. As root, the server runs as the
//! `postgres` system user (initdb refuses root); otherwise as the current user.

use anyhow::Context;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::process::Command;

pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

/// The directory of `initdb` and `pg_ctl`: `PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql (set PG_BIN)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().context("no PostgreSQL binaries found (set PG_BIN)")
}

impl PgServer {
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = PathBuf::from(crate::scratch_dir("pg"));
        let as_postgres = Command::new("id").arg("-u").output().await?.stdout.starts_with(b"0");
        let server = PgServer { port, dir, bin: bin_dir()?, as_postgres };
        if as_postgres {
            let status = Command::new("chown").arg("-R").arg("postgres:postgres").arg(&server.dir).status().await?;
            anyhow::ensure!(status.success(), "chown of the data directory failed");
        }
        let data = server.dir.join("data");
        let out = server
            .command("initdb", &["-D", &data.to_string_lossy(), "-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .await?;
        anyhow::ensure!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        server.start_server().await?;
        Ok(server)
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args).kill_on_drop(false);
        cmd
    }

    async fn start_server(&self) -> anyhow::Result<()> {
        let data = self.dir.join("data");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        let out = self
            .command(
                "pg_ctl",
                &["-D", &data.to_string_lossy(), "-o", &options, "-l", &log.to_string_lossy(), "-w", "start"],
            )
            .output()
            .await?;
        anyhow::ensure!(out.status.success(), "pg_ctl start failed: {}", String::from_utf8_lossy(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "PostgreSQL did not listen on {}", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (fast shutdown: connections are cut, as in an outage).
    pub async fn stop(&self) -> anyhow::Result<()> {
        let data = self.dir.join("data");
        let out = self.command("pg_ctl", &["-D", &data.to_string_lossy(), "-m", "fast", "-w", "stop"]).output().await?;
        anyhow::ensure!(out.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    pub async fn restart(&self) -> anyhow::Result<()> {
        self.start_server().await
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            std::process::Command::new(exe)
        };
        let _ = cmd.args(["-D", &data.to_string_lossy(), "-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
