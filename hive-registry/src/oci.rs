//! The registry edge: oci-client sessions with per-call credentials, and the
//! mapping of its errors into [`ApiaryError`].
//!
//! oci-client keeps one set of credentials per registry host and caches tokens
//! per repository and operation, so a session is built for each operation with
//! exactly the credentials that operation's caller gets: a token minted for
//! that principal never serves another.

use std::sync::Arc;

use hive_iam::registry_token::{RegistryScope, RegistryTokenIssuer};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};

use crate::config::RegistryConfig;
use crate::error::{ApiaryError, Result, VerifyError};

/// How Hive authenticates to the registry.
#[derive(Clone, Debug, Default)]
pub enum RegistryCredentials {
    /// No credentials (a registry without auth, e.g. in tests). Hive's
    /// decisions are then enforced by Hive alone.
    #[default]
    Anonymous,
    /// One fixed account (e.g. a GHCR user and token). Hive's per-principal
    /// decisions are enforced by Hive alone; the registry sees one account.
    Basic {
        /// The user name.
        username: String,
        /// The password or token.
        password: String,
    },
    /// Tokens minted per operation by Hive's registry token issuer (the
    /// registry's `auth.token` mode): the registry itself enforces, for every
    /// request, exactly the grants Hive decided for the caller.
    Tokens(Arc<RegistryTokenIssuer>),
}

impl RegistryCredentials {
    /// The credentials for an operation of `subject` needing `access`.
    pub(crate) fn for_access(
        &self,
        subject: &str,
        access: Vec<RegistryScope>,
    ) -> Result<RegistryAuth> {
        Ok(match self {
            RegistryCredentials::Anonymous => RegistryAuth::Anonymous,
            RegistryCredentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            RegistryCredentials::Tokens(issuer) => {
                RegistryAuth::Bearer(issuer.mint(subject, access)?.token)
            }
        })
    }
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The cosign tag of `digest` with `suffix` (`sig`, `att`).
pub fn cosign_tag(digest: &str, suffix: &str) -> String {
    format!("{}.{suffix}", digest.replace(':', "-"))
}

pub(crate) fn client_config(config: &RegistryConfig) -> ClientConfig {
    ClientConfig {
        protocol: if config.is_plain_http() {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: config.tls.accept_invalid_certificates,
        extra_root_certificates: config
            .tls
            .ca_certificates_pem
            .iter()
            .map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.as_bytes().to_vec(),
            })
            .collect(),
        ..ClientConfig::default()
    }
}

/// One operation's connection to the registry.
pub(crate) struct Session {
    client: Client,
    auth: RegistryAuth,
    host: String,
}

impl Session {
    pub(crate) fn new(config: &RegistryConfig, auth: RegistryAuth) -> Self {
        Session {
            client: Client::new(client_config(config)),
            auth,
            host: config.registry_host(),
        }
    }

    pub(crate) fn auth(&self) -> &RegistryAuth {
        &self.auth
    }

    fn tag_ref(&self, repository: &str, tag: &str) -> Reference {
        Reference::with_tag(self.host.clone(), repository.into(), tag.into())
    }

    fn digest_ref(&self, repository: &str, digest: &str) -> Reference {
        Reference::with_digest(self.host.clone(), repository.into(), digest.into())
    }

    fn reference(&self, repository: &str, tag_or_digest: &str) -> Reference {
        if tag_or_digest.starts_with("sha256:") {
            self.digest_ref(repository, tag_or_digest)
        } else {
            self.tag_ref(repository, tag_or_digest)
        }
    }

    /// Pushes a blob (unless the registry has it) and returns its digest.
    pub(crate) async fn push_blob(&self, repository: &str, data: &[u8]) -> Result<String> {
        let digest = sha256_digest(data);
        let image = self.tag_ref(repository, "latest");
        self.client
            .store_auth_if_needed(image.resolve_registry(), &self.auth)
            .await;
        let exists = self
            .client
            .blob_exists(&image, &digest)
            .await
            .map_err(|e| map_err("check blob", repository, e))?;
        if !exists {
            self.client
                .push_blob(&image, data.to_vec(), &digest)
                .await
                .map_err(|e| map_err("push blob", repository, e))?;
        }
        Ok(digest)
    }

    /// Pushes an OCI image manifest under `tag`; returns its digest and bytes.
    pub(crate) async fn push_manifest(
        &self,
        repository: &str,
        tag: &str,
        manifest: &OciImageManifest,
    ) -> Result<(String, Vec<u8>)> {
        let bytes = serde_json::to_vec(manifest).map_err(|e| ApiaryError::Registry {
            operation: "encode manifest".into(),
            message: e.to_string(),
            source: Some(Box::new(e)),
        })?;
        let digest = self.push_manifest_bytes(repository, tag, &bytes).await?;
        Ok((digest, bytes))
    }

    /// Pushes manifest bytes (an OCI image manifest) under `tag`.
    pub(crate) async fn push_manifest_bytes(
        &self,
        repository: &str,
        tag: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let image = self.tag_ref(repository, tag);
        self.client
            .store_auth_if_needed(image.resolve_registry(), &self.auth)
            .await;
        self.client
            .push_manifest_raw(
                &image,
                bytes.to_vec(),
                OCI_IMAGE_MEDIA_TYPE.parse().expect("a valid header value"),
            )
            .await
            .map_err(|e| map_err("push manifest", repository, e))?;
        Ok(sha256_digest(bytes))
    }

