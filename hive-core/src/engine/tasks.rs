//! Tasks: submit, read, list, cancel, subscriptions, the feed and its consumers.

use super::*;

impl Hive {
    /// Submits one task; see [`Hive::submit_batch`].
    pub async fn submit(&self, p: &Principal, spec: TaskSpec) -> Result<Submitted> {
        let mut out = self.submit_batch(p, vec![spec]).await?;
        out.pop().ok_or_else(|| Error::Backend {
            message: "store answered an empty batch".into(),
            source: None,
        })
    }

    /// Submits tasks owned by `p`. Every spec is validated first: one invalid spec
    /// refuses the whole batch and stores nothing. A spec whose idempotency key
    /// was used before in the tenant returns the existing task.
    #[instrument(level = "debug", skip_all, fields(tenant = %p.tenant, n = specs.len()))]
    pub async fn submit_batch(
        &self,
        p: &Principal,
        specs: Vec<TaskSpec>,
    ) -> Result<Vec<Submitted>> {
        self.check_live()?;
        let n = specs.len();
        let mut specs = specs;
        for (i, spec) in specs.iter_mut().enumerate() {
            spec.resolve_concurrency().map_err(|e| match e {
                Error::InvalidSpec { field, message } if n > 1 => Error::InvalidSpec {
                    field: format!("[{i}].{field}"),
                    message,
                },
                e => e,
            })?;
        }
        let max = self.inner.config.max_submit_batch;
        self.authorize_checked(
            p,
            Action::SubmitTask,
            &Resource::Tenant(p.tenant.clone()),
            || serde_json::json!({ "tasks": n }),
            || {
                if n > max {
                    return Err(Error::InvalidArgument {
                        message: format!("batch of {n} tasks exceeds max_submit_batch {max}"),
                    });
                }
                for (i, spec) in specs.iter().enumerate() {
                    spec.validate().map_err(|e| match e {
                        Error::InvalidSpec { field, message } if n > 1 => Error::InvalidSpec {
                            field: format!("[{i}].{field}"),
                            message,
                        },
                        e => e,
                    })?;
                }
                Ok(())
            },
        )
        .await?;
        let owner = Owner {
            tenant: p.tenant.clone(),
            principal: p.id.clone(),
        };
        let tasks: Vec<NewTask> = specs
            .into_iter()
            .map(|spec| NewTask {
                id: TaskId::new(),
                owner: owner.clone(),
                spec: Arc::new(spec),
            })
            .collect();
        let strategies: Vec<(TaskId, Arc<TaskSpec>)> = tasks
            .iter()
            .filter(|t| {
                t.spec.concurrency.as_ref().is_some_and(|c| {
                    c.strategy != crate::task::ConcurrencyStrategy::Queue && c.key.is_some()
                })
            })
            .map(|t| (t.id, t.spec.clone()))
            .collect();
        let out = self
            .inner
            .store
            .submit(tasks, self.inner.clock.now())
            .await?;
        for (id, spec) in &strategies {
            if out.iter().any(|s| s.id == *id && s.created) {
                self.concurrency_strategy(p, *id, spec).await?;
            }
        }
        let created = out.iter().filter(|s| s.created).count();
        metrics::counter!("hive_tasks_submitted_total", "tenant" => p.tenant.to_string())
            .increment(created as u64);
        Ok(out)
    }

