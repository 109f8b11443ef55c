//! The catalog index and the experiments, kept as records of the engine's
//! [`RecordStore`] (any backend): one record per agent (kind
//! [`AGENT_KIND`], id `tenant/channel/name`, status = channel) holding every
//! version's entry, and one record per experiment (kind [`EXPERIMENT_KIND`],
//! id `tenant/name:version`, status = [`ExperimentStatus`]). Every change is a
//! compare-and-set write that appends an event to the record's stream.

use std::collections::BTreeMap;
use std::fmt;

use hive_core::clock::Timestamp;
use hive_core::principal::TenantId;
use hive_core::store::{Record, RecordQuery, RecordStore, RecordWrite};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::catalog::{AgentEntry, AgentRef, Channel, Visibility};
use crate::error::{ApiaryError, Result};

pub use hive_core::registry::{Experiment, ExperimentQuery, ExperimentStatus, PromotedTo, Refusal};

/// The record kind of catalog agents.
pub const AGENT_KIND: &str = "apiary.agent";
/// The record kind of experiments.
pub const EXPERIMENT_KIND: &str = "apiary.experiment";

const CAS_ATTEMPTS: usize = 8;

/// One agent (every version) as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct AgentRecord {
    pub(crate) visibility: Visibility,
    pub(crate) versions: BTreeMap<String, AgentEntry>,
}

fn corrupt(kind: &str, id: &str, e: impl fmt::Display) -> ApiaryError {
    ApiaryError::Core(hive_core::Error::Backend {
        message: format!("{kind} record {id} is not readable: {e}"),
        source: None,
    })
}

fn decode_agent(r: &Record) -> Result<AgentRecord> {
    serde_json::from_value(r.body.clone()).map_err(|e| corrupt(AGENT_KIND, &r.id, e))
}

pub(crate) async fn agent(store: &dyn RecordStore, key: &str) -> Result<Option<AgentRecord>> {
    match store.get_record(AGENT_KIND, key).await? {
        Some(r) => Ok(Some(decode_agent(&r)?)),
        None => Ok(None),
    }
}

pub(crate) async fn entry(store: &dyn RecordStore, r: &AgentRef) -> Result<Option<AgentEntry>> {
    Ok(agent(store, &r.agent_key())
        .await?
        .and_then(|mut a| a.versions.remove(&r.version)))
}

