//! Hash chains, for the audit log and the consent ledger.
//!
//! Each entry has a content digest (SHA-256 of its canonical content) and a hash linking it
//! to the one before: `hash = SHA-256(prev_hash || seq || digest)`. Changing an entry changes
//! its digest; removing or reordering entries breaks the links. Where an entry's content must
//! later be erased (a consent receipt names its subject), the digest is taken over a random
//! salt kept beside the content and erased with it, so the digest left behind cannot be
//! confirmed by guessing the content, and the chain still verifies.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

pub fn digest(content: &[u8]) -> [u8; 32] {
    Sha256::digest(content).into()
}

/// The digest of salted content (see the module documentation).
pub fn salted_digest(salt: &[u8], content: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((salt.len() as u64).to_be_bytes());
    h.update(salt);
    h.update(content);
    h.finalize().into()
}

/// A keyed hash of an identifier (HMAC-SHA256), for tombstones: it lets an erasure be
/// re-applied and collection be refused without keeping the identifier.
pub fn identifier_hash(key: &[u8; 32], kind: crate::ids::IdKind, value: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(kind.as_str().as_bytes());
    mac.update(&[0]);
    mac.update(value.as_bytes());
    mac.finalize().into_bytes().into()
}

pub fn link(prev: &[u8; 32], seq: i64, digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(digest);
    h.finalize().into()
}

/// One stored entry as the verifier sees it. `content_digest` is recomputed from the stored
/// content by the caller when the content is still there, so that an edited field shows.
pub struct Link {
    pub seq: i64,
    pub content_digest: [u8; 32],
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// Where and how a chain is broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("entry {seq} was modified: its content no longer matches its hash")]
    Modified { seq: i64 },
    #[error("the chain is broken before entry {seq}: an entry was removed or the entries were reordered")]
    Unlinked { seq: i64 },
    #[error("entry {seq} is out of sequence after entry {after}: entries were removed or reordered")]
    OutOfSequence { seq: i64, after: i64 },
}

/// The result of a verification: entries checked and the hash of the last one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    pub head: [u8; 32],
}

/// Checks a chain in storage order.
pub fn verify(links: impl IntoIterator<Item = Link>) -> Result<Verified, ChainBreak> {
    let mut prev = GENESIS;
    let mut last_seq: Option<i64> = None;
    let mut n = 0;
    for l in links {
        if let Some(s) = last_seq {
            if l.seq != s + 1 {
                return Err(ChainBreak::OutOfSequence { seq: l.seq, after: s });
            }
        }
        if l.prev_hash != prev {
            return Err(ChainBreak::Unlinked { seq: l.seq });
        }
        if link(&l.prev_hash, l.seq, &l.content_digest) != l.hash {
            return Err(ChainBreak::Modified { seq: l.seq });
        }
        prev = l.hash;
        last_seq = Some(l.seq);
        n += 1;
    }
    Ok(Verified { entries: n, head: prev })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(contents: &[&str]) -> Vec<Link> {
        let mut prev = GENESIS;
        contents
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let d = digest(c.as_bytes());
                let seq = i as i64 + 1;
                let hash = link(&prev, seq, &d);
                let l = Link { seq, content_digest: d, prev_hash: prev, hash };
                prev = hash;
                l
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_any_change_is_detected() {
        assert_eq!(verify(chain(&["a", "b", "c"])).unwrap().entries, 3);
        let mut modified = chain(&["a", "b", "c"]);
        modified[1].content_digest = digest(b"B");
        assert_eq!(verify(modified).unwrap_err(), ChainBreak::Modified { seq: 2 });
        let mut removed = chain(&["a", "b", "c"]);
        removed.remove(1);
        assert!(matches!(verify(removed).unwrap_err(), ChainBreak::OutOfSequence { seq: 3, after: 1 }));
        let mut first_removed = chain(&["a", "b", "c"]);
        first_removed.remove(0);
        assert_eq!(verify(first_removed).unwrap_err(), ChainBreak::Unlinked { seq: 2 });
        let mut swapped = chain(&["a", "b", "c"]);
        swapped.swap(1, 2);
        assert!(verify(swapped).is_err());
    }

    #[test]
    fn salted_digests_hide_the_content() {
        assert_ne!(salted_digest(b"salt1", b"x"), salted_digest(b"salt2", b"x"));
    }
}
