//! `admin token issue | list | revoke`: API tokens, straight in the store.

use hive::Timestamp;
use hive::iam::{IssuedToken, TokenInfo, TokenKind, TokenRequest, TokenStatus};
use hive::prelude::*;
use serde::Serialize;

use super::output::{self, print, print_json, print_table, table, time, time_or_dash};
use super::{AdminError, OutputArgs, local_operator, open_engine, operator_in, parse_tenant};
use crate::config::Config;

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

/// `admin token issue`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct IssueArgs {
    /// The tenant the token acts in.
    #[arg(long)]
    pub tenant: String,
    /// The principal it stands for.
    #[arg(long)]
    pub principal: String,
    /// user, operator or admin.
    #[arg(long, default_value = "admin")]
    pub kind: String,
    /// How long it is valid (e.g. 30d); forever when absent.
    #[arg(long)]
    pub ttl: Option<String>,
    /// What it is for.
    #[arg(long, default_value = "issued by honeycomb admin token issue")]
    pub description: String,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `admin token list`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct ListArgs {
    /// Only this tenant's tokens [default: every tenant's].
    #[arg(long)]
    pub tenant: Option<String>,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `admin token revoke`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct RevokeArgs {
    /// The token's id (the part between `hive_` and the dot).
    pub id: String,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A token as listed: its info (never its secret) and its status now.
#[derive(Clone, Debug, Serialize)]
pub struct TokenRow {
    /// The token.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// Active, expired or revoked.
    pub status: TokenStatus,
}

impl TokenRow {
    fn at(info: TokenInfo, now: Timestamp) -> Self {
        let status = info.status(now);
        TokenRow { info, status }
    }
}

fn parse_request(request: IssueRequest) -> Result<TokenRequest, AdminError> {
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
    let tenant = parse_tenant(&request.tenant)?;
    let mut token = TokenRequest::new(request.principal.as_str(), kind)
        .tenant(tenant)
        .description(request.description);
    if let Some(ttl) = &request.ttl {
        let d = crate::api::parse_duration(ttl).ok_or_else(|| {
            AdminError::Invalid(format!("--ttl {ttl:?}: not a duration (30d, 12h)"))
        })?;
        token = token.ttl(d);
    }
    Ok(token)
}

/// Issues an API token straight into the configured store (the bootstrap
/// path for the first admin token), audited with the local user as actor.
pub async fn issue_token(
    config: &Config,
    request: IssueRequest,
) -> Result<IssuedToken, AdminError> {
    let token = parse_request(request)?;
    let hive = open_engine(config).await?;
    let issued = hive.tokens().issue(&hive, &local_operator(), token).await;
    hive.shutdown();
    Ok(issued?)
}

/// `admin token issue`: the token on stdout (shown once), what it is on
/// stderr; with `--json`, both as one document.
pub(crate) async fn issue(hive: &Hive, args: IssueArgs) -> Result<(), AdminError> {
    let json = args.output.json;
    let token = parse_request(IssueRequest {
        tenant: args.tenant,
        principal: args.principal,
        kind: args.kind,
        ttl: args.ttl,
        description: args.description,
    })?;
    let issued = hive.tokens().issue(hive, &local_operator(), token).await?;
    if json {
        return print_json(&serde_json::json!({
            "token": issued.token,
            "info": TokenRow::at(issued.info, hive.clock().now()),
        }));
    }
    output::note(&format!(
        "issued token {} for {}/{} ({}); it is shown once:",
        issued.info.id, issued.info.tenant, issued.info.principal, issued.info.kind
    ));
    print(&format!("{}\n", issued.token))
}

/// The tokens of `tenant`, or of every tenant, without secrets.
pub async fn list_tokens(hive: &Hive, tenant: Option<&str>) -> Result<Vec<TokenRow>, AdminError> {
    let infos = match tenant {
        Some(t) => {
            let tenant = parse_tenant(t)?;
            hive.tokens().list(hive, &operator_in(&tenant)).await?
        }
        None => hive.tokens().list_all(hive, &local_operator()).await?,
    };
    let now = hive.clock().now();
    Ok(infos.into_iter().map(|i| TokenRow::at(i, now)).collect())
}

/// `admin token list`.
pub(crate) async fn list(hive: &Hive, args: ListArgs) -> Result<(), AdminError> {
    let rows = list_tokens(hive, args.tenant.as_deref()).await?;
    if args.output.json {
        return print_json(&rows);
    }
    let mut t = table(&[
        "ID",
        "TENANT",
        "PRINCIPAL",
        "KIND",
        "STATUS",
        "ISSUED",
        "BY",
        "EXPIRES",
        "DESCRIPTION",
    ]);
    for r in &rows {
        t.add_row(vec![
            r.info.id.clone(),
            r.info.tenant.to_string(),
            r.info.principal.to_string(),
            r.info.kind.to_string(),
            status_name(r.status).to_owned(),
            time(r.info.issued_at),
            r.info.issued_by.to_string(),
            time_or_dash(r.info.expires_at),
            r.info.description.clone(),
        ]);
    }
    print_table(&t, "no tokens")
}

fn status_name(s: TokenStatus) -> &'static str {
    match s {
        TokenStatus::Active => "active",
        TokenStatus::Expired => "expired",
        TokenStatus::Revoked => "revoked",
    }
}

/// `admin token revoke <id>`: revoked at once for every process (each
/// forgets a resolved token within its cache's two seconds).
pub(crate) async fn revoke(hive: &Hive, args: RevokeArgs) -> Result<(), AdminError> {
    let info = hive
        .tokens()
        .revoke(hive, &local_operator(), args.id.trim())
        .await?;
    let row = TokenRow::at(info, hive.clock().now());
    if args.output.json {
        return print_json(&row);
    }
    print(&format!(
        "revoked token {} of {}/{} ({}) at {}\n",
        row.info.id,
        row.info.tenant,
        row.info.principal,
        row.info.kind,
        time_or_dash(row.info.revoked_at)
    ))
}
