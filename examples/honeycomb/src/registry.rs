//! The APIary registry Honeycomb serves `/api/agents` and `/api/experiments`
//! from, built from the `registry` address and the `registry_keys` folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hive::registry::{AgentRegistry, Channel};
use hive_registry::{AgentSigningKey, Apiary, RegistryConfig, TrustedKey};

use crate::config::Config;

/// Why the registry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A key file is missing or unreadable.
    #[error("registry_keys: cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A key file is not a key.
    #[error("registry_keys: {path} is not a valid key: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The address or the configuration is refused.
    #[error("registry {address}: {reason}")]
    Config {
        /// The address given.
        address: String,
        /// Why.
        reason: String,
    },
}

fn read(path: PathBuf) -> Result<Option<String>, RegistryError> {
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(RegistryError::Read { path, error }),
    }
}

fn required(dir: &Path, name: &str) -> Result<(PathBuf, String), RegistryError> {
    let path = dir.join(name);
    match read(path.clone())? {
        Some(s) => Ok((path, s)),
        None => Err(RegistryError::Read {
            path,
            error: std::io::Error::new(std::io::ErrorKind::NotFound, "missing"),
        }),
    }
}

/// The registry's base URL: the address as given when it has a scheme,
/// else `http://` (only accepted for loopback by APIary) .
fn base_url(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

/// The APIary of `config` over `hive` (`None` without `registry_keys`):
/// trusted keys `sandbox.pub` and `production.pub` (PEM) are required;
/// `sandbox.key` and `production.key` (PKCS#8 PEM), when present, sign
/// publications and promotions.
pub fn open_registry(
    config: &Config,
    hive: &hive::Hive,
) -> Result<Option<Arc<dyn AgentRegistry>>, RegistryError> {
    let Some(dir) = &config.registry_keys else {
        return Ok(None);
    };
    let url = base_url(&config.registry);
    let invalid = |reason: String| RegistryError::Config {
        address: config.registry.clone(),
        reason,
    };
    let mut registry = RegistryConfig::new(&url, "hive").map_err(|e| invalid(e.to_string()))?;
    for (channel, name) in [
        (Channel::Sandbox, "sandbox.pub"),
        (Channel::Production, "production.pub"),
    ] {
        let (path, pem) = required(dir, name)?;
        let key =
            TrustedKey::from_pem(&pem).map_err(|reason| RegistryError::Key { path, reason })?;
        registry = registry.with_trusted_key(channel, key);
    }
    let mut builder = Apiary::builder(hive.clone(), registry);
    for (channel, name) in [
        (Channel::Sandbox, "sandbox.key"),
        (Channel::Production, "production.key"),
    ] {
        let path = dir.join(name);
        if let Some(pem) = read(path.clone())? {
            let key = AgentSigningKey::from_pkcs8_pem(&pem)
                .map_err(|reason| RegistryError::Key { path, reason })?;
            builder = builder.signing_key(channel, key);
        }
    }
    let apiary = builder.build().map_err(|e| invalid(e.to_string()))?;
    Ok(Some(Arc::new(apiary)))
}
