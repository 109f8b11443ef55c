//! The checks, and what they share: the run's context (client, options, run
//! id, deadline) and the tenants the run acts in, each with a user token, a
//! node and the tool's worker on it.

pub mod audit;
pub mod denied;
pub mod health;
pub mod load;
pub mod setup;
pub mod workflow;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::StabilizeOptions;
use crate::client::Client;
use crate::progress::Progress;
use crate::worker::WorkerStats;

/// The label every task of the run requires (and only the run's nodes
/// carry), so no other node takes them and the run's workers take nothing
/// else.
pub const RUN_LABEL: &str = "dogfood-run";
/// The label only the victim task requires (no node carries it).
pub const VICTIM_LABEL: &str = "dogfood-victim";

/// What every check sees.
#[derive(Debug)]
pub struct Ctx {
    /// The options.
    pub opts: StabilizeOptions,
    /// The client of the target.
    pub client: Client,
    /// The run's id.
    pub run_id: String,
    /// When the load phases must be over.
    pub deadline: tokio::time::Instant,
    /// The progress display.
    pub progress: Progress,
    /// Notes for the report.
    pub notes: Mutex<Vec<String>>,
}

impl Ctx {
    /// Adds a note to the report.
    pub fn note(&self, note: impl Into<String>) {
        if let Ok(mut n) = self.notes.lock() {
            n.push(note.into());
        }
    }

    /// The labels of the run's tasks.
    pub fn labels(&self) -> Value {
        serde_json::json!({ RUN_LABEL: self.run_id })
    }
}

/// The principal a token stands for (`/api/whoami`).
#[derive(Clone, Debug)]
pub struct Whoami {
    /// Its tenant.
    pub tenant: String,
    /// Its id.
    pub id: String,
    /// Its kind (`user`, `admin`…).
    pub kind: String,
    /// Its scopes.
    pub scopes: Vec<String>,
}

impl Whoami {
    /// Whether it holds `scope` (or `system:admin`).
    pub fn can(&self, scope: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| s == scope || s == "system:admin")
    }
}

/// One tenant the run acts in.
#[derive(Debug)]
pub struct Tenant {
    /// Its name.
    pub name: String,
    /// An admin token of it (the given one, or one the run issued).
    pub admin_token: String,
    /// The issued admin token's id, to revoke it at the end.
    pub admin_token_id: Option<String>,
    /// The token tasks are submitted with (a user the run issued, else the
    /// admin token).
    pub user_token: String,
    /// The issued user token's id, to revoke it at the end.
    pub user_token_id: Option<String>,
    /// The node the run's worker works.
    pub node_id: String,
    /// Its worker token.
    pub worker_token: String,
    /// What the worker did.
    pub stats: Arc<WorkerStats>,
}

/// What setting up left running: the tenants, the workers, a victim node.
#[derive(Debug)]
pub struct Setup {
    /// The given token's principal.
    pub whoami: Whoami,
    /// The tenants (the given token's first).
    pub tenants: Vec<Tenant>,
    /// Why fewer tenants than asked for, if so.
    pub tenants_note: Option<String>,
    /// A node of the first tenant with no worker (the worker token tries to
    /// drain and remove it).
    pub victim_node: Option<String>,
    /// Stops the workers.
    pub stop_workers: CancellationToken,
    /// The workers.
    pub workers: Vec<tokio::task::JoinHandle<()>>,
    /// When setting up began.
    pub started: Instant,
}

/// Milliseconds since `t`.
pub fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}
