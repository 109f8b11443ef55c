//! The catalog entry: what an agent is, where it lives in the registry, who may
//! see it, and how it is written into (and read back from) the manifest
//! annotations of its OCI artifact.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::clock::Timestamp;
use crate::principal::{Principal, PrincipalKind, Role, TenantId};
use serde::{Deserialize, Serialize};

use super::error::{ApiaryError, Result};

/// The `artifactType` of an agent manifest.
pub const AGENT_ARTIFACT_TYPE: &str = "application/vnd.hive.agent.v1";
/// The media type of an agent's config blob (name and version as JSON).
pub const AGENT_CONFIG_MEDIA_TYPE: &str = "application/vnd.hive.agent.config.v1+json";
/// The default media type of an agent's content layers. Every content layer's
/// media type must start with `application/vnd.hive.agent.`.
pub const AGENT_CONTENT_MEDIA_TYPE: &str = "application/vnd.hive.agent.content.v1";
/// The prefix every agent layer media type carries.
pub const AGENT_MEDIA_TYPE_PREFIX: &str = "application/vnd.hive.agent.";
/// The media type of a DSSE envelope layer in a `.att` manifest.
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The media type of a cosign simple-signing layer in a `.sig` manifest.
pub const COSIGN_SIGNATURE_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding a cosign signature (base64 of ASN.1 DER).
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The layer annotation of a `.att` layer naming its predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";

/// The manifest annotation keys of the catalog entry.
pub mod annotation {
    /// The agent's name.
    pub const NAME: &str = "dev.hive.agent.name";
    /// Its version (also the tag).
    pub const VERSION: &str = "dev.hive.agent.version";
    /// The owning tenant.
    pub const TENANT: &str = "dev.hive.agent.tenant";
    /// `sandbox` or `production`.
    pub const CHANNEL: &str = "dev.hive.agent.channel";
    /// `public`, `tenant` or `private`.
    pub const VISIBILITY: &str = "dev.hive.agent.visibility";
    /// For `private`: the roles that may see it, comma-separated.
    pub const ROLES: &str = "dev.hive.agent.roles";
    /// Free text.
    pub const DESCRIPTION: &str = "dev.hive.agent.description";
    /// `tenant/principal` of the publisher.
    pub const PUBLISHED_BY: &str = "dev.hive.agent.published-by";
    /// Provenance summary (JSON of [`super::ProvenanceSummary`]).
    pub const PROVENANCE: &str = "dev.hive.agent.provenance";
    /// Metric values (JSON object of name → number).
    pub const METRICS: &str = "dev.hive.agent.metrics";
    /// For a promoted agent: `repository@digest` of the sandbox artifact.
    pub const PROMOTED_FROM: &str = "dev.hive.agent.promoted-from";
    /// RFC 3339 creation time (standard OCI key).
    pub const CREATED: &str = "org.opencontainers.image.created";
    /// Title (standard OCI key; the name).
    pub const TITLE: &str = "org.opencontainers.image.title";
    /// Version (standard OCI key).
    pub const OCI_VERSION: &str = "org.opencontainers.image.version";
    /// Description (standard OCI key).
    pub const OCI_DESCRIPTION: &str = "org.opencontainers.image.description";

    /// The keys a signature's payload must carry, with the entry's values
    /// (checked on every pull).
    pub const SIGNED: [&str; 4] = [NAME, VERSION, TENANT, CHANNEL];
}

/// Where an agent is: the sandbox (what loops produce) or production (reached
/// only by promotion).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Experiments.
    Sandbox,
    /// Promoted agents.
    Production,
}

impl Channel {
    /// Both channels.
    pub const ALL: [Channel; 2] = [Channel::Sandbox, Channel::Production];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sandbox => "sandbox",
            Channel::Production => "production",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = ApiaryError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sandbox" => Ok(Channel::Sandbox),
            "production" => Ok(Channel::Production),
            _ => Err(ApiaryError::invalid(format!(
                "unknown channel {s:?}: expected sandbox or production"
            ))),
        }
    }
}

/// Who may see (and so list, get and pull) an agent. Every version of an agent
/// has the same visibility.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Visibility {
    /// Every principal with registry read access, in every tenant.
    Public,
    /// The principals of the owning tenant.
    Tenant,
    /// The principals of the owning tenant whose role is listed.
    Private {
        /// The roles that may see it (never empty).
        roles: BTreeSet<Role>,
    },
}

impl Visibility {
    /// `Private` visibility for `roles`.
    pub fn private(roles: impl IntoIterator<Item = Role>) -> Self {
        Visibility::Private {
            roles: roles.into_iter().collect(),
        }
    }

