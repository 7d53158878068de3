//! tusk's `tusk.dev/v1alpha1` API: the six custom resources, their conditions, and the
//! labels and names through which the controllers find each other's objects.
//!
//! ```text
//!   Cluster ◄── PostgresUser ◄── ServiceBinding        (Ready chains left to right)
//!      ▲
//!      ├──── Backup ◄── BackupSchedule
//!      └──── PGUpgrade ──► Backup
//! ```
//!
//! Everything here is plain data and pure functions: no client, no runtime, no I/O. Controllers
//! depend on this crate and never on each other, so this is also where cross-controller
//! contracts live (label keys, child object names, annotations one controller sets and another
//! honours).

#![forbid(unsafe_code)]

pub mod backup;
pub mod binding;
pub mod cluster;
pub mod common;
pub mod condition;
pub mod labels;
pub mod names;
pub mod schedule;
pub mod schema;
pub mod upgrade;
pub mod user;

pub use backup::{Backup, BackupSpec, BackupStatus};
pub use binding::{ServiceBinding, ServiceBindingSpec, ServiceBindingStatus};
pub use cluster::{Cluster, ClusterSpec, ClusterStatus};
pub use schedule::{BackupSchedule, BackupScheduleSpec, BackupScheduleStatus};
pub use upgrade::{PGUpgrade, PGUpgradeSpec, PGUpgradeStatus};
pub use user::{PostgresUser, PostgresUserSpec, PostgresUserStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every tusk resource.
pub const GROUP: &str = "tusk.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// PostgreSQL majors a Cluster can run.
pub const SUPPORTED_POSTGRES_VERSIONS: std::ops::RangeInclusive<i32> = 15..=18;
/// The oldest major a PGUpgrade can start from (one before the oldest supported).
pub const OLDEST_UPGRADABLE_POSTGRES_VERSION: i32 = 14;

/// The CustomResourceDefinitions of all six kinds, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Cluster::crd(),
        PostgresUser::crd(),
        ServiceBinding::crd(),
        Backup::crd(),
        BackupSchedule::crd(),
        PGUpgrade::crd(),
    ]
}
