//! Signing keys (ECDSA P-256, cosign's default) and the trusted public keys
//! verification uses.

use std::fmt;

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate as _;
use p256::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _,
    LineEnding,
};
use sha2::{Digest as _, Sha256};

/// A private key that signs agents (cosign signatures) and attestations (DSSE).
/// Hive holds one per channel; the matching [`TrustedKey`] goes into
/// [`crate::RegistryConfig`].
#[derive(Clone)]
pub struct AgentSigningKey {
    key: SigningKey,
    public: TrustedKey,
}

impl fmt::Debug for AgentSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSigningKey")
            .field("key_id", &self.public.key_id)
            .finish_non_exhaustive()
    }
}

impl AgentSigningKey {
    /// A new random key from the operating system's RNG.
    pub fn generate() -> Self {
        Self::from_key(SigningKey::generate())
    }

    /// A key from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, unencrypted),
    /// e.g. `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, String> {
        SigningKey::from_pkcs8_pem(pem)
            .map(Self::from_key)
            .map_err(|e| format!("not an unencrypted PKCS#8 P-256 private key: {e}"))
    }

    fn from_key(key: SigningKey) -> Self {
        let public = TrustedKey::from_verifying_key(*key.verifying_key());
        AgentSigningKey { key, public }
    }

    /// The private key as PKCS#8 PEM. Secret: store it as one.
    pub fn to_pkcs8_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .unwrap_or_default()
    }

    /// The public half, to trust.
    pub fn public_key(&self) -> &TrustedKey {
        &self.public
    }

    /// An ASN.1 DER ECDSA-SHA256 signature of `message`.
    pub(crate) fn sign_der(&self, message: &[u8]) -> Vec<u8> {
        let signature: DerSignature = self.key.sign(message);
        signature.as_bytes().to_vec()
    }
}

/// A trusted public key (ECDSA P-256), with its id: the lowercase hex SHA-256
/// of its DER `SubjectPublicKeyInfo` (what DSSE envelopes name as `keyid`).
#[derive(Clone)]
pub struct TrustedKey {
    key: VerifyingKey,
    pem: String,
    key_id: String,
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TrustedKey").field(&self.key_id).finish()
    }
}

impl PartialEq for TrustedKey {
    fn eq(&self, other: &Self) -> bool {
        self.key_id == other.key_id
    }
}

impl Eq for TrustedKey {}

impl TrustedKey {
    /// A key from SPKI PEM (`-----BEGIN PUBLIC KEY-----`, what `cosign
    /// generate-key-pair` writes to `cosign.pub`).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(Self::from_verifying_key)
            .map_err(|e| format!("not a P-256 public key in SPKI PEM: {e}"))
    }

    fn from_verifying_key(key: VerifyingKey) -> Self {
        let der = key
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        let pem = key.to_public_key_pem(LineEnding::LF).unwrap_or_default();
        TrustedKey {
            key,
            pem,
            key_id: hex::encode(Sha256::digest(&der)),
        }
    }

    /// The key as SPKI PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The key's id (hex SHA-256 of its DER SPKI).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Whether `signature` (ASN.1 DER ECDSA-SHA256) signs `message` with this
    /// key.
    pub fn verify_der(&self, message: &[u8], signature: &[u8]) -> bool {
        p256::ecdsa::Signature::from_der(signature)
            .is_ok_and(|s| self.key.verify(message, &s).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_pem_and_verify_their_signatures() {
        let k = AgentSigningKey::generate();
        let again = AgentSigningKey::from_pkcs8_pem(&k.to_pkcs8_pem()).unwrap();
        assert_eq!(again.public_key(), k.public_key());
        let trusted = TrustedKey::from_pem(k.public_key().pem()).unwrap();
        let sig = k.sign_der(b"payload");
        assert!(trusted.verify_der(b"payload", &sig));
        assert!(!trusted.verify_der(b"payload!", &sig));
        let other = AgentSigningKey::generate();
        assert!(!other.public_key().verify_der(b"payload", &sig));
        assert!(
            TrustedKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_err()
        );
        assert!(AgentSigningKey::from_pkcs8_pem(k.public_key().pem()).is_err());
    }
}
