//! A private `redis-server` on a free port, for tests that stop Redis under the service.

use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Self::start_on(port).await
    }

    /// Starts a fresh (empty) server on the port of the killed one.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill().await;
        *self = Self::start_on(self.port).await?;
        Ok(())
    }

    async fn start_on(port: u16) -> anyhow::Result<Self> {
        Self::spawn(port, &["--port", &port.to_string()]).await
    }

    /// A server that speaks only TLS, with a certificate for `127.0.0.1` from a CA made for it
    /// ([`TlsFiles`]); with `require_client_cert`, clients must present a certificate of that CA.
    pub async fn start_tls(files: &TlsFiles, require_client_cert: bool) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let port_arg = port.to_string();
        #[rustfmt::skip]
        let args = [
            "--port", "0", "--tls-port", &port_arg,
            "--tls-cert-file", &files.server_cert, "--tls-key-file", &files.server_key,
            "--tls-ca-cert-file", &files.ca,
            "--tls-auth-clients", if require_client_cert { "yes" } else { "no" },
        ];
        Self::spawn(port, &args).await
    }

    async fn spawn(port: u16, args: &[&str]) -> anyhow::Result<Self> {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let server = RedisServer { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!("redis-server did not start on port {port}")
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (as a crash would) and waits for it to be gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// A CA, a server certificate for `127.0.0.1` and a client certificate, made with the `openssl`
/// command in a scratch directory (PEM file paths).
pub struct TlsFiles {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

impl TlsFiles {
    pub fn make() -> anyhow::Result<Self> {
        let dir = std::path::PathBuf::from(crate::scratch_dir("redis-tls"));
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let openssl = |args: &[&str]| -> anyhow::Result<()> {
            let out = std::process::Command::new("openssl").args(args).output()?;
            anyhow::ensure!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            Ok(())
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let (ca, ca_key) = (path("ca.pem"), path("ca.key"));
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", &ca_key, "-out", &ca, "-days", "2", "-subj", "/CN=test redis CA"],
            ]
            .concat(),
        )?;
        let ext = path("ext");
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")?;
        let issue = |name: &str| -> anyhow::Result<(String, String)> {
            let (cert, key, csr) =
                (path(&format!("{name}.pem")), path(&format!("{name}.key")), path(&format!("{name}.csr")));
            openssl(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]].concat())?;
            #[rustfmt::skip]
            openssl(&["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-CAcreateserial",
                      "-out", &cert, "-days", "2", "-extfile", &ext])?;
            Ok((cert, key))
        };
        let (server_cert, server_key) = issue("server")?;
        let (client_cert, client_key) = issue("client")?;
        Ok(TlsFiles { ca, server_cert, server_key, client_cert, client_key })
    }
}
