//! A stand-in identity provider: serves a JWK set over HTTP/1.1 on 127.0.0.1, records when each
//! fetch came, and can be given new keys or told to fail (500) — for the bearer-token tests.

use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Default)]
struct Served {
    keys: Vec<Value>,
    failing: bool,
    fetches: Vec<Instant>,
}

pub struct JwksPeer {
    pub port: u16,
    served: Arc<Mutex<Served>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksPeer {
    pub async fn start(keys: Vec<Value>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let served = Arc::new(Mutex::new(Served { keys, ..Served::default() }));
        let shared = served.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = answer(socket, shared).await;
                });
            }
        });
        Ok(Self { port, served, task })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/.well-known/jwks.json", self.port)
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        self.with(|s| s.keys = keys);
    }

    pub fn set_failing(&self, failing: bool) {
        self.with(|s| s.failing = failing);
    }

    /// When each fetch arrived, oldest first.
    pub fn fetches(&self) -> Vec<Instant> {
        self.with(|s| s.fetches.clone())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Served) -> T) -> T {
        f(&mut self.served.lock().expect("not poisoned"))
    }
}

impl Drop for JwksPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head and answers it, then closes the connection.
async fn answer(mut socket: tokio::net::TcpStream, served: Arc<Mutex<Served>>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body) = {
        let mut s = served.lock().map_err(|_| std::io::Error::other("poisoned"))?;
        s.fetches.push(Instant::now());
        if s.failing {
            ("500 Internal Server Error", "{}".to_owned())
        } else {
            ("200 OK", json!({ "keys": s.keys }).to_string())
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}
