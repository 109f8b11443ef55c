//! The worker protocol: claims, starts, heartbeats, logs, reports.

use super::*;

impl Hive {
    pub(super) fn worker_node(&self, p: &Principal) -> Option<NodeId> {
        p.worker_node()
    }

    pub(super) async fn check_worker(&self, p: &Principal, node: NodeId) -> Result<()> {
        let resource = Resource::Node {
            id: node,
            tenant: None,
            owner: None,
        };
        let reason = match p.kind {
            PrincipalKind::Worker { node: own } if own == node => None,
            PrincipalKind::System => None,
            PrincipalKind::Worker { .. } => Some("a worker may only work its own node"),
            _ => Some("only the node's worker may work it"),
        };
        if let Some(reason) = reason {
            return Err(self.deny(p, Action::WorkNode, &resource, reason).await);
        }
        self.authorize(p, Action::WorkNode, &resource).await
    }

    pub(super) async fn acting_node(&self, p: &Principal) -> Result<NodeId> {
        match p.worker_node() {
            Some(node) => Ok(node),
            None => Err(self
                .deny(
                    p,
                    Action::WorkNode,
                    &Resource::System,
                    "only a worker principal bound to a node may work tasks",
                )
                .await),
        }
    }

    /// Leases eligible pending tasks to the caller's node.
    #[instrument(level = "debug", skip_all, fields(node = %node, max = options.max))]
    pub async fn claim(
        &self,
        p: &Principal,
        node: NodeId,
        options: &ClaimOptions,
    ) -> Result<ClaimResult> {
        self.check_live()?;
        self.check_worker(p, node).await?;
        let started = std::time::Instant::now();
        let claimed = self
            .inner
            .store
            .claim(ClaimRequest {
                node,
                max: options.max.max(1),
                agents: &options.agents,
                start: options.start,
                scheduler: &*self.inner.scheduler,
                now: self.inner.clock.now(),
            })
            .await?;
        metrics::histogram!("hive_claim_duration_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("hive_tasks_claimed_total").increment(claimed.tasks.len() as u64);
        Ok(claimed)
    }

    /// Starts claimed tasks (Scheduled → Running).
    pub async fn start(&self, p: &Principal, tokens: &[LeaseToken]) -> Result<Vec<Result<Ack>>> {
        let node = self.acting_node(p).await?;
        self.check_worker(p, node).await?;
        let cmds: Vec<Command> = tokens
            .iter()
            .map(|&token| Command {
                task: token.task,
                op: Op::Start { token, node },
            })
            .collect();
        let tasks: Vec<TaskId> = cmds.iter().map(|c| c.task).collect();
        let out = self.inner.store.apply(cmds, self.inner.clock.now()).await?;
        Ok(self.audit_refusals(p, &tasks, out).await)
    }

    /// Heartbeats running tasks, with optional progress. A `LeaseLost` answer
    /// tells the worker to stop that attempt.
    pub async fn heartbeat(
        &self,
        p: &Principal,
        beats: Vec<(LeaseToken, Option<serde_json::Value>)>,
    ) -> Result<Vec<Result<Ack>>> {
        let node = self.acting_node(p).await?;
        self.check_worker(p, node).await?;
        let limits = &self.inner.config.limits;
        let checked: Vec<Result<Command>> = beats
            .into_iter()
            .map(|(token, progress)| {
                limits.check_progress(progress.as_ref())?;
                Ok(Command {
                    task: token.task,
                    op: Op::Heartbeat {
                        token,
                        node,
                        progress,
                    },
                })
            })
            .collect();
        self.apply_checked(p, checked).await
    }

    /// Applies the commands that passed their checks, and answers each item in
    /// order: the check's error, or the store's answer.
    pub(super) async fn apply_checked(
        &self,
        p: &Principal,
        checked: Vec<Result<Command>>,
    ) -> Result<Vec<Result<Ack>>> {
        let mut refused: Vec<Option<Error>> = Vec::with_capacity(checked.len());
        let mut cmds = Vec::with_capacity(checked.len());
        for c in checked {
            match c {
                Ok(cmd) => {
                    refused.push(None);
                    cmds.push(cmd);
                }
                Err(e) => refused.push(Some(e)),
            }
        }
        let tasks: Vec<TaskId> = cmds.iter().map(|c| c.task).collect();
        let out = if cmds.is_empty() {
            Vec::new()
        } else {
            let out = self.inner.store.apply(cmds, self.inner.clock.now()).await?;
            self.audit_refusals(p, &tasks, out).await
        };
        let mut applied = out.into_iter();
        Ok(refused
            .into_iter()
            .map(|r| match r {
                Some(e) => Err(e),
                None => applied.next().unwrap_or_else(empty_batch),
            })
            .collect())
    }

    /// Appends a log line to a task the caller's node holds.
    pub async fn log(
        &self,
        p: &Principal,
        token: LeaseToken,
        stream: &str,
        line: &str,
    ) -> Result<Ack> {
        let node = self.acting_node(p).await?;
        self.check_worker(p, node).await?;
        if stream.is_empty() || stream.len() > 64 || stream.chars().any(char::is_control) {
            return Err(Error::InvalidArgument {
                message: "log stream names are 1 to 64 bytes with no control characters".into(),
            });
        }
        self.inner.config.limits.check_log_line(line)?;
        let ack = self
            .apply_one(
                token.task,
                Op::Log {
                    token,
                    node,
                    stream: stream.to_owned(),
                    line: line.to_owned(),
                },
            )
            .await;
        match ack {
            Err(e @ Error::Forbidden { .. }) => Err(self.refused_on_task(p, token.task, e).await),
            other => other,
        }
    }

    /// Reports the outcome of leases. Each answer is the [`Ack`] with the seq of the
    /// stored terminal (or `AttemptFailed`) event; a duplicate of an accepted report
    /// gets the same answer; a report on a lease that was taken away gets
    /// `LeaseLost`; an output or error over [`HiveConfig::limits`] gets
    /// [`Error::TooLarge`] and stores nothing. Retry on an `Err` of the whole
    /// call until an answer arrives.
    #[instrument(level = "debug", skip_all, fields(n = reports.len()))]
    pub async fn report(&self, p: &Principal, reports: Vec<Report>) -> Result<Vec<Result<Ack>>> {
        let node = self.acting_node(p).await?;
        self.check_worker(p, node).await?;
        let limits = &self.inner.config.limits;
        let ids: Vec<TaskId> = reports.iter().map(|r| r.token.task).collect();
        let checked: Vec<Result<Command>> = reports
            .into_iter()
            .map(|r| {
                limits.check_report(&r.outcome)?;
                Ok(Command {
                    task: r.token.task,
                    op: match r.outcome {
                        ReportOutcome::Success { output } => Op::Succeed {
                            token: r.token,
                            node,
                            output,
                        },
                        ReportOutcome::Failure { error } => Op::Fail {
                            token: r.token,
                            node,
                            error,
                        },
                    },
                })
            })
            .collect();
        let out = self.apply_checked(p, checked).await?;
        let acks: Vec<(TaskId, Ack)> = ids
            .into_iter()
            .zip(&out)
            .filter_map(|(id, a)| a.as_ref().ok().map(|a| (id, *a)))
            .collect();
        if count_terminal(&acks) > 0 {
            self.wake_workflows();
        }
        Ok(out)
    }

    /// Reports one success.
    pub async fn report_success(
        &self,
        p: &Principal,
        token: LeaseToken,
        output: serde_json::Value,
    ) -> Result<Ack> {
        let outcome = ReportOutcome::Success { output };
        self.report(p, vec![Report { token, outcome }])
            .await?
            .pop()
            .unwrap_or_else(empty_batch)
    }

    /// Reports one failure.
    pub async fn report_failure(
        &self,
        p: &Principal,
        token: LeaseToken,
        error: TaskError,
    ) -> Result<Ack> {
        let outcome = ReportOutcome::Failure { error };
        self.report(p, vec![Report { token, outcome }])
            .await?
            .pop()
            .unwrap_or_else(empty_batch)
    }
}
