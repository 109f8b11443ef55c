//! The supervisor: every `sweep_interval`, expire due deadlines, reclaim the
//! leases of lost nodes and fire due schedule slots; every
//! `retention.interval`, compact ended tasks past their tenant's retention. Safe to run in every process, because each move is a
//! compare-and-set in the store.

use super::Hive;

pub(super) async fn run(hive: Hive) {
    let every = hive.config().sweep_interval;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = hive.shutdown_token().clone();
    let mut last_retention: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match hive.sweep_inner().await {
            Ok(r) if r.expired + r.nodes_lost > 0 => {
                tracing::debug!(
                    expired = r.expired,
                    nodes_lost = r.nodes_lost,
                    placements_lost = r.placements_lost,
                    "sweep"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "supervisor sweep failed; retrying next interval"),
        }
        match hive.run_schedules_inner().await {
            Ok(r) if r.fired + r.skipped + r.missed > 0 => {
                tracing::debug!(
                    fired = r.fired,
                    skipped = r.skipped,
                    missed = r.missed,
                    conflicts = r.conflicts,
                    "schedules"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "schedule pass failed; retrying next interval"),
        }
        let retention = &hive.config().retention;
        if retention.enabled() && last_retention.is_none_or(|t| t.elapsed() >= retention.interval) {
            last_retention = Some(tokio::time::Instant::now());
            match hive.run_retention_inner().await {
                Ok(r) if r.tasks > 0 => {
                    tracing::debug!(
                        tasks = r.tasks,
                        events = r.events,
                        more = r.more,
                        "retention"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "retention pass failed; retrying next interval")
                }
            }
        }
    }
    tracing::debug!("supervisor stopped");
}
