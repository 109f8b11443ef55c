//! `admin tasks cancel`: cancel the unfinished tasks that match a filter, or
//! with `--dry-run` list them.
//!
//! The same engine calls as the HTTP API's bulk cancel (`POST
//! /api/tasks/cancel`): pages of `Hive::list_tasks` in each tenant, then one
//! `Hive::cancel` per task, each authorized and audited as `task.cancel`
//! with the local operator as actor, in the task's tenant.

use std::collections::BTreeMap;

use hive::PrincipalId;
use hive::prelude::*;
use serde::Serialize;

use super::output::{print, print_json, print_table, progress, table};
use super::{AdminError, OutputArgs, operator_in, tenants};

/// The states a task can be cancelled in.
const UNFINISHED: [TaskState; 3] = [TaskState::Pending, TaskState::Scheduled, TaskState::Running];

/// `admin tasks cancel`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct CancelArgs {
    /// Only this tenant's tasks [default: every tenant's].
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only tasks in these states, comma-separated (pending, scheduled,
    /// running) [default: all three].
    #[arg(long, value_delimiter = ',', value_name = "STATE,...")]
    pub state: Vec<String>,
    /// Only tasks for this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only tasks submitted by this principal.
    #[arg(long)]
    pub owner: Option<String>,
    /// List what would be cancelled; cancel nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Recorded with each cancellation.
    #[arg(long, default_value = "cancelled by honeycomb admin tasks cancel")]
    pub reason: String,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Which tasks to cancel.
#[derive(Clone, Debug, Default)]
pub struct CancelFilter {
    /// The tenant (every tenant's when `None`).
    pub tenant: Option<String>,
    /// The states (all unfinished ones when empty).
    pub states: Vec<String>,
    /// The agent.
    pub agent: Option<String>,
    /// The principal that submitted them.
    pub owner: Option<String>,
}

impl CancelFilter {
    /// The engine's query for the filter, checked: a state that is not an
    /// unfinished task state, or a malformed owner, is refused; so is a filter
    /// that names nothing at all (every unfinished task of every tenant).
    pub fn query(&self) -> Result<TaskQuery, AdminError> {
        if self.tenant.is_none()
            && self.states.is_empty()
            && self.agent.is_none()
            && self.owner.is_none()
        {
            return Err(AdminError::Invalid(
                "name what to cancel with --tenant, --state, --agent or --owner (refusing to \
                 cancel every unfinished task of every tenant)"
                    .into(),
            ));
        }
        let mut query = TaskQuery::default();
        for s in self
            .states
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            let state: TaskState = s.parse().map_err(|_| {
                AdminError::Invalid(format!(
                    "--state {s:?}: not a task state (pending, scheduled or running)"
                ))
            })?;
            if state.is_terminal() {
                return Err(AdminError::Invalid(format!(
                    "--state {s}: a {s} task has ended and cannot be cancelled (pending, \
                     scheduled or running)"
                )));
            }
            if !query.states.contains(&state) {
                query.states.push(state);
            }
        }
        if query.states.is_empty() {
            query.states = UNFINISHED.to_vec();
        }
        if let Some(agent) = &self.agent {
            if agent.trim().is_empty() {
                return Err(AdminError::Invalid("--agent must not be empty".into()));
            }
            query.agent = Some(AgentRef::new(agent.trim()));
        }
        if let Some(owner) = &self.owner {
            let id = PrincipalId::parse(owner.trim())
                .map_err(|e| AdminError::Invalid(format!("--owner {owner:?}: {e}")))?;
            query.owner = Some(id);
        }
        query.limit = Some(TaskQuery::MAX_LIMIT);
        Ok(query)
    }
}

/// A task that matched.
#[derive(Clone, Debug, Serialize)]
pub struct MatchedTask {
    /// Its id.
    pub id: TaskId,
    /// Its tenant.
    pub tenant: TenantId,
    /// The principal that submitted it.
    pub owner: PrincipalId,
    /// Its agent.
    pub agent: String,
    /// Its state when it matched.
    pub state: TaskState,
}

/// A task that matched but was not cancelled, and why.
#[derive(Clone, Debug, Serialize)]
pub struct NotCancelled {
    /// The task.
    pub id: TaskId,
    /// Why.
    pub reason: String,
}

/// What `tasks cancel` did (or, on a dry run, would do).
#[derive(Clone, Debug, Serialize)]
pub struct Cancellation {
    /// Whether nothing was cancelled on purpose.
    pub dry_run: bool,
    /// Every unfinished task that matched, in tenant then submission order.
    pub matched: Vec<MatchedTask>,
    /// The ones cancelled (empty on a dry run).
    pub cancelled: Vec<TaskId>,
    /// The ones that ended on their own meanwhile.
    pub skipped: Vec<NotCancelled>,
    /// The ones the engine refused to cancel.
    pub failed: Vec<NotCancelled>,
}

