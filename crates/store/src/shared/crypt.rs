//! Encryption at rest inside the store: per-subject data keys, wrapped by the master key in
//! `subject_keys`; sensitive values stored as `{"$enc": "<base64>", "$key": "<profile>"}`,
//! where `$key` names the profile whose key sealed it (the profile the row was written to).

use std::collections::HashMap;

use base64::Engine;
use confidant_core::crypto::{self, ENC_KEY};
use confidant_core::ids::ProfileId;
use crate::sql::{params, Conn as Connection, OptionalExtension};
use serde_json::Value;

use crate::{Result, StoreError};

const KEY_OWNER: &str = "$key";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The subject's data key, created on first use (writer side).
pub(super) fn subject_key(conn: &Connection, master: &[u8; 32], profile: i64) -> Result<[u8; 32]> {
    if let Some(k) = existing_key(conn, master, profile)? {
        return Ok(k);
    }
    let (key, wrapped) = new_key(master, profile);
    conn.prepare_cached("INSERT INTO subject_keys(profile_id, wrapped, created_at) VALUES (?1, ?2, ?3)")?.execute(params![profile, wrapped, super::now_millis()])?;
    Ok(key)
}

/// The subject's data key if it still exists (it does not after an erasure).
pub(super) fn existing_key(conn: &Connection, master: &[u8; 32], profile: i64) -> Result<Option<[u8; 32]>> {
    let wrapped: Option<Vec<u8>> = conn.prepare_cached("SELECT wrapped FROM subject_keys WHERE profile_id = ?1")?.query_row([profile], |r| r.get(0)).optional()?;
    wrapped.map(|w| unwrap_key(master, profile, &w)).transpose()
}

/// A new data key for a subject, and the same wrapped by the master key (as stored).
pub(crate) fn new_key(master: &[u8; 32], profile: i64) -> ([u8; 32], Vec<u8>) {
    let key: [u8; 32] = rand::random();
    let wrapped = crypto::seal(master, rand::random(), &crypto::key_aad(profile), &key);
    (key, wrapped)
}

/// A stored subject key, unwrapped.
pub(crate) fn unwrap_key(master: &[u8; 32], profile: i64, wrapped: &[u8]) -> Result<[u8; 32]> {
    let k = crypto::open(master, &crypto::key_aad(profile), wrapped)
        .map_err(|_| StoreError::Open("a subject key cannot be unwrapped: is this the master key the data was written with?".into()))?;
    k.try_into().map_err(|_| StoreError::Conflict("a subject key has the wrong length".into()))
}

/// Seals one JSON value for a subject; returns the JSON text of the envelope.
pub(crate) fn seal_json(key: &[u8; 32], profile: i64, plain_json: &str) -> String {
    let sealed = crypto::seal(key, rand::random(), &crypto::value_aad(profile), plain_json.as_bytes());
    serde_json::json!({ENC_KEY: b64().encode(sealed), KEY_OWNER: ProfileId(profile).to_string()}).to_string()
}

/// Replaces every envelope in `v` by the value it holds, or `null` when its key is gone.
pub(super) fn open_value(conn: &Connection, master: &[u8; 32], v: &mut Value, keys: &mut HashMap<i64, Option<[u8; 32]>>) -> Result<()> {
    match v {
        Value::Object(o) if o.contains_key(ENC_KEY) => {
            let owner = o.get(KEY_OWNER).and_then(Value::as_str).and_then(|s| ProfileId::parse(s).ok()).map(|p| p.0);
            let sealed = o.get(ENC_KEY).and_then(Value::as_str).and_then(|s| b64().decode(s).ok());
            let plain = match (owner, sealed) {
                (Some(owner), Some(sealed)) => {
                    let key = match keys.get(&owner) {
                        Some(k) => *k,
                        None => {
                            let k = existing_key(conn, master, owner)?;
                            keys.insert(owner, k);
                            k
                        }
                    };
                    key
                        .and_then(|k| crypto::open(&k, &crypto::value_aad(owner), &sealed).ok())
                        .and_then(|p| serde_json::from_slice(&p).ok())
                        .unwrap_or(Value::Null)
                }
                _ => Value::Null,
            };
            *v = plain;
        }
        Value::Object(o) => {
            for x in o.values_mut() {
                open_value(conn, master, x, keys)?;
            }
        }
        Value::Array(a) => {
            for x in a {
                open_value(conn, master, x, keys)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A stored body with its sealed values opened (unchanged when it holds none).
pub(super) fn open_text(conn: &Connection, master: &[u8; 32], body: String, keys: &mut HashMap<i64, Option<[u8; 32]>>) -> Result<String> {
    if !body.contains("\"$enc\"") {
        return Ok(body);
    }
    let mut v: Value = serde_json::from_str(&body).map_err(|e| StoreError::Conflict(format!("stored event is not JSON: {e}")))?;
    open_value(conn, master, &mut v, keys)?;
    Ok(v.to_string())
}
