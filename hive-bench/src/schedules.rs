//! Schedule firing over a simulated day (issue 17, item 7):
//!
//! ```text
//! hive-bench backend=B scenario=schedules schedules=100 slots=100000 simulated_s=86400 passes=… wall_s=… us_per_slot=… slots_per_s=…
//! ```
//!
//! 100 schedules (interval calendars, `allow_all`) share one store; a manual
//! clock walks through one day in steps of one period, and each step runs one
//! schedule pass (what the supervisor does every `sweep_interval`), which
//! fires one slot of every schedule: a compare-and-set on the schedule's
//! record, the task's submit under the slot's key, and the record's update.
//! `--tasks` sets the total slots (default 100,000 on memory, 10,000 on the
//! durable backends).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_core::engine::HiveConfig;
use hive_core::{
    Calendar, Clock, Hive, ManualClock, OverlapPolicy, Principal, ScheduleSpec, TaskSpec,
};

use crate::{Args, open_store};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SCHEDULES: usize = 100;
const DAY_MS: u64 = 86_400_000;

pub(crate) async fn bench(args: &Args) -> Result<(), BoxError> {
    let store = open_store(args).await?;
    let default = if args.backend == "memory" {
        100_000
    } else {
        10_000
    };
    let slots = args.tasks.unwrap_or(default).max(SCHEDULES);
    let per_schedule = slots / SCHEDULES;
    let period = Duration::from_millis(DAY_MS / per_schedule as u64);
    let clock = Arc::new(ManualClock::default());
    let hive = Hive::builder()
        .store(store)
        .clock(clock.clone())
        .config(HiveConfig {
            run_supervisor: false,
            run_workflows: false,
            ..HiveConfig::default()
        })
        .build()?;
    let owner = Principal::user("bench", "scheduler");
    let system = Principal::system();
    // Start on a period boundary, so every schedule's first slot is now.
    let now = clock.now().as_millis() as u64;
    let p = period.as_millis() as u64;
    clock.advance(Duration::from_millis(now.div_ceil(p) * p - now));
    for s in 0..SCHEDULES {
        hive.create_schedule(
            &owner,
            ScheduleSpec::task(
                format!("s{s:03}"),
                Calendar::every(period),
                TaskSpec::new("noop", serde_json::json!({ "s": s })),
            )
            .overlap(OverlapPolicy::AllowAll),
        )
        .await?;
    }
    let started = Instant::now();
    let mut fired = 0u64;
    let mut passes = 0u64;
    while fired < (per_schedule * SCHEDULES) as u64 {
        let r = hive.run_schedules(&system).await?;
        if r.more {
            return Err("a pass left due slots behind".into());
        }
        fired += r.fired;
        passes += 1;
        clock.advance(period);
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "hive-bench backend={} scenario=schedules schedules={SCHEDULES} slots={fired} simulated_s={} passes={passes} wall_s={wall:.2} us_per_slot={:.1} slots_per_s={:.0}",
        args.backend,
        DAY_MS / 1000,
        wall * 1e6 / fired as f64,
        fired as f64 / wall,
    );
    hive.shutdown();
    Ok(())
}
