//! Email out through the configured SMTP server (`[smtp]`). The only module that knows lettre.

use std::time::Duration;

use confidant_core::config::{SmtpConfig, SmtpTls};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::ServiceError;

/// One message to hand over.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub to: String,
    pub subject: String,
    pub body: String,
    /// Without angle brackets: `<id>` is added.
    pub message_id: String,
    /// RFC 8058: the `https`/`http` link the one-click POST goes to.
    pub unsubscribe_url: Option<String>,
}

/// Why a message was not handed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendFailure {
    /// The server refused this message for good (5xx): another attempt would fail alike.
    Refused(String),
    /// The server deferred it (4xx), or the connection failed or timed out: it may be tried again.
    Transient(String),
    /// The address cannot be written as a mailbox.
    BadAddress,
}

impl SendFailure {
    pub fn code(&self) -> String {
        match self {
            SendFailure::Refused(m) => format!("refused: {m}"),
            SendFailure::Transient(m) => format!("transient: {m}"),
            SendFailure::BadAddress => "invalid_address".into(),
        }
    }
}

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    domain: String,
}

const LIST_UNSUBSCRIBE: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe");
const LIST_UNSUBSCRIBE_POST: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe-Post");

impl Mailer {
    /// The mailer of the configuration; an error when `[smtp] host` is not set.
    pub fn new(c: &SmtpConfig) -> Result<Mailer, ServiceError> {
        let host = c.host.clone().ok_or_else(|| ServiceError::Invalid {
            code: "smtp_not_configured",
            message: "no SMTP server is configured: set [smtp] host and from".into(),
        })?;
        let from: Mailbox = c.from.parse().map_err(|_| ServiceError::Invalid { code: "smtp_not_configured", message: "smtp.from is not a mailbox".into() })?;
        let tls = match c.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls | SmtpTls::Tls => {
                let params = TlsParameters::new(host.clone())
                    .map_err(|e| ServiceError::Invalid { code: "smtp_tls", message: format!("cannot set up TLS for the SMTP server: {e}") })?;
                if c.tls == SmtpTls::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(c.port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(c.timeout_seconds)))
            .pool_config(PoolConfig::new().max_size(c.connections as u32).idle_timeout(Duration::from_secs(30)));
        if let (Some(u), Some(p)) = (&c.username, &c.password) {
            b = b.credentials(Credentials::new(u.clone(), p.clone()));
        }
        let domain = from.email.domain().to_owned();
        Ok(Mailer { transport: b.build(), from, domain })
    }

    /// The domain of message ids (the sender's).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Hands one message to the server; returns once the server accepted it (250).
    pub async fn send(&self, m: &Outgoing) -> Result<(), SendFailure> {
        let to: Mailbox = m.to.parse().map_err(|_| SendFailure::BadAddress)?;
        let mut b = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(m.subject.clone())
            .message_id(Some(format!("<{}@{}>", m.message_id, self.domain)))
            .header(ContentType::TEXT_PLAIN);
        if let Some(url) = &m.unsubscribe_url {
            b = b
                .raw_header(HeaderValue::new(LIST_UNSUBSCRIBE, format!("<{url}>")))
                .raw_header(HeaderValue::new(LIST_UNSUBSCRIBE_POST, "List-Unsubscribe=One-Click".into()));
        }
        let message = b.body(m.body.clone()).map_err(|_| SendFailure::BadAddress)?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendFailure::Refused(e.status().map(|c| c.to_string()).unwrap_or_else(|| "5xx".into()))),
            Err(e) if e.is_transient() => Err(SendFailure::Transient(e.status().map(|c| c.to_string()).unwrap_or_else(|| "4xx".into()))),
            Err(e) if e.is_timeout() => Err(SendFailure::Transient("timeout".into())),
            // Never the error's text: it may quote the address.
            Err(_) => Err(SendFailure::Transient("connection".into())),
        }
    }
}
