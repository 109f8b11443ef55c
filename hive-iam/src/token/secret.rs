//! The token string: `hive_<token id>.<secret>`, and the stored hash of the secret.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hive_core::{Error, Result};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every token string starts with this.
pub const TOKEN_PREFIX: &str = "hive_";

/// Bytes of a token's secret (256 bits).
pub(crate) const SECRET_LEN: usize = 32;
/// Characters of a token id (a UUIDv7 in lowercase hex, without dashes).
const ID_LEN: usize = 32;
/// Characters of the base64url (unpadded) secret.
const SECRET_B64_LEN: usize = 43;

/// A fresh secret from the operating system's RNG.
pub(crate) fn new_secret() -> Result<[u8; SECRET_LEN]> {
    let mut secret = [0u8; SECRET_LEN];
    getrandom::fill(&mut secret).map_err(|e| Error::BackendUnavailable {
        message: format!("the operating system's random number generator failed: {e}"),
        source: None,
    })?;
    Ok(secret)
}

/// A fresh token id.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Whether `id` has the shape of a token id.
pub(crate) fn is_token_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The string handed to the holder.
pub(crate) fn format_token(id: &str, secret: &[u8; SECRET_LEN]) -> String {
    format!("{TOKEN_PREFIX}{id}.{}", URL_SAFE_NO_PAD.encode(secret))
}

/// The id and secret of a well-formed token string.
pub(crate) fn parse_token(token: &str) -> Option<(&str, [u8; SECRET_LEN])> {
    let (id, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('.')?;
    if !is_token_id(id) || secret.len() != SECRET_B64_LEN {
        return None;
    }
    let mut out = [0u8; SECRET_LEN];
    match URL_SAFE_NO_PAD.decode_slice(secret, &mut out) {
        Ok(SECRET_LEN) => Some((id, out)),
        _ => None,
    }
}

/// The stored form of a secret: SHA-256 of its 32 bytes.
pub(crate) fn secret_hash(secret: &[u8; SECRET_LEN]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Compares a presented secret's hash with a stored one in constant time.
pub(crate) fn hashes_match(presented: &[u8; 32], stored: &[u8; 32]) -> bool {
    presented.ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_anything_else_is_refused() {
        let id = new_id();
        let secret = new_secret().expect("rng");
        let token = format_token(&id, &secret);
        assert_eq!(token.len(), TOKEN_PREFIX.len() + 32 + 1 + 43);
        assert_eq!(parse_token(&token), Some((id.as_str(), secret)));
        let refused = [
            String::new(),
            token.replacen("hive_", "hivf_", 1),
            token.replacen('.', "", 1),
            token.replacen('.', "..", 1),
            format!("{token}A"),
            token[..token.len() - 1].to_owned(),
            format!("{token}="),
            token.to_uppercase(),
            format!(" {token}"),
            token
                .replace('-', "+")
                .replace('_', "/")
                .replacen("hive/", "hive_", 1)
                + "+",
        ];
        for bad in &refused {
            assert_eq!(parse_token(bad), None, "{bad:?} parsed");
        }
    }

    #[test]
    fn secrets_are_distinct_and_compared_by_hash() {
        let a = new_secret().expect("rng");
        let b = new_secret().expect("rng");
        assert_ne!(a, b);
        assert!(hashes_match(&secret_hash(&a), &secret_hash(&a)));
        assert!(!hashes_match(&secret_hash(&a), &secret_hash(&b)));
    }
}
