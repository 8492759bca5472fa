//! Steps in the operator's words. Given steps set up, When steps act (and record what
//! happened), Then steps check and fail with the evidence when the check does not hold.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cucumber::{given, then, when};
use futures::StreamExt;
use nix::sys::signal::Signal;
use serde_json::Value;

use super::world::{AimaWorld, Cycle, InFlight, ServiceRef, containers_with_label};

mod agent;
mod containers;
mod daemon;
mod faults;
mod gateway;
mod gpu;
mod healing;
mod monitoring;
mod real_engines;
mod services;

pub use agent::Agent;
use daemon::restart_daemon;
use monitoring::last_start;
use services::{create_service_with, start_and_wait};

/// `--timeout` of every `start --wait`: a cap, not a wait; a real vLLM loads for a minute
/// on a loaded 2-core machine.
const WAIT_TIMEOUT: &str = "600";

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// Polls `check` every few milliseconds until it holds or `deadline` passes.
async fn eventually(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + deadline;
    let mut pause = Duration::from_millis(5);
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
