//! Encryption at rest: AES-256-GCM under per-subject data keys, themselves wrapped (encrypted)
//! by the master key. Erasing a subject deletes its wrapped key, so that any copy of its
//! ciphertext left anywhere (a backup) can never be read again (crypto-shredding).
//!
//! Pure functions: the caller supplies the random nonces and keys (this crate does no IO).

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};

pub const NONCE_LEN: usize = 12;
/// Marks an encrypted JSON value: `{"$enc": "<base64 of nonce || ciphertext || tag>"}`.
pub const ENC_KEY: &str = "$enc";

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the ciphertext is malformed or was not made with this key (authentication failed)")]
    Decrypt,
}

/// Encrypts `plaintext` bound to `aad`; returns nonce || ciphertext || tag.
pub fn seal(key: &[u8; 32], nonce: [u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.into());
    let ct = cipher.encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad }).expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(CryptoError::Decrypt);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    Aes256Gcm::new(key.into()).decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad }).map_err(|_| CryptoError::Decrypt)
}

/// The associated data binding a subject's key to the subject.
pub fn key_aad(profile: i64) -> Vec<u8> {
    let mut a = b"confidant subject key v1:".to_vec();
    a.extend_from_slice(&profile.to_be_bytes());
    a
}

/// The associated data binding a value to the subject it belongs to.
pub fn value_aad(profile: i64) -> Vec<u8> {
    let mut a = b"confidant value v1:".to_vec();
    a.extend_from_slice(&profile.to_be_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_subject() {
        let key = [7u8; 32];
        let s = seal(&key, [1; 12], &value_aad(42), b"\"1987-03-14\"");
        assert!(!s.windows(10).any(|w| w == b"1987-03-14"));
        assert_eq!(open(&key, &value_aad(42), &s).unwrap(), b"\"1987-03-14\"");
        assert_eq!(open(&[8u8; 32], &value_aad(42), &s), Err(CryptoError::Decrypt));
        assert_eq!(open(&key, &value_aad(43), &s), Err(CryptoError::Decrypt), "moved to another subject");
        assert_eq!(open(&key, &value_aad(42), &s[..10]), Err(CryptoError::Decrypt));
    }
}