/// Adds a version. Refused with `Conflict` if the version exists, and with
/// `InvalidArgument` if the agent exists with another visibility (every version
/// of an agent has the same visibility, so the registry's per-repository grants
/// match the catalog exactly).
pub(crate) async fn insert_version(
    store: &dyn RecordStore,
    entry: &AgentEntry,
    event: Value,
    now: Timestamp,
) -> Result<()> {
    let r = &entry.reference;
    let key = r.agent_key();
    for _ in 0..CAS_ATTEMPTS {
        let current = store.get_record(AGENT_KIND, &key).await?;
        let (mut record, version) = match &current {
            Some(rec) => (decode_agent(rec)?, rec.version),
            None => (
                AgentRecord {
                    visibility: entry.visibility.clone(),
                    versions: BTreeMap::new(),
                },
                0,
            ),
        };
        check_new_version(&record, entry)?;
        record.versions.insert(r.version.clone(), entry.clone());
        let write = RecordWrite {
            kind: AGENT_KIND.into(),
            id: key.clone(),
            tenant: r.tenant.clone(),
            expected_version: version,
            status: r.channel.to_string(),
            body: serde_json::to_value(&record).map_err(|e| corrupt(AGENT_KIND, &key, e))?,
            events: vec![event.clone()],
            now,
        };
        match store.write_record(write).await {
            Ok(_) => return Ok(()),
            Err(hive_core::Error::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiaryError::Conflict {
        message: format!("{key}: too many concurrent changes, try again"),
    })
}

/// The checks of [`insert_version`], to run before pushing anything.
pub(crate) fn check_new_version(record: &AgentRecord, entry: &AgentEntry) -> Result<()> {
    let r = &entry.reference;
    if record.versions.contains_key(&r.version) {
        return Err(ApiaryError::Conflict {
            message: format!("{r} exists: versions are immutable, publish a new one"),
        });
    }
    if record.visibility != entry.visibility {
        return Err(ApiaryError::invalid(format!(
            "{} has visibility {:?}; every version of an agent has the same visibility",
            r.agent_key(),
            record.visibility
        )));
    }
    Ok(())
}

/// Every agent record of `channel` (or both), page by page.
pub(crate) async fn all_agents(
    store: &dyn RecordStore,
    channel: Option<Channel>,
    tenant: Option<&TenantId>,
) -> Result<Vec<AgentRecord>> {
    let mut out = Vec::new();
    let mut query = RecordQuery {
        tenant: tenant.cloned(),
        statuses: channel.iter().map(|c| c.to_string()).collect(),
        after: None,
        limit: Some(1000),
    };
    loop {
        let page = store.list_records(AGENT_KIND, &query).await?;
        let done = page.len() < query.effective_limit();
        query.after = page.last().map(|r| r.id.clone());
        for r in &page {
            out.push(decode_agent(r)?);
        }
        if done || query.after.is_none() {
            return Ok(out);
        }
    }
}

fn experiment_id(r: &AgentRef) -> String {
    format!("{}/{}:{}", r.tenant, r.name, r.version)
}

pub(crate) async fn create_experiment(
    store: &dyn RecordStore,
    e: &Experiment,
    now: Timestamp,
) -> Result<()> {
    let id = experiment_id(&e.reference);
    store
        .write_record(RecordWrite {
            kind: EXPERIMENT_KIND.into(),
            id: id.clone(),
            tenant: e.reference.tenant.clone(),
            expected_version: 0,
            status: e.status.as_str().into(),
            body: serde_json::to_value(e).map_err(|err| corrupt(EXPERIMENT_KIND, &id, err))?,
            events: vec![json!({ "event": "published", "digest": e.digest, "at": now })],
            now,
        })
        .await?;
    Ok(())
}

/// Applies `change` to the experiment of `r` (if there is one: agents
/// published without provenance have none) with a compare-and-set, appending
/// `event`.
pub(crate) async fn update_experiment(
    store: &dyn RecordStore,
    r: &AgentRef,
    event: Value,
    now: Timestamp,
    change: impl Fn(&mut Experiment),
) -> Result<()> {
    let id = experiment_id(r);
    for _ in 0..CAS_ATTEMPTS {
        let Some(rec) = store.get_record(EXPERIMENT_KIND, &id).await? else {
            return Ok(());
        };
        let mut e: Experiment = serde_json::from_value(rec.body.clone())
            .map_err(|err| corrupt(EXPERIMENT_KIND, &id, err))?;
        change(&mut e);
        let write = RecordWrite {
            kind: EXPERIMENT_KIND.into(),
            id: id.clone(),
            tenant: rec.tenant.clone(),
            expected_version: rec.version,
            status: e.status.as_str().into(),
            body: serde_json::to_value(&e).map_err(|err| corrupt(EXPERIMENT_KIND, &id, err))?,
            events: vec![event.clone()],
            now,
        };
        match store.write_record(write).await {
            Ok(_) => return Ok(()),
            Err(hive_core::Error::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiaryError::Conflict {
        message: format!("experiment {id}: too many concurrent changes, try again"),
    })
}

pub(crate) async fn experiments(
    store: &dyn RecordStore,
    query: &ExperimentQuery,
) -> Result<Vec<Experiment>> {
    let mut out = Vec::new();
    let mut q = RecordQuery {
        tenant: query.tenant.clone(),
        statuses: query.status.iter().map(|s| s.as_str().to_owned()).collect(),
        after: None,
        limit: Some(1000),
    };
    loop {
        let page = store.list_records(EXPERIMENT_KIND, &q).await?;
        let done = page.len() < q.effective_limit();
        q.after = page.last().map(|r| r.id.clone());
        for r in &page {
            let e: Experiment = serde_json::from_value(r.body.clone())
                .map_err(|err| corrupt(EXPERIMENT_KIND, &r.id, err))?;
            if query.builder_id.as_ref().is_none_or(|b| *b == e.builder_id) {
                out.push(e);
            }
        }
        if done || q.after.is_none() {
            return Ok(out);
        }
    }
}
