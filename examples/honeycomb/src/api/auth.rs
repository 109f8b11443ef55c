//! `Authorization: Bearer` tokens, resolved by `hive-iam` into the principal
//! the engine authorizes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use hive::Principal;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::{ApiError, ApiState};

/// The most tokens remembered at once (the cache is emptied when full).
const MAX_CACHED: usize = 10_000;

/// The caller: the principal its token stands for.
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "this route needs Authorization: Bearer <token>",
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be Bearer <token>")
            })?;
        resolve(state, token).await.map(Caller)
    }
}

/// Resolves `token`, through the cache.
pub(crate) async fn resolve(state: &ApiState, token: &str) -> Result<Principal, ApiError> {
    let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if let Some(p) = state.cache().get(&key) {
        return Ok(p);
    }
    match state.tokens().resolve(token).await {
        Ok(p) => {
            state.cache().put(key, p.clone());
            Ok(p)
        }
        Err(e) if hive::iam::is_invalid_token(&e) => {
            tracing::info!("refused a request with an invalid, expired or revoked token");
            Err(ApiError::unauthorized(
                "the token is invalid, expired or revoked",
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Resolved tokens, remembered for a short time (keyed by the token's
/// SHA-256, so no secret is kept).
pub(crate) struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl TokenCache {
    pub(crate) fn new(ttl: Duration) -> TokenCache {
        TokenCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &[u8; 32]) -> Option<Principal> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock();
        let (p, at) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| p.clone())
    }

    fn put(&self, key: [u8; 32], p: Principal) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_CACHED {
            entries.clear();
        }
        entries.insert(key, (p, Instant::now()));
    }

    /// Forgets every token (after a revocation in this process).
    pub(crate) fn clear(&self) {
        self.entries.lock().clear();
    }
}
