//! The harness library: what AIMA's scenario runner and integration tests share with the
//! `harness` binary. For now that is the Docker connection and the stub engine image.

pub mod docker;
pub mod stub_image;
