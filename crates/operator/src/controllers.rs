//! Which controllers this binary carries.
//!
//! Each controller crate exposes `pub async fn run(ctx: tusk_runtime::Context)`; this table
//! maps a [`ControllerKind`] to it. A kind without an entry is not built yet, and asking for
//! it is an error that says so — never a silent no-op.

use futures::future::BoxFuture;
use tusk_runtime::{Context, ControllerKind};

/// Starts a controller; the future runs until the controller stops.
pub(crate) type Runner = fn(Context) -> BoxFuture<'static, ()>;

/// The runner of `kind`, if this binary has one.
pub(crate) fn runner(kind: ControllerKind) -> Option<Runner> {
    match kind {
        ControllerKind::Cluster => Some(|ctx| Box::pin(tusk_cluster_controller::run(ctx))),
        ControllerKind::User => Some(|ctx| Box::pin(tusk_user_controller::run(ctx))),
        ControllerKind::Binding => Some(|ctx| Box::pin(tusk_binding_controller::run(ctx))),
        ControllerKind::Backup => Some(|ctx| Box::pin(tusk_backup_controller::run(ctx))),
        ControllerKind::Schedule => Some(|ctx| Box::pin(tusk_schedule_controller::run(ctx))),
        ControllerKind::Upgrade => Some(|ctx| Box::pin(tusk_upgrade_controller::run(ctx))),
        ControllerKind::Pooler => Some(|ctx| Box::pin(tusk_pooler_controller::run(ctx))),
    }
}

/// The CRD each controller needs before it can start: its own resource's.
pub(crate) fn crd_name(kind: ControllerKind) -> String {
    let plural = match kind {
        ControllerKind::Cluster => "clusters",
        ControllerKind::User => "postgresusers",
        ControllerKind::Binding => "servicebindings",
        ControllerKind::Backup => "backups",
        ControllerKind::Schedule => "backupschedules",
        ControllerKind::Upgrade => "pgupgrades",
        ControllerKind::Pooler => "poolers",
    };
    format!("{plural}.{}", tusk_api::GROUP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_controller_names_an_existing_crd() {
        let crds: Vec<String> = tusk_api::crds()
            .into_iter()
            .filter_map(|crd| crd.metadata.name)
            .collect();
        for kind in ControllerKind::ALL {
            assert!(crds.contains(&crd_name(kind)), "{kind:?}");
        }
    }
}