    /// A manifest by tag or digest: its bytes and digest, `None` if the
    /// registry does not have it. The bytes are checked against the digest
    /// (the requested one, or the registry's `Docker-Content-Digest`).
    pub(crate) async fn manifest(
        &self,
        repository: &str,
        tag_or_digest: &str,
    ) -> Result<Option<(Vec<u8>, String)>> {
        let image = self.reference(repository, tag_or_digest);
        let accepted = [
            OCI_IMAGE_MEDIA_TYPE,
            oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
        ];
        match self
            .client
            .pull_manifest_raw(&image, &self.auth, &accepted)
            .await
        {
            Ok((bytes, digest)) => {
                let actual = sha256_digest(&bytes);
                if actual != digest {
                    return Err(ApiaryError::Verification {
                        reference: format!("{repository}:{tag_or_digest}"),
                        source: VerifyError::DigestMismatch {
                            what: "manifest".into(),
                            expected: digest,
                            actual,
                        },
                    });
                }
                Ok(Some((bytes.to_vec(), digest)))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err("pull manifest", repository, e)),
        }
    }

    /// A blob, checked against its descriptor's digest.
    pub(crate) async fn blob(
        &self,
        repository: &str,
        descriptor: &OciDescriptor,
    ) -> Result<Vec<u8>> {
        let image = self.digest_ref(repository, &descriptor.digest);
        self.client
            .store_auth_if_needed(image.resolve_registry(), &self.auth)
            .await;
        let expected = u64::try_from(descriptor.size).unwrap_or(0);
        let size_error = |actual: String| ApiaryError::Verification {
            reference: format!("{repository}@{}", descriptor.digest),
            source: VerifyError::SizeMismatch {
                what: format!("blob {}", descriptor.digest),
                expected,
                actual,
            },
        };
        let mut out = Bounded {
            buf: Vec::with_capacity(usize::try_from(expected.min(64 << 20)).unwrap_or(0)),
            limit: expected,
            exceeded: false,
        };
        let pulled = self.client.pull_blob(&image, descriptor, &mut out).await;
        if out.exceeded {
            return Err(size_error("more".into()));
        }
        pulled.map_err(|e| map_err("pull blob", repository, e))?;
        if out.buf.len() as u64 != expected {
            return Err(size_error(format!("{} bytes", out.buf.len())));
        }
        Ok(out.buf)
    }

    /// The registry's catalog (every page).
    pub(crate) async fn catalog(&self) -> Result<Vec<String>> {
        let image = self.tag_ref("_", "latest");
        let mut all = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self
                .client
                .catalog(&image, &self.auth, Some(1000), last.as_deref())
                .await
                .map_err(|e| map_err("catalog", "_catalog", e))?;
            let done = page.repositories.len() < 1000;
            last = page.repositories.last().cloned();
            all.extend(page.repositories);
            if done || last.is_none() {
                return Ok(all);
            }
        }
    }
}

/// A blob's bytes, refusing (with an I/O error that stops the pull) any byte
/// past the size its descriptor states.
struct Bounded {
    buf: Vec<u8>,
    limit: u64,
    exceeded: bool,
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.buf.len() as u64 + data.len() as u64 > self.limit {
            self.exceeded = true;
            return std::task::Poll::Ready(Err(std::io::Error::other(
                "the blob is larger than its descriptor states",
            )));
        }
        self.buf.extend_from_slice(data);
        std::task::Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::NotFound
                    | OciErrorCode::BlobUnknown
            )
        }),
        OciDistributionError::ServerError { code, .. } => *code == 404,
        _ => false,
    }
}

/// Maps an oci-client error at the edge.
pub(crate) fn map_err(operation: &str, repository: &str, e: OciDistributionError) -> ApiaryError {
    match e {
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => ApiaryError::Verification {
            reference: repository.into(),
            source: VerifyError::DigestMismatch {
                what: format!("{operation} content"),
                expected,
                actual,
            },
        },
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => ApiaryError::RegistryDenied {
            operation: operation.into(),
            repository: repository.into(),
            message: e.to_string(),
        },
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|x| matches!(x.code, OciErrorCode::Denied | OciErrorCode::Unauthorized)) =>
        {
            ApiaryError::RegistryDenied {
                operation: operation.into(),
                repository: repository.into(),
                message: e.to_string(),
            }
        }
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => ApiaryError::RegistryDenied {
            operation: operation.into(),
            repository: repository.into(),
            message: e.to_string(),
        },
        ref other if is_not_found(other) => ApiaryError::NotFound {
            reference: repository.into(),
        },
        other => ApiaryError::Registry {
            operation: operation.into(),
            message: other.to_string(),
            source: Some(Box::new(other)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::Bounded;
    use tokio::io::AsyncWriteExt;

    fn bounded(limit: u64) -> Bounded {
        Bounded {
            buf: Vec::new(),
            limit,
            exceeded: false,
        }
    }

    /// Issue 11, item 11: a blob is read up to its stated size and not one
    /// byte further.
    #[tokio::test]
    async fn a_blob_past_its_stated_size_is_refused() {
        let mut exact = bounded(6);
        exact.write_all(b"abc").await.unwrap();
        exact.write_all(b"def").await.unwrap();
        assert_eq!(exact.buf, b"abcdef");
        assert!(!exact.exceeded);

        let mut over = bounded(4);
        over.write_all(b"abc").await.unwrap();
        let err = over.write_all(b"def").await.unwrap_err();
        assert!(err.to_string().contains("larger than its descriptor"));
        assert!(over.exceeded);
        assert_eq!(over.buf, b"abc", "nothing past the limit is kept");
    }
}
