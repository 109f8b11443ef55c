//! [`HiveEngine`]: an engine on a backend chosen by URL.

use std::sync::Arc;
use std::time::Duration;

use crate::HiveError;
use crate::runtime::run;
use crate::streams::{FeedStream, TaskEventStream, WorkflowEventStream};
use crate::types::{
    Principal, Submitted, Task, TaskPage, TaskQuery, TaskSpec, WorkflowSpec, WorkflowSubmitted,
    WorkflowView,
};
use crate::worker::{self, AttemptBoard, AttemptSink, WorkerHandle, WorkerOptions};

pub(crate) fn task_id(id: &str) -> Result<hive::TaskId, HiveError> {
    id.parse()
        .map_err(|_| HiveError::argument(format!("not a task id: {id:?}")))
}

fn workflow_id(id: &str) -> Result<hive::WorkflowId, HiveError> {
    id.parse()
        .map_err(|_| HiveError::argument(format!("not a workflow id: {id:?}")))
}

/// An engine on a backend chosen by URL: `memory://`, `sqlite://PATH` (on
/// Android, a file in the app's files directory), `postgres://…`,
/// `redis://…`. Close it when done (Kotlin: `use {}`).
#[derive(uniffi::Object)]
pub struct HiveEngine {
    hive: hive::Hive,
    url: String,
}

