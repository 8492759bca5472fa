//! AIMA: run several LLM inference engines on one GPU host.
//!
//! The layers (see ARCHITECTURE.md) point inward: `cli` and `api` speak the wire,
//! `daemon` runs lifecycles, `store` speaks SQLite, `runtime` speaks Docker, and
//! `domain` holds the rules with no I/O at all.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod engines;
pub mod gateway;
pub mod gpu;
pub mod mcp;
pub mod metrics;
pub mod models;
pub mod runtime;
pub mod server;
pub mod store;
pub mod ui;

/// The version printed by `aima --version`, `aima status` and `/api/v1/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit this binary was built from (`-dirty` with uncommitted changes).
pub const COMMIT: &str = env!("AIMA_COMMIT");
/// The day this binary was built (UTC), or `SOURCE_DATE_EPOCH`'s.
pub const BUILD_DATE: &str = env!("AIMA_BUILD_DATE");
