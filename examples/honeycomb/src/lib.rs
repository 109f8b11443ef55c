//! Honeycomb, the Hive host service: the reference host that puts the engine
//! behind HTTP, built only on the public `hive` API.
//!
//! - [`config`]: settings from defaults, a TOML file, `HONEYCOMB_*` variables
//!   and flags, each value with where it came from;
//! - [`api`]: the HTTP API (tasks, workflows, SSE streams, the remote-worker
//!   protocol, nodes, tokens, audit, APIary, metrics), its OpenAPI document
//!   and its layers (bearer tokens, problem+json errors, limits);
//! - [`mod@serve`]: opens the store (and the APIary [`registry`] when configured),
//!   listens, and stops cleanly on SIGINT/SIGTERM within the grace;
//!   [`healthcheck`] probes a running one (a container's `HEALTHCHECK`);
//! - [`ui`]: the operator console under `/ui` (tasks with live logs,
//!   workflows drawn live, loop experiments and promotion, the promotion
//!   audit trail, nodes), signed in with an API token;
//! - [`telegram`]: the Telegram route (`POST /telegram/webhook`), off
//!   unless configured: operator commands from a chat, through the engine;
//! - [`admin`]: `honeycomb admin`, the operator's tooling straight on the
//!   store (tokens, the audit chain and its export, nodes, cancel by filter,
//!   queue depth, a configuration check), each action audited as `cli:<user>`;
//!   also the bootstrap path for the first admin token.

pub mod admin;
pub mod api;
pub mod config;
pub mod registry;
pub mod serve;
pub mod telegram;
pub mod ui;

pub use config::{Config, ConfigError, Layer, Origin};
pub use serve::{ServeError, healthcheck, serve, serve_with};