    /// The annotation value (`public`, `tenant`, `private`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Tenant => "tenant",
            Visibility::Private { .. } => "private",
        }
    }

    /// Whether `p` may see an agent of `tenant` with this visibility. The one
    /// decision behind listing, getting, pulling and the registry token
    /// grants, so that what a caller can list is exactly what it can pull.
    ///
    /// Workers see nothing (a worker's only business is its node's leases);
    /// Hive itself and `system:admin` see everything.
    pub fn allows(&self, p: &Principal, tenant: &TenantId) -> bool {
        if matches!(p.kind, PrincipalKind::Worker { .. }) {
            return false;
        }
        if matches!(p.kind, PrincipalKind::System) || p.is_cross_tenant() {
            return true;
        }
        match self {
            Visibility::Public => true,
            Visibility::Tenant => &p.tenant == tenant,
            Visibility::Private { roles } => {
                &p.tenant == tenant && Role::of(&p.kind).is_some_and(|r| roles.contains(&r))
            }
        }
    }

    fn validate(&self) -> Result<()> {
        match self {
            Visibility::Private { roles } if roles.is_empty() => Err(ApiaryError::invalid(
                "private visibility needs at least one role",
            )),
            Visibility::Private { roles } if roles.contains(&Role::Worker) => {
                Err(ApiaryError::invalid(
                    "private visibility cannot name the worker role: workers never read the registry",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Names one version of an agent: `tenant/channel/name:version`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AgentRef {
    /// The owning tenant.
    pub tenant: TenantId,
    /// The channel.
    pub channel: Channel,
    /// The agent's name.
    pub name: String,
    /// The version.
    pub version: String,
}

impl AgentRef {
    /// A reference.
    pub fn new(
        tenant: impl Into<TenantId>,
        channel: Channel,
        name: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        AgentRef {
            tenant: tenant.into(),
            channel,
            name: name.into(),
            version: version.into(),
        }
    }

    /// The same agent and version in another channel.
    pub fn in_channel(&self, channel: Channel) -> Self {
        AgentRef {
            channel,
            ..self.clone()
        }
    }

    /// `tenant/channel/name`: the agent without its version (the index key and
    /// the repository path below the prefix).
    pub fn agent_key(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.channel, self.name)
    }

    /// Checks that every part is valid in a registry path and tag.
    pub fn validate(&self) -> Result<()> {
        validate_component("tenant", self.tenant.as_str())?;
        validate_component("name", &self.name)?;
        validate_version(&self.version)
    }
}

impl fmt::Display for AgentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.agent_key(), self.version)
    }
}

impl FromStr for AgentRef {
    type Err = ApiaryError;

    /// Parses `tenant/channel/name:version`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            ApiaryError::invalid(format!(
                "agent reference {s:?}: expected tenant/channel/name:version"
            ))
        };
        let (path, version) = s.rsplit_once(':').ok_or_else(bad)?;
        let mut parts = path.split('/');
        let (Some(tenant), Some(channel), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let r = AgentRef::new(tenant, channel.parse()?, name, version);
        r.validate()?;
        Ok(r)
    }
}

/// Where an agent came from: the loop that generated it and what it used.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProvenanceSummary {
    /// The generating loop (the SLSA builder id), a URI.
    pub builder_id: String,
    /// The loop run (the SLSA invocation id).
    pub invocation_id: String,
    /// Where the loop's rationale for this agent is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rationale_uri: Option<String>,
    /// Where the metrics document is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_uri: Option<String>,
    /// The base model (a resolved dependency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// The parent agent (a resolved dependency), `repository@digest` or a
    /// reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_agent: Option<String>,
}

/// One version of an agent as the catalog shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentEntry {
    /// Which agent and version.
    pub reference: AgentRef,
    /// Free text.
    pub description: String,
    /// Who may see it.
    pub visibility: Visibility,
    /// Where it came from (sandbox agents a loop produced).
    pub provenance: Option<ProvenanceSummary>,
    /// The metrics the loop measured.
    pub metrics: BTreeMap<String, f64>,
    /// The full repository path in the registry (with the prefix).
    pub repository: String,
    /// The manifest digest (`sha256:…`).
    pub digest: String,
    /// `tenant/principal` of the publisher (or promoter).
    pub published_by: String,
    /// When it was published.
    pub created_at: Timestamp,
    /// For a promoted agent: `repository@digest` of the sandbox artifact.
    pub promoted_from: Option<String>,
}

