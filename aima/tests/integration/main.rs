//! Integration tests: the real daemon over real HTTP, the real `aima` binary, real
//! SQLite files and real signals. One test binary for the crate (see STYLE.md).

mod api;
mod cli;
mod contract;
mod first_hour;
mod gateway;
mod gpu;
mod hardening;
mod lifecycle;
mod limits;
mod mcp;
mod metrics;
mod model_memory;
mod process;
mod pull;
mod readme;
mod restart;
mod scripting;
mod self_healing;
mod support;
mod ui;
