//! Types of the web pages' accounts: the privacy centre's one-time codes and sessions, and the
//! console's accounts and sessions.

use confidant_core::ids::ProfileId;

/// A code to store (its hash only).
#[derive(Clone, Debug)]
pub struct NewCode {
    /// 16 random bytes: the key the browser holds while the person types the code.
    pub id: Vec<u8>,
    pub profile: ProfileId,
    pub email: String,
    pub code_hash: Vec<u8>,
    pub expires_at: i64,
}

/// A session to open when a code is redeemed.
#[derive(Clone, Debug)]
pub struct NewSession {
    /// SHA-256 of the cookie's value.
    pub token_hash: Vec<u8>,
    pub csrf: String,
    pub expires_at: i64,
}

/// What redeeming a code came to. Only `Opened` changes more than the attempt count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redeemed {
    Opened { profile: ProfileId },
    /// The code was wrong; `left` attempts remain.
    Wrong { profile: ProfileId, left: u32 },
    /// Every attempt was used: the code is burnt.
    TooMany { profile: ProfileId },
    Expired { profile: ProfileId },
    Used { profile: ProfileId },
    /// No such code (never issued, swept, or erased with its subject).
    Unknown,
}

/// A live session.
#[derive(Clone, Debug)]
pub struct SessionView {
    pub profile: ProfileId,
    pub email: String,
    pub csrf: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// An account of the console (the shop's team).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConsoleUser {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub role: String,
    #[serde(skip)]
    pub password_hash: String,
    pub created_at: i64,
    pub created_by: String,
    pub disabled_at: Option<i64>,
    #[serde(skip)]
    pub failed_logins: i64,
    #[serde(skip)]
    pub locked_until: Option<i64>,
}

/// A live console session and its account.
#[derive(Clone, Debug)]
pub struct ConsoleSessionView {
    pub user: ConsoleUser,
    pub csrf: String,
    pub expires_at: i64,
}
