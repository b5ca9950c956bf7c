//! The privacy centre's sign-in: one-time codes sent by email, the sessions they open, and the
//! form tokens (CSRF) of its pages. What a signed-in customer then does goes through the same
//! methods as the rights desk (`dsr`, `record_consent`), as the subject themselves.
//!
//! Nothing here says whether an address is known: a request for a code gets the same answer,
//! and the same kind of pending id, either way; the email (only to a known address) leaves
//! from a task of its own so that the answer's timing says nothing either.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use confidant_core::config::Role;
use confidant_core::ids::{Email, Identifier, ProfileId};
use confidant_store::portal::{NewCode, NewSession, Redeemed};
use hmac::Mac;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::mail::{Mailer, Outgoing};
use crate::{App, Principal, ServiceError};

type HmacSha256 = hmac::Hmac<Sha256>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// In-memory state: code requests per IP address, and the mailer.
#[derive(Default)]
pub(crate) struct PortalState {
    per_ip: Mutex<HashMap<IpAddr, (i64, u32)>>,
    mailer: OnceLock<Option<Mailer>>,
}

/// A signed-in customer.
#[derive(Clone, Debug)]
pub struct PortalSession {
    pub profile: ProfileId,
    /// The address they proved.
    pub email: Email,
    /// The token the session's forms carry.
    pub csrf: String,
    pub expires_at: i64,
}

impl PortalSession {
    /// How the audit log and the rights desk name them.
    pub fn principal(&self) -> Principal {
        Principal { name: "privacy-centre".into(), role: Role::Subject }
    }

    pub fn identifier(&self) -> Identifier {
        Identifier::email(&self.email)
    }
}

/// Why a code did not open a session. Pages say the same thing for `Wrong`, `Expired`, `Used`
/// and `Unknown` apart from what helps the person (attempts left, ask for a new code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeProblem {
    Wrong { left: u32 },
    TooMany,
    Expired,
    Used,
    Unknown,
    Malformed,
}

impl CodeProblem {
    pub fn code(self) -> &'static str {
        match self {
            CodeProblem::Wrong { .. } => "wrong_code",
            CodeProblem::TooMany => "too_many_attempts",
            CodeProblem::Expired => "expired_code",
            CodeProblem::Used => "used_code",
            CodeProblem::Unknown => "unknown_code",
            CodeProblem::Malformed => "malformed_code",
        }
    }
}

