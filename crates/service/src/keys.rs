//! The master key: from `CONFIDANT_MASTER_KEY` (64 hex digits), else from
//! `security.master_key_file` (default `<data_dir>/master.key`), created with mode 0600 on
//! first start. Keys derived from it: the tombstone key (keyed hashes of erased identifiers).

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use confidant_core::config::Config;

pub const MASTER_KEY_ENV: &str = "CONFIDANT_MASTER_KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{MASTER_KEY_ENV} must be 64 hexadecimal digits (32 bytes)")]
    BadEnv,
    #[error("the master key file {path} must hold 64 hexadecimal digits")]
    BadFile { path: PathBuf },
    #[error("cannot read or create the master key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The master key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<secret>)")
    }
}

impl MasterKey {
    pub fn from_bytes(b: [u8; 32]) -> MasterKey {
        MasterKey(b)
    }

    /// Loads the key as the configuration says, creating the file if it does not exist.
    pub fn load(config: &Config) -> Result<MasterKey, KeyError> {
        if let Ok(v) = std::env::var(MASTER_KEY_ENV) {
            return parse_hex(v.trim()).map(MasterKey).ok_or(KeyError::BadEnv);
        }
        let path = config.security.master_key_file.clone().unwrap_or_else(|| config.data_dir.join("master.key"));
        Self::load_file(&path)
    }

    fn load_file(path: &Path) -> Result<MasterKey, KeyError> {
        let io = |source| KeyError::Io { path: path.to_owned(), source };
        match std::fs::read_to_string(path) {
            Ok(text) => parse_hex(text.trim()).map(MasterKey).ok_or_else(|| KeyError::BadFile { path: path.to_owned() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut f = options.open(path).map_err(io)?;
                f.write_all(format!("{}\n", hex::encode(key)).as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(MasterKey(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A key for one use, derived from the master key.
    fn derive(&self, label: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"confidant key derivation v1\0");
        h.update(label.as_bytes());
        h.update(self.0);
        h.finalize().into()
    }

    /// The key of tombstone hashes and subject references.
    pub fn tombstone_key(&self) -> [u8; 32] {
        self.derive("tombstone")
    }

    /// Signs the unsubscribe links of emails.
    pub fn unsubscribe_key(&self) -> [u8; 32] {
        self.derive("unsubscribe")
    }

    /// Signs the privacy centre's sign-in codes and form tokens.
    pub fn portal_key(&self) -> [u8; 32] {
        self.derive("portal")
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}
