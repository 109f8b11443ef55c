//! Progress on stderr while a run goes on (indicatif): the phase, and the
//! tasks that ended. Hidden when turned off or when stderr is not a terminal.

use std::borrow::Cow;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The run's progress display.
#[derive(Clone, Debug)]
pub struct Progress {
    multi: MultiProgress,
    phase: ProgressBar,
    tasks: ProgressBar,
}

impl Progress {
    /// A display on stderr (`enabled`), or one that draws nothing.
    pub fn new(enabled: bool) -> Progress {
        let target = if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let phase = multi.add(ProgressBar::new_spinner());
        phase.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        if enabled {
            phase.enable_steady_tick(Duration::from_millis(120));
        }
        let tasks = multi.add(ProgressBar::new(0));
        tasks.set_style(
            ProgressStyle::with_template("  tasks ended [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Progress {
            multi,
            phase,
            tasks,
        }
    }

    /// Shows what runs now.
    pub fn phase(&self, msg: impl Into<Cow<'static, str>>) {
        self.phase.set_message(msg);
    }

    /// Sets how many tasks the run waits for.
    pub fn tasks_total(&self, n: u64) {
        self.tasks.set_length(n);
    }

    /// One more task ended.
    pub fn task_ended(&self) {
        self.tasks.inc(1);
    }

    /// Clears the display (before the summary is printed).
    pub fn finish(&self) {
        self.tasks.finish_and_clear();
        self.phase.finish_and_clear();
        let _ = self.multi.clear();
    }
}
