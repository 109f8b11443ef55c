//! The errors of APIary: one public [`ApiaryError`], with the typed
//! [`VerifyError`] for everything that makes a pull (or a promotion) fail
//! closed. No driver type (oci-client, sigstore) appears in a signature: they
//! are mapped at the edge and kept as `source()`.

use std::fmt;

use std::path::PathBuf;

use super::catalog::Channel;

/// A `Result` with [`ApiaryError`].
pub type Result<T, E = ApiaryError> = std::result::Result<T, E>;

/// Why a pulled artifact is not trusted. Every variant refuses the pull: there
/// is no "verified with warnings".
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// No cosign signature is attached (`sha256-<digest>.sig` is missing or
    /// holds no signature layer).
    #[error("unsigned: no cosign signature at tag {signature_tag}")]
    Unsigned {
        /// The signature tag that was looked up.
        signature_tag: String,
    },
    /// Signatures are attached, but none verifies against a trusted key of the
    /// channel: signed with another key, or the signed payload was altered
    /// after signing (the two cannot be told apart without the original).
    #[error(
        "no signature verifies against the {keys} trusted {channel} key(s): signed with \
         another key, or the signed payload was altered"
    )]
    UntrustedSignature {
        /// The channel whose keys were tried.
        channel: Channel,
        /// How many trusted keys were tried.
        keys: usize,
    },
    /// The configuration trusts no key for the channel: nothing can verify.
    #[error("no trusted {channel} key is configured: nothing of this channel can be trusted")]
    NoTrustedKeys {
        /// The channel.
        channel: Channel,
    },
    /// Content does not hash to the digest that names it (a manifest, a layer,
    /// a signature payload or an attestation was altered in storage or in
    /// transit).
    #[error("{what} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked (`manifest`, `layer sha256:…`, `signature payload`).
        what: String,
        /// The digest that names it.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },
    /// Content is not the size its descriptor states (a layer larger or
    /// smaller than the signed manifest says): refused as soon as it is
    /// known, without reading past the stated size.
    #[error("{what} is not {expected} bytes as its descriptor states ({actual})")]
    SizeMismatch {
        /// What was checked (`layer sha256:…`).
        what: String,
        /// The size the descriptor states.
        expected: u64,
        /// What was received: the full size, or `more` when the stream went
        /// past the stated size (reading stopped there).
        actual: String,
    },
    /// The signature's payload signs another artifact.
    #[error("the signature is for {signed}, not for the pulled artifact {pulled}")]
    SignedDigestMismatch {
        /// The digest named in the signed payload.
        signed: String,
        /// The digest that was pulled.
        pulled: String,
    },
    /// The signature verifies, but its signed identity (the simple-signing
    /// payload's `docker-reference`) names another repository: a signature
    /// copied from elsewhere together with the artifact.
    #[error(
        "the signature names {signed}, not the repository being pulled ({expected}): \
         copied from another repository?"
    )]
    IdentityMismatch {
        /// The repository named in the signed payload.
        signed: String,
        /// The repository being pulled.
        expected: String,
    },
    /// A required annotation is missing or has another value, in the signed
    /// payload or in the manifest.
    #[error("required {location} annotation {key}: expected {expected:?}, found {found:?}")]
    AnnotationMismatch {
        /// Where the annotation was required.
        location: AnnotationLocation,
        /// The annotation key.
        key: String,
        /// The required value.
        expected: String,
        /// What was there (`None`: missing).
        found: Option<String>,
    },
    /// The signature manifest or payload cannot be read as cosign's format.
    #[error("malformed signature: {reason}")]
    MalformedSignature {
        /// What is wrong.
        reason: String,
    },
    /// An attestation (provenance or verification summary) is missing, does not
    /// verify, or does not describe the artifact.
    #[error("attestation: {reason}")]
    BadAttestation {
        /// What is wrong.
        reason: String,
    },
    /// This build cannot verify cosign signatures: it fails closed.
    #[error("signature verification is not built in: enable hive-registry's `cosign` feature")]
    CosignDisabled,
}

/// Where a required annotation was looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnnotationLocation {
    /// The `optional` section of the signed simple-signing payload.
    Signature,
    /// The artifact manifest's annotations (the catalog entry).
    Manifest,
}

impl fmt::Display for AnnotationLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnnotationLocation::Signature => "signature",
            AnnotationLocation::Manifest => "manifest",
        })
    }
}

