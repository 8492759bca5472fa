//! The harness library: what AIMA's scenario runner and integration tests share with the
//! `harness` binary. That is the Docker connection, the stub engine image, and the operator scenarios.

pub mod bench;
pub mod docker;
pub mod docker_proxy;
pub mod ledger;
pub mod scenarios;
pub mod stub_image;
