//! The console's accounts: the shop's team signs in with an email and a password (argon2id),
//! gets a session, and acts with the role of their account, audited under their name. An
//! admin key creates the first account (`POST /api/console/users`).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use confidant_core::config::Role;
use confidant_core::ids::Email;
use confidant_store::portal::{ConsoleUser, NewSession};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{App, Principal, ServiceError};

/// A signed-in member of the team.
#[derive(Clone, Debug)]
pub struct ConsoleSession {
    pub user: ConsoleUser,
    pub role: Role,
    /// The token the session's forms carry (see [`App::form_token`]).
    pub csrf: String,
}

impl ConsoleSession {
    pub fn principal(&self) -> Principal {
        Principal { name: self.user.name.clone(), role: self.role }
    }
}

/// Why a sign-in failed. The page says the same for an unknown email, a disabled account and
/// a wrong password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInProblem {
    Wrong,
    Locked,
}

fn role_of(s: &str) -> Option<Role> {
    match s {
        "analyst" => Some(Role::Analyst),
        "marketer" => Some(Role::Marketer),
        "admin" => Some(Role::Admin),
        "dpo" => Some(Role::Dpo),
        _ => None,
    }
}

fn invalid(code: &'static str, message: &str) -> ServiceError {
    ServiceError::Invalid { code, message: message.into() }
}

/// A hash to verify against when the account does not exist, so that the time taken does
/// not say whether an email has an account.
fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password for unknown accounts").unwrap_or_default())
}

fn hash_password(password: &str) -> Result<String, ServiceError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|_| invalid("internal", "salt"))?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| invalid("internal", "password hashing failed"))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

impl App {
    /// Creates a console account; the password is at least 12 characters.
    pub async fn console_create_user(&self, email: &str, name: &str, role: &str, password: &str, by: &Principal) -> Result<ConsoleUser, ServiceError> {
        let email = Email::parse(email.trim()).map_err(|_| invalid("invalid_email", "email is not an email address"))?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(invalid("invalid_name", "name must be 1 to 100 printable characters"));
        }
        if role_of(role).is_none() {
            return Err(invalid("invalid_role", "role must be analyst, marketer, admin or dpo"));
        }
        let n = password.chars().count();
        if !(12..=256).contains(&n) {
            return Err(invalid("weak_password", "the password must be 12 to 256 characters"));
        }
        let password = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(|_| invalid("internal", "hashing"))??;
        let user = self.store().console_user_create(email.as_str().to_owned(), name.to_owned(), role.to_owned(), hash, by.actor()).await?;
        self.audit(&by.actor(), "console.user_created", None, json!({"user": user.id, "role": role})).await?;
        Ok(user)
    }

    /// Disables an account at once: its sessions end and it can no longer sign in.
    pub async fn console_disable_user(&self, id: i64, by: &Principal) -> Result<(), ServiceError> {
        self.store().console_user_disable(id).await?;
        self.audit(&by.actor(), "console.user_disabled", None, json!({"user": id})).await
    }

    pub async fn console_users(&self) -> Result<Vec<ConsoleUser>, ServiceError> {
        Ok(self.store().console_users().await?)
    }

    /// Checks an email and password; on success, the session's cookie value.
    pub async fn console_sign_in(&self, email: &str, password: &str) -> Result<Result<String, SignInProblem>, ServiceError> {
        let user = match Email::parse(email.trim()) {
            Ok(e) => self.store().console_user_by_email(e.as_str().to_owned()).await?,
            Err(_) => None,
        };
        let now = crate::now_millis();
        let locked = user.as_ref().is_some_and(|u| u.locked_until.is_some_and(|t| t > now));
        let hash = user.as_ref().filter(|u| u.disabled_at.is_none()).map(|u| u.password_hash.clone()).unwrap_or_else(|| decoy().to_owned());
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.map_err(|_| invalid("internal", "verification"))?;
        let Some(user) = user.filter(|u| u.disabled_at.is_none()) else {
            self.audit("console", "console.sign_in_failed", None, json!({"reason": "unknown_account"})).await?;
            return Ok(Err(SignInProblem::Wrong));
        };
        let c = &self.config().console;
        if locked {
            self.audit("console", "console.sign_in_failed", None, json!({"user": user.id, "reason": "locked"})).await?;
            return Ok(Err(SignInProblem::Locked));
        }
        if !ok {
            let lock_until = now + i64::from(c.lock_minutes) * 60_000;
            self.store().console_login(user.id, None, i64::from(c.max_failed_logins), lock_until).await?;
            let now_locked = user.failed_logins + 1 >= i64::from(c.max_failed_logins);
            self.audit("console", "console.sign_in_failed", None, json!({"user": user.id, "reason": "wrong_password", "locked": now_locked})).await?;
            return Ok(Err(if now_locked { SignInProblem::Locked } else { SignInProblem::Wrong }));
        }
        let token = self.random_token();
        let session = NewSession {
            token_hash: Sha256::digest(token.as_bytes()).to_vec(),
            csrf: self.random_token(),
            expires_at: now + i64::from(c.session_minutes) * 60_000,
        };
        self.store().console_login(user.id, Some(session), 0, 0).await?;
        self.audit(&format!("{}:{}", user.role, user.name), "console.signed_in", None, json!({"user": user.id})).await?;
        Ok(Ok(token))
    }

    /// The live session of a cookie value, for an enabled account.
    pub async fn console_session(&self, token: &str) -> Result<Option<ConsoleSession>, ServiceError> {
        if token.is_empty() || token.len() > 100 {
            return Ok(None);
        }
        let Some(s) = self.store().console_session(Sha256::digest(token.as_bytes()).to_vec()).await? else { return Ok(None) };
        let Some(role) = role_of(&s.user.role) else { return Ok(None) };
        Ok(Some(ConsoleSession { user: s.user, role, csrf: s.csrf }))
    }

    pub async fn console_sign_out(&self, token: &str) -> Result<(), ServiceError> {
        if let Some(s) = self.console_session(token).await? {
            self.store().console_session_end(Sha256::digest(token.as_bytes()).to_vec()).await?;
            self.audit(&s.principal().actor(), "console.signed_out", None, json!({})).await?;
        }
        Ok(())
    }
}
