//! The Pooler controller — in progress. A `Pooler` (crates/api/src/pooler.rs) is to become
//! PgBouncer in front of its Cluster: a Deployment, a Service, a ConfigMap with
//! `pgbouncer.ini` and a PodDisruptionBudget (docs/operations/pooling.md).
//!
//! ```text
//!   Pooler spec ──► config::render_ini ──► pgbouncer.ini      (done, tested with PgBouncer)
//!               └─► config::auth_file  ──► userlist.txt       (tusk's two roles only)
//!   primary ◄── auth::ensure_role / ensure_lookup (tusk_pooler + SECURITY DEFINER lookup)
//!   Pooler ──► children: ConfigMap, Deployment, Service, PodDisruptionBudget (pure)
//!   admin console: RELOAD, PAUSE/RESUME, SHOW (tested against PgBouncer)
//!   not yet: the reconcile loop that applies them, certificates, metrics
//! ```
//!
//! Today it holds what the controller will render and the SQL it will run, each tested
//! against real PgBouncer in front of real PostgreSQL (tests/pgbouncer_real.rs).

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod children;
pub mod config;
pub mod exporter;
#[cfg(feature = "test-support")]
pub mod testing;