/// A rule of the promotion policy (see `hive_registry::PromotionPolicy`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum PromotionRule {
    /// The caller has `experiment:promote` (checked by the engine's
    /// authorizer).
    CallerScope,
    /// The sandbox artifact carries a valid signature by a trusted sandbox key.
    SignedBySandboxKey,
    /// A signed SLSA provenance attestation is attached.
    ProvenancePresent,
    /// The named metric, from the signed provenance, is at least `min`.
    MetricThreshold {
        /// The metric's name.
        metric: String,
        /// The threshold.
        min: f64,
    },
}

impl fmt::Display for PromotionRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromotionRule::CallerScope => f.write_str("caller-has-experiment:promote"),
            PromotionRule::SignedBySandboxKey => f.write_str("signed-by-sandbox-key"),
            PromotionRule::ProvenancePresent => f.write_str("provenance-present"),
            PromotionRule::MetricThreshold { metric, min } => write!(f, "metric:{metric}>={min}"),
        }
    }
}

/// What went wrong in an APIary operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiaryError {
    /// The agent does not exist, or the caller may not see it (a hidden agent
    /// is never `Forbidden`).
    #[error("agent {reference} not found")]
    NotFound {
        /// The reference as asked.
        reference: String,
    },
    /// The caller may not perform the operation at all (missing scope, a
    /// worker). Audited.
    #[error("forbidden: {action}: {reason}")]
    Forbidden {
        /// The refused action (`registry.publish`…).
        action: String,
        /// Why.
        reason: String,
    },
    /// A bad argument (name, version, visibility…); nothing was changed.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What is wrong.
        message: String,
    },
    /// The version exists already, or a concurrent change won.
    #[error("conflict: {message}")]
    Conflict {
        /// What conflicted.
        message: String,
    },
    /// A pulled artifact failed verification (fail closed).
    #[error("{reference}: verification failed: {source}")]
    Verification {
        /// The artifact.
        reference: String,
        /// Why it is not trusted.
        #[source]
        source: VerifyError,
    },
    /// A promotion was refused by a rule of the policy. Audited.
    #[error("promotion of {reference} refused by rule {rule}: {reason}")]
    PromotionRefused {
        /// The sandbox agent.
        reference: String,
        /// The first rule that failed.
        rule: PromotionRule,
        /// Why it failed.
        reason: String,
    },
    /// The registry refused the request (HTTP 401/403): the credentials did not
    /// grant it.
    #[error("the registry refused {operation} on {repository}: {message}")]
    RegistryDenied {
        /// What was attempted.
        operation: String,
        /// The repository.
        repository: String,
        /// The registry's answer.
        message: String,
    },
    /// The registry failed or could not be reached.
    #[error("registry error during {operation}: {message}")]
    Registry {
        /// What was attempted.
        operation: String,
        /// What failed.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Publishing or promotion needs a signing key that is not configured, or
    /// signing is not built in (`cosign` feature).
    #[error("signing unavailable: {message}")]
    SigningUnavailable {
        /// What is missing.
        message: String,
    },
    /// A configuration value is bad.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An engine or store error (store unavailable…).
    #[error(transparent)]
    Core(crate::Error),
}

impl ApiaryError {
    /// A short, stable name of the variant, for bindings and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiaryError::NotFound { .. } => "not_found",
            ApiaryError::Forbidden { .. } => "forbidden",
            ApiaryError::InvalidArgument { .. } => "invalid_argument",
            ApiaryError::Conflict { .. } => "conflict",
            ApiaryError::Verification { .. } => "verification",
            ApiaryError::PromotionRefused { .. } => "promotion_refused",
            ApiaryError::RegistryDenied { .. } => "registry_denied",
            ApiaryError::Registry { .. } => "registry",
            ApiaryError::SigningUnavailable { .. } => "signing_unavailable",
            ApiaryError::Config(_) => "config",
            ApiaryError::Core(e) => e.kind(),
        }
    }

    /// The verification failure, when this is one.
    pub fn verify_error(&self) -> Option<&VerifyError> {
        match self {
            ApiaryError::Verification { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_temporary(&self) -> bool {
        match self {
            ApiaryError::Registry { .. } => true,
            ApiaryError::Core(e) => e.is_temporary(),
            _ => false,
        }
    }

    /// An [`ApiaryError::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiaryError::InvalidArgument {
            message: message.into(),
        }
    }

    /// An [`ApiaryError::NotFound`] for `reference`.
    pub fn not_found(reference: impl ToString) -> Self {
        ApiaryError::NotFound {
            reference: reference.to_string(),
        }
    }
}

