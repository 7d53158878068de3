//! What only the `tusk-operator` process needs around its controllers: leader election,
//! the probe and metrics endpoint, and the wait for tusk's CRDs. A library target so that
//! `tests/` can drive them against the in-memory API; the binary (`main.rs`) wires them.
//!
//! ```text
//!   flags → OperatorConfig → leader::Elector (Lease; a lost Lease ends the process)
//!         → http::serve (/metrics /healthz /readyz)
//!         → crd::wait_established
//!         → each controller crate's run(Context)
//!
//!   pgbouncer-exporter flags → pgbouncer_exporter::Scraper → serve (/metrics /healthz)
//! ```

#![forbid(unsafe_code)]

pub mod crd;
pub mod http;
pub mod leader;
pub mod pgbouncer_exporter;
