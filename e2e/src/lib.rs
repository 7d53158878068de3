//! tusk's end-to-end suite: scenarios that need a real Kubernetes cluster with the operator
//! installed, asserting on what a user checks — conditions, Services, and real SQL through an
//! in-cluster Job running `psql`.
//!
//! ```text
//!  TUSK_E2E_KUBECONFIG ──► env::setup() ──► skip (unset, printed reason)
//!                                      └──► E2e { client } (fails when unreachable)
//!  each scenario ──► Scope::run("name", |scope| ...)   its own namespace(s), deleted after
//!                ──► manifests::*   typed tusk objects
//!                ──► wait::poll_until(clock, ...)      every wait bounded, says what it saw
//!                ──► sql::psql_job + sql::parse_rows   SQL through a Job, output parsed
//!                ──► on failure: diagnose::report      conditions, failing pods' logs, operator log
//! ```
//!
//! The pure parts (manifest builders, polling with an injectable clock, psql output parsing,
//! PromQL metric-name extraction) are unit-tested in `cargo test --workspace` with no cluster.

#![forbid(unsafe_code)]

pub mod diagnose;
pub mod env;
pub mod k8s;
pub mod manifests;
pub mod promql;
pub mod sql;
pub mod wait;

pub use env::{E2e, setup};
pub use k8s::Scope;
