//! A small SMTP server that accepts every mail and keeps it, for tests that check what the
//! service sent through its real SMTP client (lettre). It can be slow, like a loaded mail server,
//! which widens the window in which a test can kill a worker mid-saga: slow to accept recipients
//! ([`Slow::Recipients`]: a mail interrupted there was never received) or slow to confirm a mail
//! it has already received ([`Slow::Confirm`]: the one window in which SMTP itself can't avoid a
//! duplicate).

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub data: String,
}

#[derive(Debug, Clone, Copy)]
pub enum Slow {
    No,
    Recipients(Duration),
    Confirm(Duration),
}

pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start(slow: Slow) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let store = mails.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = session(socket, store, slow).await;
                });
            }
        });
        Ok(Self { port, mails, task })
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn header(data: &str, name: &str) -> Option<String> {
    data.lines().take_while(|l| !l.is_empty()).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}

async fn session(socket: tokio::net::TcpStream, store: Arc<Mutex<Vec<Mail>>>, slow: Slow) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut to = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write.write_all(b"250-sink\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("MAIL FROM") {
            to.clear();
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO") {
            let addr =
                line.split_once(':').map(|(_, a)| a.trim().trim_matches(['<', '>']).to_owned()).unwrap_or_default();
            to.push(addr);
            if let Slow::Recipients(delay) = slow {
                tokio::time::sleep(delay).await;
            }
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("DATA") {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            while let Some(l) = lines.next_line().await? {
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                data.push('\n');
            }
            let mail = Mail {
                to: std::mem::take(&mut to),
                message_id: header(&data, "Message-ID"),
                subject: header(&data, "Subject"),
                data,
            };
            if let Ok(mut mails) = store.lock() {
                mails.push(mail);
            }
            if let Slow::Confirm(delay) = slow {
                tokio::time::sleep(delay).await;
            }
            write.write_all(b"250 OK queued\r\n").await?;
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"250 OK\r\n").await?;
        }
    }
    Ok(())
}
