//! First start with no keys configured: a write key and an admin key are created, kept in
//! `<data_dir>/credentials.toml` (mode 0600) and printed once.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use confidant_core::config::{ApiKeyConfig, Config, Role, SourceConfig};
use rand::TryRngCore;

pub const FILE: &str = "credentials.toml";

/// Keys created on this start, to print once.
pub struct Generated {
    pub source: Option<SourceConfig>,
    pub api_key: Option<ApiKeyConfig>,
}

fn random_key(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).expect("the OS random number generator works");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}

#[derive(serde::Deserialize, serde::Serialize, Default)]
struct Stored {
    write_key: Option<String>,
    admin_key: Option<String>,
}

/// Fills in missing sources and API keys from the credentials file, creating it if needed.
/// Returns the keys created now (to print once), if any.
pub fn ensure(config: &mut Config) -> Result<Option<Generated>> {
    if !config.sources.is_empty() && !config.api_keys.is_empty() {
        return Ok(None);
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let path = config.data_dir.join(FILE);
    let mut stored: Stored = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("{} is not a valid credentials file", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut generated = Generated { source: None, api_key: None };
    let mut changed = false;
    if config.sources.is_empty() {
        let key = stored.write_key.clone().unwrap_or_else(|| {
            changed = true;
            random_key("wk")
        });
        stored.write_key = Some(key.clone());
        let source = SourceConfig { name: "default".into(), write_key: key, columns: Default::default() };
        if changed {
            generated.source = Some(source.clone());
        }
        config.sources.push(source);
    }
    if config.api_keys.is_empty() {
        let mut new = false;
        let key = stored.admin_key.clone().unwrap_or_else(|| {
            new = true;
            random_key("ak")
        });
        stored.admin_key = Some(key.clone());
        let api_key = ApiKeyConfig { name: "admin".into(), key, role: Role::Admin };
        if new {
            generated.api_key = Some(api_key.clone());
            changed = true;
        }
        config.api_keys.push(api_key);
    }
    if changed {
        write_private(&path, &toml::to_string(&stored)?)?;
        Ok(Some(generated))
    } else {
        Ok(None)
    }
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("toml.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(b"# Created by Confidant on first start. Keep it secret.\n")?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Prints keys created on this start, once, on standard output.
pub fn announce(g: &Generated, config: &Config) {
    println!("First start: created credentials in {} (mode 0600). They are shown only now:", config.data_dir.join(FILE).display());
    if let Some(s) = &g.source {
        println!("  write key (source \"{}\"): {}", s.name, s.write_key);
    }
    if let Some(k) = &g.api_key {
        println!("  admin API key (\"{}\"):      {}", k.name, k.key);
    }
}
