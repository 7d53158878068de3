//! tusk's `tusk.dev/v1alpha1` API: the seven custom resources, their conditions, and the
//! labels and names through which the controllers find each other's objects.
//!
//! ```text
//!   Cluster ◄── PostgresUser ◄── ServiceBinding        (Ready chains left to right)
//!      ▲
//!      ├──── Backup ◄── BackupSchedule
//!      ├──── PGUpgrade ──► Backup
//!      └──── Pooler (PgBouncer in front of a Cluster)
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
pub mod pooler;
pub mod schedule;
pub mod schema;
pub mod upgrade;
pub mod user;

pub use backup::{Backup, BackupSpec, BackupStatus};
pub use binding::{ServiceBinding, ServiceBindingSpec, ServiceBindingStatus};
pub use cluster::{Cluster, ClusterSpec, ClusterStatus};
pub use pooler::{Pooler, PoolerSpec, PoolerStatus};
pub use schedule::{BackupSchedule, BackupScheduleSpec, BackupScheduleStatus};
pub use upgrade::{PGUpgrade, PGUpgradeSpec, PGUpgradeStatus};
pub use user::{PostgresUser, PostgresUserSpec, PostgresUserStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

/// The API group of every tusk resource.
pub const GROUP: &str = "tusk.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// PostgreSQL majors a Cluster can run.
pub const SUPPORTED_POSTGRES_VERSIONS: std::ops::RangeInclusive<i32> = 15..=18;
/// The oldest major a PGUpgrade can start from (one before the oldest supported).
pub const OLDEST_UPGRADABLE_POSTGRES_VERSION: i32 = 14;

/// The CustomResourceDefinitions of all seven kinds, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        Cluster::crd(),
        PostgresUser::crd(),
        ServiceBinding::crd(),
        Backup::crd(),
        BackupSchedule::crd(),
        PGUpgrade::crd(),
        Pooler::crd(),
    ];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                unwrap_descriptions(schema);
            }
        }
    }
    crds
}

/// Rust doc comments are wrapped at 100 columns; `kubectl explain` wraps on its own, so a
/// line break inside a paragraph only gets in the way. Paragraph breaks and list items stay.
fn unwrap_descriptions(schema: &mut JSONSchemaProps) {
    if let Some(description) = schema.description.as_mut() {
        *description = unwrap_paragraphs(description);
    }
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.items.as_mut().and_then(|items| match items {
            JSONSchemaPropsOrArray::Schema(s) => Some(s.as_mut()),
            JSONSchemaPropsOrArray::Schemas(_) => None,
        }))
        .chain(schema.additional_properties.as_mut().and_then(|a| match a {
            JSONSchemaPropsOrBool::Schema(s) => Some(s.as_mut()),
            JSONSchemaPropsOrBool::Bool(_) => None,
        }));
    for child in children {
        unwrap_descriptions(child);
    }
}

fn unwrap_paragraphs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_item = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        let is_item = line.starts_with("- ") || line.starts_with("* ");
        let indented = line.starts_with("  ");
        if i > 0 {
            let joins =
                !line.is_empty() && !is_item && (!indented || in_item) && !out.ends_with('\n');
            out.push(if joins { ' ' } else { '\n' });
        }
        if line.is_empty() {
            in_item = false;
        } else if is_item {
            in_item = true;
        }
        out.push_str(if in_item && !is_item {
            line.trim_start()
        } else {
            line
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_doc_lines_become_one_paragraph() {
        assert_eq!(
            unwrap_paragraphs("one\ntwo\n\nthree\n- a\n- b"),
            "one two\n\nthree\n- a\n- b"
        );
    }

    #[test]
    fn there_are_seven_kinds_in_one_group() {
        let crds = crds();
        assert_eq!(crds.len(), 7);
        assert!(crds.iter().all(|crd| crd.spec.group == GROUP));
    }
}