impl From<crate::Error> for ApiaryError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Forbidden { action, reason } => ApiaryError::Forbidden { action, reason },
            crate::Error::NotFound { kind, id } => ApiaryError::NotFound {
                reference: format!("{kind} {id}"),
            },
            crate::Error::InvalidArgument { message } => ApiaryError::InvalidArgument { message },
            crate::Error::Conflict { message } => ApiaryError::Conflict { message },
            other => ApiaryError::Core(other),
        }
    }
}

impl From<ApiaryError> for crate::Error {
    /// Maps into the engine's error for hosts and bindings that speak only
    /// `crate::Error` (verification and promotion refusals become
    /// `Forbidden` with the typed reason in the message).
    fn from(e: ApiaryError) -> Self {
        match e {
            ApiaryError::NotFound { reference } => crate::Error::NotFound {
                kind: "agent",
                id: reference,
            },
            ApiaryError::Forbidden { action, reason } => crate::Error::Forbidden { action, reason },
            ApiaryError::InvalidArgument { message } => crate::Error::InvalidArgument { message },
            ApiaryError::Config(c) => crate::Error::InvalidArgument {
                message: c.to_string(),
            },
            ApiaryError::Conflict { message } => crate::Error::Conflict { message },
            ApiaryError::Core(e) => e,
            e @ (ApiaryError::Verification { .. } | ApiaryError::RegistryDenied { .. }) => {
                crate::Error::Forbidden {
                    action: "registry.pull".into(),
                    reason: e.to_string(),
                }
            }
            e @ ApiaryError::PromotionRefused { .. } => crate::Error::Forbidden {
                action: "experiment.promote".into(),
                reason: e.to_string(),
            },
            e @ ApiaryError::Registry { .. } => crate::Error::BackendUnavailable {
                message: e.to_string(),
                source: Some(Box::new(e)),
            },
            e => crate::Error::Backend {
                message: e.to_string(),
                source: None,
            },
        }
    }
}

/// The URL parameters `hive_registry::RegistryConfig::from_url` accepts.
pub const URL_PARAMETERS: [&str; 5] = [
    "sandbox_key",
    "production_key",
    "ca_file",
    "insecure_skip_verify",
    "allow_http",
];

/// A bad configuration value. Each variant names the variable or parameter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required value is missing.
    #[error("{name} is required")]
    Missing {
        /// The variable or parameter.
        name: String,
    },
    /// Not a URL, or a URL with parts that do not belong (credentials, a
    /// fragment).
    #[error("{name}: {value:?} is not a valid registry URL: {reason}")]
    InvalidUrl {
        /// The variable or parameter.
        name: String,
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A scheme other than `https` or `http`.
    #[error(
        "{name}: scheme {scheme:?} is not supported: use https (or http for a loopback registry)"
    )]
    UnsupportedScheme {
        /// The variable or parameter.
        name: String,
        /// The scheme.
        scheme: String,
    },
    /// Plain HTTP to a host that is not loopback, without the explicit opt-in.
    #[error(
        "{name}: plain http to {host} is refused: use https, or set {opt_in}=true for a \
         registry on a trusted network"
    )]
    InsecureHttp {
        /// The variable or parameter.
        name: String,
        /// The host.
        host: String,
        /// The opt-in variable or parameter.
        opt_in: String,
    },
    /// Not a valid repository prefix.
    #[error("{name}: {value:?} is not a valid repository prefix: {reason}")]
    InvalidPrefix {
        /// The variable or parameter.
        name: String,
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A file cannot be read.
    #[error("{name}: cannot read {}: {source}", path.display())]
    ReadFile {
        /// The variable or parameter.
        name: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key is not a P-256 public key in PEM.
    #[error("{name}: {origin}: {reason}")]
    InvalidKey {
        /// The variable or parameter.
        name: String,
        /// Where the key came from (a path, or `inline`).
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A CA bundle holds no PEM certificate.
    #[error("{name}: {origin} holds no PEM certificate")]
    InvalidCertificate {
        /// The variable or parameter.
        name: String,
        /// Where it came from.
        origin: String,
    },
    /// Not a boolean.
    #[error("{name}: {value:?} is not a boolean (true/false, 1/0, yes/no)")]
    InvalidBool {
        /// The variable or parameter.
        name: String,
        /// The value.
        value: String,
    },
    /// A URL parameter that is not known.
    #[error("unknown registry URL parameter {name:?} (known: {})", URL_PARAMETERS.join(", "))]
    UnknownParameter {
        /// The parameter.
        name: String,
    },
}
