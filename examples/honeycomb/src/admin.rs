//! `honeycomb admin …`: administration straight on the configured store,
//! for what the HTTP API cannot do before a token exists.

use hive::iam::{IssuedToken, TokenKind, TokenRequest};
use hive::prelude::*;

use crate::config::Config;
use crate::serve::{ServeError, open_store};

/// What `honeycomb admin token issue` issues.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    /// The tenant the token acts in.
    pub tenant: String,
    /// The principal it stands for.
    pub principal: String,
    /// `user`, `operator` or `admin`.
    pub kind: String,
    /// How long it is valid (`30d`), forever when `None`.
    pub ttl: Option<String>,
    /// What it is for.
    pub description: String,
}

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The store could not be opened.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// The engine refused.
    #[error("{0}")]
    Hive(#[from] hive::Error),
}

/// The principal of the local operator who runs `honeycomb admin`: Hive
/// itself acting for the local user, recorded as `cli:<user>` in the audit
/// trail.
fn local_operator() -> Principal {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let user: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(64)
        .collect();
    let mut p = Principal::system();
    p.id = format!("cli:{user}").into();
    p
}

/// Issues an API token straight into the configured store (the bootstrap
/// path for the first admin token), audited with the local user as actor.
pub async fn issue_token(
    config: &Config,
    request: IssueRequest,
) -> Result<IssuedToken, AdminError> {
    let kind = match request.kind.as_str() {
        "user" => TokenKind::User,
        "operator" => TokenKind::Operator,
        "admin" => TokenKind::Admin,
        other => {
            return Err(AdminError::Invalid(format!(
                "--kind {other:?}: user, operator or admin"
            )));
        }
    };
    let tenant = TenantId::parse(&request.tenant)?;
    let mut token = TokenRequest::new(request.principal.as_str(), kind)
        .tenant(tenant)
        .description(request.description);
    if let Some(ttl) = &request.ttl {
        let d = crate::api::parse_duration(ttl).ok_or_else(|| {
            AdminError::Invalid(format!("--ttl {ttl:?}: not a duration (30d, 12h)"))
        })?;
        token = token.ttl(d);
    }
    let hive = open_store(config).await?;
    let issued = hive.tokens().issue(&hive, &local_operator(), token).await;
    hive.shutdown();
    Ok(issued?)
}