fn sha256(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

fn random_token() -> String {
    B64.encode(rand::random::<[u8; 32]>())
}

impl App {
    fn portal_mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.portal_key()).expect("any key length");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac
    }

    /// The form token of a page: bound to the session's own csrf value when signed in (the
    /// privacy centre's or the console's), to the browser's pre-session cookie otherwise
    /// (signed double submit).
    pub fn form_token(&self, context: &str) -> String {
        B64.encode(self.portal_mac(&[b"form", context.as_bytes()]).finalize().into_bytes())
    }

    /// A random token (256 bits, base64url) for a cookie or a session's form value.
    pub fn random_token(&self) -> String {
        random_token()
    }

    /// Whether `token` is the form token of `context` (constant time).
    pub fn form_token_ok(&self, context: &str, token: &str) -> bool {
        let Ok(raw) = B64.decode(token.as_bytes()) else { return false };
        self.portal_mac(&[b"form", context.as_bytes()]).verify_slice(&raw).is_ok()
    }

    fn portal_ip_allowed(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return true };
        let c = &self.config().privacy_centre;
        let window = i64::from(c.window_minutes) * 60_000;
        let now = crate::now_millis();
        let mut map = self.portal_state().per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| now - *start < window);
        }
        let e = map.entry(ip).or_insert((now, 0));
        if now - e.0 >= window {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= c.requests_per_ip
    }

    /// A customer asks for a sign-in code. Returns the pending id the browser keeps while the
    /// person types the code, whether the address is known or not; the code goes by email only
    /// to a known, unerased address, at most `codes_per_window` times per window.
    pub async fn portal_request_code(&self, email: &str, ip: Option<IpAddr>, language: &str) -> Result<String, ServiceError> {
        let email = Email::parse(email.trim()).map_err(|_| ServiceError::Invalid { code: "invalid_email", message: "this is not an email address".into() })?;
        if !self.portal_ip_allowed(ip) {
            self.audit("subject:privacy-centre", "privacy_centre.code_refused", None, json!({"reason": "rate_limited_ip"})).await?;
            return Err(ServiceError::Invalid { code: "rate_limited", message: "too many requests from this address; try again later".into() });
        }
        let pending: [u8; 16] = rand::random();
        let pending_text = B64.encode(pending);
        let subject = self.resolve(&Identifier::email(&email)).await?;
        let Some(profile) = subject else {
            self.audit("subject:privacy-centre", "privacy_centre.code_requested", None, json!({"known": false})).await?;
            return Ok(pending_text);
        };
        let c = &self.config().privacy_centre;
        let code = format!("{:06}", rand::random::<u32>() % 1_000_000);
        let hash = self.portal_mac(&[b"code", &pending, code.as_bytes()]).finalize().into_bytes().to_vec();
        let now = crate::now_millis();
        let new = NewCode { id: pending.to_vec(), profile: profile.id, email: email.as_str().to_owned(), code_hash: hash, expires_at: now + i64::from(c.code_minutes) * 60_000 };
        let since = now - i64::from(c.window_minutes) * 60_000;
        let stored = self.store().portal_code_issue(new, c.codes_per_window, since).await?;
        self.audit("subject:privacy-centre", "privacy_centre.code_requested", Some(profile.id), json!({"known": true, "sent": stored})).await?;
        if stored {
            self.portal_send_code(email, code, language);
        }
        Ok(pending_text)
    }

    fn portal_send_code(&self, email: Email, code: String, language: &str) {
        let mailer = self.portal_state().mailer.get_or_init(|| Mailer::new(&self.config().smtp).ok()).clone();
        let Some(mailer) = mailer else {
            tracing::error!("a privacy-centre code could not be sent: no SMTP server is configured ([smtp] host)");
            return;
        };
        let shop = self.policy().config().controller.name.clone();
        let minutes = self.config().privacy_centre.code_minutes;
        let (subject, body) = if language == "en" {
            (
                format!("{shop}: your sign-in code {code}"),
                format!("Your code to sign in to {shop}'s privacy centre: {code}\n\nIt is valid for {minutes} minutes and can be used once.\nIf you did not ask for it, ignore this message: nothing happens without the code.\n"),
            )
        } else {
            (
                format!("{shop} : votre code de connexion {code}"),
                format!("Votre code pour accéder à l'espace confidentialité de {shop} : {code}\n\nIl est valable {minutes} minutes, une seule fois.\nSi vous ne l'avez pas demandé, ignorez ce message : rien ne se passe sans le code.\n"),
            )
        };
        let out = Outgoing { to: email.as_str().to_owned(), subject, body, message_id: hex::encode(rand::random::<[u8; 16]>()), unsubscribe_url: None };
        tokio::spawn(async move {
            if let Err(f) = mailer.send(&out).await {
                tracing::warn!(failure = %f.code(), "a privacy-centre code could not be handed to the SMTP server");
            }
        });
    }

    /// Redeems a code typed by the person: on success, the session's cookie value.
    pub async fn portal_redeem(&self, pending: &str, code: &str) -> Result<Result<String, CodeProblem>, ServiceError> {
        let code = code.trim().replace(' ', "");
        let Ok(pending) = B64.decode(pending.as_bytes()) else { return Ok(Err(CodeProblem::Unknown)) };
        if pending.len() != 16 {
            return Ok(Err(CodeProblem::Unknown));
        }
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Err(CodeProblem::Malformed));
        }
        let expected = self.portal_mac(&[b"code", &pending, code.as_bytes()]);
        let matches: Box<dyn Fn(&[u8]) -> bool + Send> = Box::new(move |stored: &[u8]| expected.clone().verify_slice(stored).is_ok());
        let token = random_token();
        let minutes = i64::from(self.config().privacy_centre.session_minutes);
        let session = NewSession { token_hash: sha256(token.as_bytes()), csrf: random_token(), expires_at: crate::now_millis() + minutes * 60_000 };
        let attempts = self.config().privacy_centre.code_attempts;
        let outcome = self.store().portal_code_redeem(pending, matches, session, attempts).await?;
        let (subject, result) = match outcome {
            Redeemed::Opened { profile } => (Some(profile), Ok(token)),
            Redeemed::Wrong { profile, left } => (Some(profile), Err(CodeProblem::Wrong { left })),
            Redeemed::TooMany { profile } => (Some(profile), Err(CodeProblem::TooMany)),
            Redeemed::Expired { profile } => (Some(profile), Err(CodeProblem::Expired)),
            Redeemed::Used { profile } => (Some(profile), Err(CodeProblem::Used)),
            Redeemed::Unknown => (None, Err(CodeProblem::Unknown)),
        };
        match &result {
            Ok(_) => self.audit("subject:privacy-centre", "privacy_centre.signed_in", subject, json!({})).await?,
            Err(p) => self.audit("subject:privacy-centre", "privacy_centre.sign_in_failed", subject, json!({"reason": p.code()})).await?,
        }
        Ok(result)
    }

    /// The live session of a cookie value; `None` for an unknown, expired or ended one, or
    /// one whose subject was erased since.
    pub async fn portal_session(&self, token: &str) -> Result<Option<PortalSession>, ServiceError> {
        if token.is_empty() || token.len() > 100 {
            return Ok(None);
        }
        let Some(s) = self.store().portal_session(sha256(token.as_bytes())).await? else { return Ok(None) };
        let Ok(email) = Email::parse(&s.email) else { return Ok(None) };
        // The person is whoever the proven address points at now (merges move it).
        let Some(p) = self.resolve(&Identifier::email(&email)).await? else { return Ok(None) };
        Ok(Some(PortalSession { profile: p.id, email, csrf: s.csrf, expires_at: s.expires_at }))
    }

    pub async fn portal_sign_out(&self, token: &str) -> Result<(), ServiceError> {
        if let Some(s) = self.portal_session(token).await? {
            self.store().portal_session_end(sha256(token.as_bytes())).await?;
            self.audit("subject:privacy-centre", "privacy_centre.signed_out", Some(s.profile), json!({})).await?;
        }
        Ok(())
    }
}