    /// Applies a full key's strategy to a task just submitted: it waits for a
    /// slot only if the key was full, and then `cancel_newest` cancels it,
    /// `cancel_in_progress` cancels the key's oldest holders until it holds
    /// a slot (each cancellation hands the freed slot to the first waiting
    /// task, so this repeats at most once per task of the key).
    async fn concurrency_strategy(&self, p: &Principal, id: TaskId, spec: &TaskSpec) -> Result<()> {
        use crate::task::ConcurrencyStrategy;
        let (Some(c), Some((key, _))) = (spec.concurrency.as_ref(), spec.concurrency_key()) else {
            return Ok(());
        };
        let mut rounds = 0u64;
        loop {
            let slots = self.inner.store.key_slots(&p.tenant, key).await?;
            if slots.holding.contains(&id) {
                return Ok(());
            }
            match self.inner.store.get_task(id).await? {
                Some(t) if t.state == crate::task::TaskState::Pending => {}
                _ => return Ok(()),
            }
            let victim = match c.strategy {
                ConcurrencyStrategy::Queue => return Ok(()),
                ConcurrencyStrategy::CancelNewest => id,
                ConcurrencyStrategy::CancelInProgress => match slots.holding.first() {
                    Some(&oldest) => oldest,
                    // A slot is free and about to be handed over.
                    None => return Ok(()),
                },
            };
            let reason = format!(
                "concurrency key {key:?} full ({}): {}",
                c.max_running,
                c.strategy.as_str()
            );
            let op = Op::Cancel {
                by: p.id.clone(),
                reason,
            };
            match self.apply_one(victim, op).await {
                Ok(ack) => {
                    count_terminal(&[(victim, ack)]);
                }
                Err(Error::InvalidTransition { .. } | Error::AlreadyTerminal { .. }) => {}
                Err(e) => return Err(e),
            }
            if victim == id {
                return Ok(());
            }
            rounds += 1;
            if rounds > u64::from(c.max_running) + slots.waiting + 1 {
                return Ok(());
            }
        }
    }

    /// One task. Another tenant's task is `NotFound`.
    #[instrument(level = "debug", skip_all, fields(task = %id))]
    pub async fn get_task(&self, p: &Principal, id: TaskId) -> Result<Task> {
        let task = self.visible_task(p, id).await?;
        self.authorize(p, Action::ReadTask, &task_resource(&task))
            .await?;
        Ok(task)
    }

    pub(super) async fn visible_task(&self, p: &Principal, id: TaskId) -> Result<Task> {
        match self.inner.store.get_task(id).await? {
            Some(t) if p.can_see_tenant(&t.owner.tenant) => Ok(t),
            _ => Err(Error::not_found("task", id)),
        }
    }

    /// A page of the caller's tenant's tasks.
    #[instrument(level = "debug", skip_all, fields(tenant = %p.tenant))]
    pub async fn list_tasks(&self, p: &Principal, query: &TaskQuery) -> Result<Page<Task>> {
        self.authorize(p, Action::ReadTask, &Resource::Tenant(p.tenant.clone()))
            .await?;
        self.inner.store.list_tasks(&p.tenant, query).await
    }

    /// Cancels a task that has not ended. Its lease, if any, is lost: the worker's
    /// late report gets `LeaseLost`.
    #[instrument(level = "debug", skip_all, fields(task = %id))]
    pub async fn cancel(
        &self,
        p: &Principal,
        id: TaskId,
        reason: impl Into<String>,
    ) -> Result<Ack> {
        let task = self.visible_task(p, id).await?;
        self.authorize(p, Action::CancelTask, &task_resource(&task))
            .await?;
        let op = Op::Cancel {
            by: p.id.clone(),
            reason: reason.into(),
        };
        let ack = self.apply_one(id, op).await?;
        count_terminal(&[(id, ack)]);
        self.wake_workflows();
        Ok(ack)
    }

    pub(super) async fn apply_one(&self, task: TaskId, op: Op) -> Result<Ack> {
        let mut out = self
            .inner
            .store
            .apply(vec![Command { task, op }], self.inner.clock.now())
            .await?;
        out.pop().unwrap_or_else(|| {
            Err(Error::Backend {
                message: "store answered an empty batch".into(),
                source: None,
            })
        })
    }

    /// The events of a task after `after_seq`, then live ones as they are stored;
    /// the subscription ends right after the terminal event.
    #[instrument(level = "debug", skip_all, fields(task = %id, after_seq))]
    pub async fn subscribe(
        &self,
        p: &Principal,
        id: TaskId,
        after_seq: u64,
    ) -> Result<TaskSubscription> {
        let task = self.visible_task(p, id).await?;
        self.authorize(p, Action::ReadTask, &task_resource(&task))
            .await?;
        Ok(TaskSubscription::new(self.detached(), id, after_seq))
    }