/// The unfinished tasks matching `filter`, from every page of
/// `Hive::list_tasks` in each tenant.
pub async fn matching_tasks(
    hive: &Hive,
    filter: &CancelFilter,
) -> Result<Vec<MatchedTask>, AdminError> {
    let query = filter.query()?;
    let tenants = tenants(hive, filter.tenant.as_deref()).await?;
    let bar = progress(None, "matching tasks");
    let mut matched = Vec::new();
    for tenant in tenants {
        bar.set_message(tenant.to_string());
        let p = operator_in(&tenant);
        let mut query = query.clone();
        loop {
            let page = match hive.list_tasks(&p, &query).await {
                Ok(page) => page,
                Err(e) => {
                    bar.finish_and_clear();
                    return Err(e.into());
                }
            };
            bar.inc(page.items.len() as u64);
            matched.extend(page.items.into_iter().map(|t| MatchedTask {
                id: t.id,
                tenant: t.owner.tenant,
                owner: t.owner.principal,
                agent: t.spec.agent.as_str().to_owned(),
                state: t.state,
            }));
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
    }
    bar.finish_and_clear();
    Ok(matched)
}

/// Cancels the unfinished tasks matching `filter` (nothing on a dry run),
/// each as the local operator in the task's tenant, with `reason`.
pub async fn cancel_tasks(
    hive: &Hive,
    filter: &CancelFilter,
    dry_run: bool,
    reason: &str,
) -> Result<Cancellation, AdminError> {
    let matched = matching_tasks(hive, filter).await?;
    let mut out = Cancellation {
        dry_run,
        matched,
        cancelled: Vec::new(),
        skipped: Vec::new(),
        failed: Vec::new(),
    };
    if dry_run {
        return Ok(out);
    }
    let bar = progress(Some(out.matched.len() as u64), "cancelling tasks");
    for task in &out.matched {
        match hive
            .cancel(&operator_in(&task.tenant), task.id, reason)
            .await
        {
            Ok(_) => out.cancelled.push(task.id),
            Err(e @ hive::Error::AlreadyTerminal { .. }) => out.skipped.push(NotCancelled {
                id: task.id,
                reason: e.to_string(),
            }),
            Err(e) => out.failed.push(NotCancelled {
                id: task.id,
                reason: e.to_string(),
            }),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// `admin tasks cancel`: a table (or `--json`) of every matched task and
/// what became of it; a task the engine refused fails the command after
/// the report ([`AdminError::CancelFailed`]).
pub(crate) async fn cancel(hive: &Hive, args: CancelArgs) -> Result<(), AdminError> {
    let filter = CancelFilter {
        tenant: args.tenant,
        states: args.state,
        agent: args.agent,
        owner: args.owner,
    };
    let done = cancel_tasks(hive, &filter, args.dry_run, &args.reason).await?;
    if args.output.json {
        print_json(&done)?;
    } else {
        let mut results: BTreeMap<TaskId, String> = BTreeMap::new();
        for id in &done.cancelled {
            results.insert(*id, "cancelled".into());
        }
        for s in &done.skipped {
            results.insert(s.id, format!("skipped: {}", s.reason));
        }
        for f in &done.failed {
            results.insert(f.id, format!("FAILED: {}", f.reason));
        }
        let mut t = table(&["TASK", "TENANT", "OWNER", "AGENT", "STATE", "RESULT"]);
        for m in &done.matched {
            let result = match results.get(&m.id) {
                Some(r) => r.clone(),
                None if done.dry_run => "would be cancelled".into(),
                None => "-".into(),
            };
            t.add_row(vec![
                m.id.to_string(),
                m.tenant.to_string(),
                m.owner.to_string(),
                m.agent.clone(),
                m.state.to_string(),
                result,
            ]);
        }
        print_table(&t, "no unfinished task matches")?;
        let summary = if done.dry_run {
            format!(
                "dry run: {} tasks would be cancelled; nothing was\n",
                done.matched.len()
            )
        } else {
            format!(
                "cancelled {} of {} matched tasks ({} had ended, {} failed)\n",
                done.cancelled.len(),
                done.matched.len(),
                done.skipped.len(),
                done.failed.len()
            )
        };
        print(&summary)?;
    }
    match done.failed.first() {
        Some(first) => Err(AdminError::CancelFailed {
            failed: done.failed.len(),
            matched: done.matched.len(),
            first: format!("{}: {}", first.id, first.reason),
        }),
        None => Ok(()),
    }
}
