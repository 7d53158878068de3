//! The thin layer every tusk controller shares, and nothing else.
//!
//! ```text
//!   tusk-operator (binary) ──► each controller crate's run(Context)
//!  a controller's reconcile:
//!     observe (kube reads) → plan (pure) → apply::ensure (SSA, skipped when unchanged)
//!     → apply::ensure_status → Ok(ctx.requeue())   or   Err(e) → error_policy(e):
//!                                  permanent → wait for a change; transient → backoff
//! ```
//!
//! What lives here is what three controllers would otherwise repeat: the [`Context`], server-side
//! apply with one field manager per controller ([`apply`]), error classification and backoff
//! ([`error`]), events that keep one note per transition ([`events`]), Prometheus metrics ([`metrics`]), what watch caches keep
//! ([`store`]), the restricted container security context ([`pod`]), the PostgreSQL connection to a Cluster's primary ([`postgres`]) and the RBAC
//! rules every controller shares ([`rbac`]; each controller lists its own in its crate). Anything about one custom resource belongs in
//! that resource's controller crate; what only the operator process needs (leader election, the
//! probe and metrics endpoint, waiting for CRDs) is in `tusk-operator`.

#![forbid(unsafe_code)]

pub mod apply;
pub mod context;
pub mod error;
pub mod events;
pub mod metrics;
pub mod pod;
pub mod postgres;
pub mod rbac;
pub mod scram;
pub mod store;

pub use context::{Context, ControllerKind, OperatorConfig};
pub use error::{ReconcileError, error_policy};
pub use metrics::Metrics;
