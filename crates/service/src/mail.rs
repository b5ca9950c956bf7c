//! Email out through the configured SMTP server (`[smtp]`). The only module that knows lettre.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use confidant_core::config::{SmtpConfig, SmtpTls};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

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


/// The connections to the SMTP server: at most `[smtp] connections` at once, reused while
/// younger than [`IDLE`]. Our own pool rather than lettre's so that every socket has
/// `TCP_NODELAY`: lettre writes a message's body and its final `.` in two writes, and with
/// Nagle's algorithm on, the second waits for the server's delayed ACK, 40 ms a message on
/// Linux (BENCHMARKS.md measures lettre's own pool beside this one).
#[derive(Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    port: u16,
    tls: SmtpTls,
    credentials: Option<Credentials>,
    timeout: Duration,
    hello: ClientId,
    slots: Semaphore,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    from: Mailbox,
    domain: String,
}

/// A pooled connection unused for this long is closed rather than reused: servers drop idle
/// clients (Postfix after 300 s), and a write on a dropped connection would be a failure.
const IDLE: Duration = Duration::from_secs(30);

/// A TLS stream as lettre takes it (implicit TLS, port 465).
#[derive(Debug)]
struct Tls465(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for Tls465 {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tls465 {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Tls465 {
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// A lettre error as a failure, by its SMTP class; never the server's words (they may quote
/// the address).
fn failure(e: &lettre::transport::smtp::Error) -> SendFailure {
    let code = || e.status().map(|c| c.to_string());
    if e.is_permanent() {
        SendFailure::Refused(code().unwrap_or_else(|| "5xx".into()))
    } else if e.is_transient() {
        SendFailure::Transient(code().unwrap_or_else(|| "4xx".into()))
    } else if e.is_timeout() {
        SendFailure::Transient("timeout".into())
    } else {
        SendFailure::Transient("connection".into())
    }
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
        let credentials = match (&c.username, &c.password) {
            (Some(u), Some(p)) => Some(Credentials::new(u.clone(), p.clone())),
            _ => None,
        };
        let domain = from.email.domain().to_owned();
        Ok(Mailer {
            inner: Arc::new(Inner {
                host,
                port: c.port,
                tls: c.tls,
                credentials,
                timeout: Duration::from_secs(c.timeout_seconds),
                hello: ClientId::default(),
                slots: Semaphore::new(c.connections.max(1)),
                idle: Mutex::new(Vec::new()),
                from,
                domain,
            }),
        })
    }

    /// The domain of message ids (the sender's).
    pub fn domain(&self) -> &str {
        &self.inner.domain
    }

    /// A new connection: TCP with `TCP_NODELAY`, TLS as configured, greeting, EHLO, AUTH.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendFailure> {
        let i = &self.inner;
        let open = async {
            let tcp = TcpStream::connect((i.host.as_str(), i.port)).await.map_err(|_| SendFailure::Transient("connection".into()))?;
            tcp.set_nodelay(true).map_err(|_| SendFailure::Transient("connection".into()))?;
            let mut conn = match i.tls {
                SmtpTls::None | SmtpTls::Starttls => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &i.hello).await.map_err(|e| failure(&e))?,
                SmtpTls::Tls => {
                    let name = ServerName::try_from(i.host.clone()).map_err(|_| SendFailure::Transient("tls".into()))?;
                    let tls = tls_connector().connect(name, tcp).await.map_err(|_| SendFailure::Transient("tls".into()))?;
                    AsyncSmtpConnection::connect_with_transport(Box::new(Tls465(tls)), &i.hello).await.map_err(|e| failure(&e))?
                }
            };
            if i.tls == SmtpTls::Starttls {
                // Required, never opportunistic: a server that does not offer it is not used.
                let params = TlsParameters::new(i.host.clone()).map_err(|_| SendFailure::Transient("tls".into()))?;
                conn.starttls(params, &i.hello).await.map_err(|_| SendFailure::Transient("starttls".into()))?;
            }
            if let Some(creds) = &i.credentials {
                conn.auth(&[Mechanism::Plain, Mechanism::Login], creds).await.map_err(|e| failure(&e))?;
            }
            Ok(conn)
        };
        tokio::time::timeout(i.timeout, open).await.map_err(|_| SendFailure::Transient("timeout".into()))?
    }

    /// Hands one message to the server; returns once the server accepted it (250).
    pub async fn send(&self, m: &Outgoing) -> Result<(), SendFailure> {
        let i = &self.inner;
        let to: Mailbox = m.to.parse().map_err(|_| SendFailure::BadAddress)?;
        let mut b = Message::builder()
            .from(i.from.clone())
            .to(to)
            .subject(m.subject.clone())
            .message_id(Some(format!("<{}@{}>", m.message_id, i.domain)))
            .header(ContentType::TEXT_PLAIN);
        if let Some(url) = &m.unsubscribe_url {
            b = b
                .raw_header(HeaderValue::new(LIST_UNSUBSCRIBE, format!("<{url}>")))
                .raw_header(HeaderValue::new(LIST_UNSUBSCRIBE_POST, "List-Unsubscribe=One-Click".into()));
        }
        let message = b.body(m.body.clone()).map_err(|_| SendFailure::BadAddress)?;
        let _slot = i.slots.acquire().await.map_err(|_| SendFailure::Transient("closed".into()))?;
        let reused = {
            let mut idle = i.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|(c, at)| at.elapsed() < IDLE && !c.has_broken());
            idle.pop().map(|(c, _)| c)
        };
        let mut conn = match reused {
            Some(c) => c,
            None => self.connect().await?,
        };
        match tokio::time::timeout(i.timeout, conn.send(message.envelope(), &message.formatted())).await {
            Ok(Ok(_)) => {
                i.idle.lock().unwrap_or_else(|e| e.into_inner()).push((conn, Instant::now()));
                Ok(())
            }
            // lettre closes the connection after an error reply; a timed-out one is dropped.
            Ok(Err(e)) => Err(failure(&e)),
            Err(_) => Err(SendFailure::Transient("timeout".into())),
        }
    }
}

/// The rustls client of implicit TLS: the web PKI roots and ring, as lettre's STARTTLS path.
fn tls_connector() -> TlsConnector {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    });
    TlsConnector::from(config.clone())
}
