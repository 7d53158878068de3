//! Patroni's configuration for a Cluster, and the pure decisions around it.
//!
//! ```text
//!  Cluster ─► render_config ─┬─ scope, kubernetes (DCS), restapi, watchdog
//!                            ├─ bootstrap.dcs = dynamic_config(cluster)   read once, at initialisation
//!                            ├─ bootstrap.initdb
//!                            └─ postgresql: paths, socket, TLS files, role names (local)
//!            └─► ConfigMap <cluster>-patroni, key patroni.yaml → /etc/patroni/patroni.yaml
//!
//!  pod environment (INSTANCE_ENV) ─► member name, addresses, passwords
//!
//!  spec change after bootstrap ─► dynamic_config_patch(GET /config, dynamic_config(cluster))
//!                                 └─► PATCH /config, only when something differs
//!  parameter change ─► plan_parameter_change: reload, or restart (and in which order);
//!                      at run time Patroni's `pending_restart` has the last word
//! ```
//!
//! # What goes where
//!
//! Patroni reads `bootstrap.dcs` only when it initialises a new cluster; afterwards the dynamic
//! configuration lives in the DCS and changes only through its REST API (`PATCH /config`). So
//! everything a user may change on a running Cluster — timing, synchronous replication,
//! PostgreSQL parameters and pg_hba — is rendered into [`DynamicConfig`], once into
//! `bootstrap.dcs` and later as a patch. The local `postgresql` section holds what describes the
//! pod (paths, the socket, TLS files, role names): Patroni merges local parameters *over* the
//! dynamic ones, so a hand-edited `/config` can never move them.
//!
//! Patroni itself forces `hot_standby=on`, `wal_log_hints=on`, `listen_addresses`, `port` and
//! `cluster_name` (= the scope) on PostgreSQL's command line and drops any other value for
//! them, so they are not rendered ([`PATRONI_FORCED_PARAMETERS`]).
//!
//! # YAML and PyYAML
//!
//! Patroni parses this file with PyYAML (YAML 1.1), where a plain `on`, `off`, `yes` or `no` is
//! a boolean. serde_yaml_ng writes YAML 1.2 and leaves those words unquoted, so Patroni sees
//! `True`/`False` and writes `'True'`/`'False'` to postgresql.conf — which PostgreSQL accepts
//! for every boolean parameter and every enum that has `on`/`off` among its values. The real
//! Patroni tests check the rendered `on` values with `SHOW`.

pub mod changes;
pub mod document;
pub mod parameters;
pub mod render;

pub use changes::{
    ParameterApply, ParameterChangePlan, dynamic_config_patch, observed_parameters,
    parameter_apply, plan_parameter_change,
};
pub use document::*;
pub use parameters::{PATRONI_FORCED_PARAMETERS, parameters, pg_hba};
pub use render::{dynamic_config, patroni_config, render_config};

#[cfg(test)]
mod tests;