impl AgentEntry {
    /// The manifest annotations that carry this entry.
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        let r = &self.reference;
        let mut a = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            a.insert(k.to_owned(), v);
        };
        put(annotation::NAME, r.name.clone());
        put(annotation::VERSION, r.version.clone());
        put(annotation::TENANT, r.tenant.to_string());
        put(annotation::CHANNEL, r.channel.to_string());
        put(annotation::VISIBILITY, self.visibility.as_str().into());
        if let Visibility::Private { roles } = &self.visibility {
            let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            put(annotation::ROLES, roles.join(","));
        }
        put(annotation::DESCRIPTION, self.description.clone());
        put(annotation::PUBLISHED_BY, self.published_by.clone());
        if let Some(p) = &self.provenance {
            put(
                annotation::PROVENANCE,
                serde_json::to_string(p).unwrap_or_default(),
            );
        }
        put(
            annotation::METRICS,
            serde_json::to_string(&self.metrics).unwrap_or_default(),
        );
        if let Some(from) = &self.promoted_from {
            put(annotation::PROMOTED_FROM, from.clone());
        }
        put(annotation::CREATED, rfc3339(self.created_at));
        put(annotation::TITLE, r.name.clone());
        put(annotation::OCI_VERSION, r.version.clone());
        put(annotation::OCI_DESCRIPTION, self.description.clone());
        a
    }

    /// Reads an entry back from manifest annotations. Every catalog key must be
    /// present and well-formed; the error names the first that is not.
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
        repository: &str,
        digest: &str,
    ) -> std::result::Result<Self, (String, String)> {
        let get = |k: &str| {
            annotations
                .get(k)
                .cloned()
                .ok_or_else(|| (k.to_owned(), "missing".to_owned()))
        };
        let bad = |k: &str, e: String| (k.to_owned(), e);
        let channel: Channel = get(annotation::CHANNEL)?
            .parse()
            .map_err(|e: ApiaryError| bad(annotation::CHANNEL, e.to_string()))?;
        let visibility = match get(annotation::VISIBILITY)?.as_str() {
            "public" => Visibility::Public,
            "tenant" => Visibility::Tenant,
            "private" => {
                let roles = get(annotation::ROLES)?
                    .split(',')
                    .map(|r| r.trim().parse::<Role>())
                    .collect::<std::result::Result<BTreeSet<Role>, _>>()
                    .map_err(|e| bad(annotation::ROLES, e.to_string()))?;
                Visibility::Private { roles }
            }
            other => {
                return Err(bad(
                    annotation::VISIBILITY,
                    format!("unknown visibility {other:?}"),
                ));
            }
        };
        let provenance = match annotations.get(annotation::PROVENANCE) {
            Some(p) => Some(
                serde_json::from_str(p).map_err(|e| bad(annotation::PROVENANCE, e.to_string()))?,
            ),
            None => None,
        };
        let metrics = serde_json::from_str(&get(annotation::METRICS)?)
            .map_err(|e| bad(annotation::METRICS, e.to_string()))?;
        let created_at = parse_rfc3339(&get(annotation::CREATED)?)
            .ok_or_else(|| bad(annotation::CREATED, "not an RFC 3339 UTC time".into()))?;
        Ok(AgentEntry {
            reference: AgentRef::new(
                get(annotation::TENANT)?,
                channel,
                get(annotation::NAME)?,
                get(annotation::VERSION)?,
            ),
            description: get(annotation::DESCRIPTION)?,
            visibility,
            provenance,
            metrics,
            repository: repository.to_owned(),
            digest: digest.to_owned(),
            published_by: get(annotation::PUBLISHED_BY)?,
            created_at,
            promoted_from: annotations.get(annotation::PROMOTED_FROM).cloned(),
        })
    }

    /// Whether `p` may see this entry ([`Visibility::allows`]).
    pub fn visible_to(&self, p: &Principal) -> bool {
        self.visibility.allows(p, &self.reference.tenant)
    }

    /// Checks the entry's reference, visibility and provenance summary.
    pub fn validate(&self) -> Result<()> {
        self.reference.validate()?;
        self.visibility.validate()?;
        if self.description.len() > 4096 {
            return Err(ApiaryError::invalid(
                "description is longer than 4096 bytes",
            ));
        }
        for (name, v) in &self.metrics {
            if name.is_empty() || !v.is_finite() {
                return Err(ApiaryError::invalid(format!(
                    "metric {name:?} must have a name and a finite value, got {v}"
                )));
            }
        }
        Ok(())
    }
}

