//! Honeycomb, the Hive host service: the reference host that puts the engine
//! behind HTTP, built only on the public `hive` API.
//!
//! This first part is the service's frame: its configuration
//! ([`config`]: defaults, a TOML file, `HONEYCOMB_*` variables, flags) and
//! [`serve`], which opens the store, listens, answers `/healthz`, `/readyz`
//! and `/api/version`, and stops cleanly on SIGINT/SIGTERM; [`healthcheck`]
//! probes a running one (a container's `HEALTHCHECK`).

pub mod admin;
pub mod api;
pub mod config;
pub mod registry;
pub mod serve;

pub use config::{Config, ConfigError, Layer, Origin};
pub use serve::{ServeError, healthcheck, serve, serve_with};
