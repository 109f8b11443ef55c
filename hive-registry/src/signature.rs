//! Signing and verifying agents: with the `cosign` feature through
//! sigstore-rs ([`crate::cosign`]); without it, both fail closed.

use std::collections::BTreeMap;

use oci_client::secrets::RegistryAuth;

use crate::catalog::Channel;
use crate::config::RegistryConfig;
use crate::error::Result;
use crate::keys::AgentSigningKey;

pub use hive_core::registry::VerifiedSignature;

/// Whether this build can sign and verify (the `cosign` feature).
pub const SIGNING_BUILT_IN: bool = cfg!(feature = "cosign");

pub(crate) async fn sign(
    config: &RegistryConfig,
    auth: &RegistryAuth,
    repository: &str,
    digest: &str,
    key: &AgentSigningKey,
    annotations: &BTreeMap<String, String>,
) -> Result<()> {
    #[cfg(feature = "cosign")]
    {
        crate::cosign::sign(config, auth, repository, digest, key, annotations).await
    }
    #[cfg(not(feature = "cosign"))]
    {
        let _ = (config, auth, repository, digest, key, annotations);
        Err(crate::error::ApiaryError::SigningUnavailable {
            message: "built without hive-registry's `cosign` feature".into(),
        })
    }
}

pub(crate) async fn verify(
    config: &RegistryConfig,
    auth: &RegistryAuth,
    repository: &str,
    digest: &str,
    channel: Channel,
    required: &BTreeMap<String, String>,
) -> Result<VerifiedSignature> {
    #[cfg(feature = "cosign")]
    {
        crate::cosign::verify(config, auth, repository, digest, channel, required).await
    }
    #[cfg(not(feature = "cosign"))]
    {
        let _ = (auth, digest, channel, required);
        Err(crate::error::ApiaryError::Verification {
            reference: config.qualified(repository),
            source: crate::error::VerifyError::CosignDisabled,
        })
    }
}