    /// Up to `limit` (1..=10 000) events of a task after `after_seq`, in order,
    /// without waiting for more: what is stored now. Another tenant's task is
    /// `NotFound`. To follow live events, [`Hive::subscribe`].
    #[instrument(level = "debug", skip_all, fields(task = %id, after_seq))]
    pub async fn read_events(
        &self,
        p: &Principal,
        id: TaskId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>> {
        let task = self.visible_task(p, id).await?;
        self.authorize(p, Action::ReadTask, &task_resource(&task))
            .await?;
        self.inner
            .store
            .read_events(id, after_seq, limit.clamp(1, 10_000))
            .await
    }

    /// Waits until a task ends and returns it in its terminal state (at once if
    /// it has ended). Another tenant's task is `NotFound`. See
    /// [`Hive::wait_timeout`] to bound the wait.
    #[instrument(level = "debug", skip_all, fields(task = %id))]
    pub async fn wait(&self, p: &Principal, id: TaskId) -> Result<Task> {
        let task = self.get_task(p, id).await?;
        if task.state.is_terminal() {
            return Ok(task);
        }
        let mut sub = TaskSubscription::new(self.detached(), id, task.last_seq);
        while let Some(event) = sub.next().await {
            event?;
        }
        self.visible_task(p, id).await
    }

    /// [`Hive::wait`], giving up with [`Error::Timeout`] after `timeout` (the
    /// task goes on).
    pub async fn wait_timeout(&self, p: &Principal, id: TaskId, timeout: Duration) -> Result<Task> {
        tokio::time::timeout(timeout, self.wait(p, id))
            .await
            .unwrap_or(Err(Error::Timeout(timeout)))
    }

    /// The caller's tenant's feed after `cursor`, then live; never ends by itself.
    pub async fn feed(&self, p: &Principal, cursor: u64) -> Result<FeedSubscription> {
        self.authorize(p, Action::ReadTask, &Resource::Tenant(p.tenant.clone()))
            .await?;
        Ok(FeedSubscription::new(
            self.detached(),
            p.tenant.clone(),
            cursor,
        ))
    }

    /// One page of the caller's tenant's feed after `cursor` (for pollers).
    pub async fn read_feed(
        &self,
        p: &Principal,
        cursor: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        self.authorize(p, Action::ReadTask, &Resource::Tenant(p.tenant.clone()))
            .await?;
        self.inner
            .store
            .read_feed(&p.tenant, cursor, limit.clamp(1, 10_000))
            .await
    }

    /// Acknowledges, as consumer `consumer`, the terminal events of `tasks`.
    /// Acknowledging twice, or a task that has not ended, is harmless; a task
    /// id of another tenant (or none) is `NotFound` and acknowledges nothing.
    pub async fn ack_terminal(
        &self,
        p: &Principal,
        consumer: &str,
        tasks: &[TaskId],
    ) -> Result<()> {
        self.authorize(p, Action::ConsumeFeed, &Resource::Tenant(p.tenant.clone()))
            .await?;
        validate_consumer(consumer)?;
        // Like every other call, another tenant's (or an unknown) task id is
        // `NotFound`, and nothing is acknowledged.
        let found = self.inner.store.get_tasks(tasks).await?;
        let known: rustc_hash::FxHashSet<TaskId> = found
            .iter()
            .filter(|t| t.owner.tenant == p.tenant)
            .map(|t| t.id)
            .collect();
        if let Some(missing) = tasks.iter().find(|id| !known.contains(id)) {
            return Err(Error::not_found("task", missing));
        }
        self.inner
            .store
            .ack_terminal(&p.tenant, consumer, tasks)
            .await
    }

    /// Terminal events consumer `consumer` has not acknowledged yet, oldest first.
    pub async fn unacked_terminal(
        &self,
        p: &Principal,
        consumer: &str,
        limit: usize,
    ) -> Result<Vec<FeedEvent>> {
        self.authorize(p, Action::ConsumeFeed, &Resource::Tenant(p.tenant.clone()))
            .await?;
        validate_consumer(consumer)?;
        self.inner
            .store
            .unacked_terminal(&p.tenant, consumer, limit.clamp(1, 10_000))
            .await
    }
}
