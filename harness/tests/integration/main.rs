//! The harness crate's one integration-test binary. Tests here use the real Docker
//! engine (DOCKER_HOST or the default socket) and label every container `aima.test`.

mod runner;
mod stub_engine;
mod support;
