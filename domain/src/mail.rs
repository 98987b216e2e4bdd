//! Email behind a small trait ([`Mailer`]): SMTP through lettre when `SMTP_HOST` is set, `.eml`
//! files under `MAIL_DIR` otherwise.
//!
//! [`send_once`] is how job steps send mail: it records the mail under the step's idempotency
//! key *before* sending and marks it sent after, so a retried step skips a mail already sent.
//! If a worker dies between the SMTP server's "250 OK" and the "sent" mark, the retry sends it
//! again with the same `Message-ID`, which mail systems use to drop duplicates — the only
//! exactly-once SMTP allows.

use crate::config::{MailSettings, SmtpTls};
use crate::external::ExternalError;
use crate::{Result, TenantId};
use async_trait::async_trait;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::PgPool;

#[derive(Debug, Clone)]
pub struct OutgoingMail {
    pub to: String,
    pub subject: String,
    pub text: String,
    /// Without angle brackets, e.g. `welcome.<job id>@tenant-service`.
    pub message_id: String,
}

#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), ExternalError>;
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

pub struct LettreMailer {
    from: Mailbox,
    transport: Transport,
}

impl LettreMailer {
    pub fn new(settings: &MailSettings) -> anyhow::Result<Self> {
        let from: Mailbox = settings.from.parse().map_err(|e| anyhow::anyhow!("SMTP_FROM: {e}"))?;
        let transport = match &settings.smtp {
            Some(smtp) => {
                let mut builder = match smtp.tls {
                    SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
                    SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?,
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
                }
                .port(smtp.port)
                .timeout(Some(std::time::Duration::from_secs(20)));
                if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
                    builder = builder.credentials(Credentials::new(user.clone(), password.expose().clone()));
                }
                Transport::Smtp(builder.build())
            }
            None => {
                std::fs::create_dir_all(&settings.dir)
                    .map_err(|e| anyhow::anyhow!("MAIL_DIR {:?}: {e}", settings.dir))?;
                Transport::File(AsyncFileTransport::new(&settings.dir))
            }
        };
        Ok(Self { from, transport })
    }
}

#[async_trait]
impl Mailer for LettreMailer {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), ExternalError> {
        let to: Mailbox =
            mail.to.parse().map_err(|e| ExternalError::Permanent(format!("bad recipient {:?}: {e}", mail.to)))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&mail.subject)
            .message_id(Some(format!("<{}>", mail.message_id)))
            .header(ContentType::TEXT_PLAIN)
            .body(mail.text.clone())
            .map_err(|e| ExternalError::Permanent(format!("could not build the message: {e}")))?;
        match &self.transport {
            Transport::Smtp(smtp) => smtp.send(message).await.map(|_| ()).map_err(|e| {
                if e.is_permanent() {
                    ExternalError::Permanent(format!("SMTP refused the message: {e}"))
                } else {
                    ExternalError::Transient(format!("SMTP: {e}"))
                }
            }),
            Transport::File(file) => {
                file.send(message).await.map(|_| ()).map_err(|e| ExternalError::Transient(format!("mail file: {e}")))
            }
        }
    }
}

/// What [`send_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Now,
    Already,
}

/// Sends `mail` unless the mail recorded under `idempotency_key` was already sent.
pub async fn send_once(
    db: &PgPool,
    mailer: &dyn Mailer,
    idempotency_key: &str,
    tenant: Option<TenantId>,
    kind: &str,
    mail: &OutgoingMail,
) -> Result<Sent, MailError> {
    let status: Option<String> = sqlx::query_scalar(
        "insert into sent_emails (idempotency_key, tenant_id, kind, recipient, message_id, status) \
         values ($1, $2, $3, $4, $5, 'sending') \
         on conflict (idempotency_key) do update set attempts = sent_emails.attempts + 1 \
         returning status",
    )
    .bind(idempotency_key)
    .bind(tenant)
    .bind(kind)
    .bind(&mail.to)
    .bind(&mail.message_id)
    .fetch_optional(db)
    .await?;
    if status.as_deref() == Some("sent") {
        return Ok(Sent::Already);
    }
    mailer.send(mail).await?;
    sqlx::query("update sent_emails set status = 'sent', sent_at = now() where idempotency_key = $1")
        .bind(idempotency_key)
        .execute(db)
        .await?;
    Ok(Sent::Now)
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error(transparent)]
    External(#[from] ExternalError),
    #[error("mail record: {0}")]
    Store(#[from] sqlx::Error),
}