impl HiveEngine {
    fn hive(&self) -> Result<hive::Hive, HiveError> {
        if self.hive.is_shut_down() {
            return Err(HiveError::Shutdown(format!(
                "this Hive ({}) was closed",
                self.url
            )));
        }
        Ok(self.hive.clone())
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl HiveEngine {
    /// Opens the backend `url` names and starts an engine on it.
    #[uniffi::constructor]
    pub async fn open(url: String) -> Result<Arc<Self>, HiveError> {
        let u = url.clone();
        let hive = run(async move { hive::open(&u).await.map_err(HiveError::from) }).await?;
        Ok(Arc::new(HiveEngine { hive, url }))
    }

    /// The URL it was opened with.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Whether [`HiveEngine::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.hive.is_shut_down()
    }

    /// Stops the engine: its workers stop claiming, the supervisor and the
    /// workflow driver stop. Stored state stays. Idempotent. (Kotlin's
    /// `close()` frees the object; the `dev.hive.Hive` wrapper calls both.)
    pub fn shutdown(&self) {
        self.hive.shutdown();
    }

    /// Submits a task.
    pub async fn submit(
        &self,
        principal: Principal,
        spec: TaskSpec,
    ) -> Result<Submitted, HiveError> {
        let (hive, p, spec) = (self.hive()?, principal.to_hive()?, spec.to_hive("")?);
        run(async move { Ok(hive.submit(&p, spec).await?.into()) }).await
    }

    /// Submits many tasks in one round trip, in order.
    pub async fn submit_batch(
        &self,
        principal: Principal,
        specs: Vec<TaskSpec>,
    ) -> Result<Vec<Submitted>, HiveError> {
        let (hive, p) = (self.hive()?, principal.to_hive()?);
        let specs = specs
            .iter()
            .enumerate()
            .map(|(i, s)| s.to_hive(&format!("[{i}].")))
            .collect::<Result<Vec<_>, _>>()?;
        run(async move {
            let out = hive.submit_batch(&p, specs).await?;
            Ok(out.into_iter().map(Submitted::from).collect())
        })
        .await
    }

    /// A task; another tenant's is `NotFound`.
    pub async fn get_task(&self, principal: Principal, task_id: String) -> Result<Task, HiveError> {
        let (hive, p, id) = (self.hive()?, principal.to_hive()?, self::task_id(&task_id)?);
        run(async move { Ok(hive.get_task(&p, id).await?.into()) }).await
    }

    /// One page of the caller's tenant's tasks.
    pub async fn list_tasks(
        &self,
        principal: Principal,
        query: TaskQuery,
    ) -> Result<TaskPage, HiveError> {
        let (hive, p, q) = (self.hive()?, principal.to_hive()?, query.to_hive()?);
        run(async move {
            let page = hive.list_tasks(&p, &q).await?;
            Ok(TaskPage {
                items: page.items.into_iter().map(Task::from).collect(),
                next: page.next.map(|id| id.to_string()),
            })
        })
        .await
    }

    /// Cancels a task that has not ended (its handler's coroutine is
    /// cancelled). Cancelling an ended task is `AlreadyTerminal`.
    pub async fn cancel(
        &self,
        principal: Principal,
        task_id: String,
        reason: String,
    ) -> Result<(), HiveError> {
        let (hive, p, id) = (self.hive()?, principal.to_hive()?, self::task_id(&task_id)?);
        run(async move {
            hive.cancel(&p, id, reason).await?;
            Ok(())
        })
        .await
    }

    /// Waits until the task ends and returns it; with `timeout`, gives up
    /// with `Timeout` (the task goes on).
    pub async fn wait(
        &self,
        principal: Principal,
        task_id: String,
        timeout: Option<Duration>,
    ) -> Result<Task, HiveError> {
        let (hive, p, id) = (self.hive()?, principal.to_hive()?, self::task_id(&task_id)?);
        run(async move {
            let task = match timeout {
                Some(t) => hive.wait_timeout(&p, id, t).await?,
                None => hive.wait(&p, id).await?,
            };
            Ok(task.into())
        })
        .await
    }

    /// The task's events after `after_seq` (0: from the start), then live
    /// ones; the stream ends right after the one terminal event.
    pub async fn events(
        &self,
        principal: Principal,
        task_id: String,
        after_seq: u64,
    ) -> Result<Arc<TaskEventStream>, HiveError> {
        let (hive, p, id) = (self.hive()?, principal.to_hive()?, self::task_id(&task_id)?);
        let sub = run(async move { Ok(hive.subscribe(&p, id, after_seq).await?) }).await?;
        Ok(TaskEventStream::new(sub))
    }

    /// Every task event of the caller's tenant after `cursor` (only the
    /// terminal ones with `terminal_only`), then live; it does not end by
    /// itself (close it).
    pub async fn feed(
        &self,
        principal: Principal,
        cursor: u64,
        terminal_only: bool,
    ) -> Result<Arc<FeedStream>, HiveError> {
        let (hive, p) = (self.hive()?, principal.to_hive()?);
        let sub = run(async move { Ok(hive.feed(&p, cursor).await?) }).await?;
        Ok(FeedStream::new(sub, terminal_only))
    }

    /// Submits a workflow.
    pub async fn submit_workflow(
        &self,
        principal: Principal,
        spec: WorkflowSpec,
    ) -> Result<WorkflowSubmitted, HiveError> {
        let (hive, p, spec) = (self.hive()?, principal.to_hive()?, spec.to_hive()?);
        run(async move {
            let s = hive.submit_workflow(&p, spec).await?;
            Ok(WorkflowSubmitted {
                id: s.id.to_string(),
                created: s.created,
            })
        })
        .await
    }

    /// A workflow with every step; another tenant's is `NotFound`.
    pub async fn get_workflow(
        &self,
        principal: Principal,
        workflow_id: String,
    ) -> Result<WorkflowView, HiveError> {
        let (hive, p, id) = (
            self.hive()?,
            principal.to_hive()?,
            self::workflow_id(&workflow_id)?,
        );
        run(async move { Ok(hive.get_workflow(&p, id).await?.into()) }).await
    }

    /// Cancels a running workflow and its running tasks.
    pub async fn cancel_workflow(
        &self,
        principal: Principal,
        workflow_id: String,
        reason: String,
    ) -> Result<(), HiveError> {
        let (hive, p, id) = (
            self.hive()?,
            principal.to_hive()?,
            self::workflow_id(&workflow_id)?,
        );
        run(async move { Ok(hive.cancel_workflow(&p, id, reason).await?) }).await
    }

    /// The workflow's events after `after_seq`, then live ones; the stream
    /// ends right after its one `finished` event.
    pub async fn workflow_events(
        &self,
        principal: Principal,
        workflow_id: String,
        after_seq: u64,
    ) -> Result<Arc<WorkflowEventStream>, HiveError> {
        let (hive, p, id) = (
            self.hive()?,
            principal.to_hive()?,
            self::workflow_id(&workflow_id)?,
        );
        let sub = run(async move { Ok(hive.subscribe_workflow(&p, id, after_seq).await?) }).await?;
        Ok(WorkflowEventStream::new(sub))
    }

    /// Registers a node that runs the tasks of `agents` and starts claiming:
    /// each attempt becomes a job on `board`, handed to `sink` (the Kotlin
    /// handlers) in batches.
    pub async fn start_worker(
        &self,
        principal: Principal,
        options: WorkerOptions,
        agents: Vec<String>,
        board: Arc<AttemptBoard>,
        sink: Arc<dyn AttemptSink>,
    ) -> Result<Arc<WorkerHandle>, HiveError> {
        let (hive, p) = (self.hive()?, principal.to_hive()?);
        worker::start(hive, p, options, agents, board, sink).await
    }
}
