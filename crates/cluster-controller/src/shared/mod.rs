//! Leaf modules every other module may use; they import nothing else of the crate.
//!
//! - [`layout`]: the data-plane contract (paths, UID, environment and Secret names, labels).
//! - [`meta`]: the metadata every child carries (name, labels, owner reference).
//! - [`pod`]: pod-template building blocks (images, security, env, mounts, ports, volumes).
//! - [`State`]: what every step of a pass is handed.

pub mod layout;
pub mod meta;
pub mod pod;

use tusk_runtime::Context;

use pod::Images;

/// What the Cluster controller needs besides the runtime's context.
#[derive(Clone, Debug)]
pub struct State {
    pub runtime: Context,
    pub images: Images,
    /// Whether to ask Patroni's REST API (pod IPs must be reachable; off in tests against the
    /// in-memory API).
    pub patroni_api: bool,
}