/// A registry path component (tenant, agent name): lowercase letters and
/// digits, separated by single `.`, `_` or `-`, at most 64 bytes.
/// Checks one registry path component (a tenant or agent name).
pub fn validate_component(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.split(['.', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(ApiaryError::invalid(format!(
            "{what} {s:?} is not a valid registry path component: lowercase letters and \
             digits separated by single '.', '_' or '-', at most 64 bytes"
        )))
    }
}

/// A version is an OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`, and not
/// `sha256-…` (the signature and attestation tags).
/// Checks a version (an OCI tag).
pub fn validate_version(s: &str) -> Result<()> {
    let bytes = s.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !s.starts_with("sha256-");
    if ok {
        Ok(())
    } else {
        Err(ApiaryError::invalid(format!(
            "version {s:?} is not a valid OCI tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}, not sha256-…)"
        )))
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of a timestamp (UTC).
pub fn rfc3339(t: Timestamp) -> String {
    let ms = t.as_millis();
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// Parses what [`rfc3339`] writes (and the same without milliseconds).
pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, milli) = match time.split_once('.') {
        Some((hms, frac)) if frac.len() == 3 => (hms, frac.parse::<i64>().ok()?),
        Some(_) => return None,
        None => (time, 0),
    };
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(y, m, day);
    Some(Timestamp::from_millis(
        days * 86_400_000 + h * 3_600_000 + min * 60_000 + sec * 1000 + milli,
    ))
}

// Howard Hinnant's civil calendar algorithms.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;

    fn entry(visibility: Visibility) -> AgentEntry {
        AgentEntry {
            reference: AgentRef::new("acme", Channel::Sandbox, "summarize", "1.2.0"),
            description: "Summarizes".into(),
            visibility,
            provenance: Some(ProvenanceSummary {
                builder_id: "https://hive.example/loops/l1".into(),
                invocation_id: "run-7".into(),
                metrics_uri: Some("s3://m/run-7.json".into()),
                ..ProvenanceSummary::default()
            }),
            metrics: [("accuracy".to_owned(), 0.93)].into(),
            repository: "hive/acme/sandbox/summarize".into(),
            digest: "sha256:00".into(),
            published_by: "acme/alice".into(),
            created_at: Timestamp::from_millis(1_700_000_000_123),
            promoted_from: None,
        }
    }

    #[test]
    fn annotations_round_trip_every_field() {
        for v in [
            Visibility::Public,
            Visibility::Tenant,
            Visibility::private([Role::Admin, Role::Operator]),
        ] {
            let e = entry(v);
            let back = AgentEntry::from_annotations(&e.to_annotations(), &e.repository, &e.digest)
                .unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn a_missing_annotation_is_named() {
        let e = entry(Visibility::Tenant);
        let mut a = e.to_annotations();
        a.remove(annotation::CHANNEL);
        let (key, why) = AgentEntry::from_annotations(&a, "r", "d").unwrap_err();
        assert_eq!(
            (key.as_str(), why.as_str()),
            (annotation::CHANNEL, "missing")
        );
    }

    #[test]
    fn visibility_decides_per_role_and_tenant() {
        let acme = TenantId::new("acme");
        let user = Principal::user("acme", "u");
        let op = Principal::operator("acme", "o");
        let admin = Principal::admin("acme", "a");
        let worker = Principal::worker("acme", NodeId::new());
        let other = Principal::admin("globex", "g");
        let private = Visibility::private([Role::Operator, Role::Admin]);
        let table = [
            (&Visibility::Public, [true, true, true, false, true]),
            (&Visibility::Tenant, [true, true, true, false, false]),
            (&private, [false, true, true, false, false]),
        ];
        for (v, expected) in table {
            let got = [&user, &op, &admin, &worker, &other].map(|p| v.allows(p, &acme));
            assert_eq!(got, expected, "{v:?}");
        }
        assert!(private.allows(&Principal::system(), &acme));
    }

    #[test]
    fn references_parse_and_validate() {
        let r: AgentRef = "acme/production/summarize:1.2.0".parse().unwrap();
        assert_eq!(r.channel, Channel::Production);
        assert_eq!(r.to_string(), "acme/production/summarize:1.2.0");
        for bad in [
            "acme/sandbox/summarize",
            "acme/staging/x:1",
            "Acme/sandbox/x:1",
            "acme/sandbox/x:sha256-abc",
            "acme/sandbox/a--b:1",
            "acme/sandbox/x:.1",
        ] {
            assert!(bad.parse::<AgentRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_round_trips() {
        for ms in [0, 951_782_400_000, 1_700_000_000_123, 4_102_444_799_999] {
            let t = Timestamp::from_millis(ms);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{}", rfc3339(t));
        }
        assert_eq!(
            rfc3339(Timestamp::from_millis(951_782_400_000)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00Z").map(|t| t.as_millis()),
            Some(951_782_400_000)
        );
        assert_eq!(parse_rfc3339("2000-13-01T00:00:00Z"), None);
    }
}
