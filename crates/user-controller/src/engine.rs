//! Running plans: the role-level pass for any number of roles of one Cluster, batched and
//! parallel, and the statements of one database in one transaction.
//!
//! ```text
//!   requests ──► read_cluster (1 round trip) ──► password check (cached; PBKDF2 only on a miss,
//!                                                 on blocking threads) ──► plan_role each
//!            ──► role SQL: batches of up to `batch_size` roles, one implicit transaction each,
//!                spread over the given connections (a failing batch is retried role by role)
//!            ──► CREATE DATABASE, one at a time
//!            ──► read_cluster again, only for roles that changed (their new OID and state)
//! ```
//!
//! The controller runs it for one PostgresUser per reconcile; `cargo xtask bench users` runs
//! it for a thousand. A pass where nothing differs sends the one catalog read and nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_postgres::Client;

use crate::catalog::{ObservedDatabase, ObservedRole, read_cluster};
use crate::password::{PasswordChecks, scram_verifier};
use crate::plan::{Change, DesiredRole, PasswordAction, Refusal, RolePlan, plan_role};

/// The database the role-level statements run in.
pub const MAINTENANCE_DATABASE: &str = "postgres";

/// One role to bring in line with its spec.
pub struct RoleRequest {
    pub desired: DesiredRole,
    /// The password the credentials Secret holds (the source of truth).
    pub password: String,
    /// Other databases whose existence the caller needs to know (those it grants in).
    pub other_databases: Vec<String>,
}

impl std::fmt::Debug for RoleRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleRequest")
            .field("desired", &self.desired)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What happened to one role.
#[derive(Debug)]
pub struct RoleOutcome {
    pub name: String,
    pub result: Result<RoleApplied, RoleFailure>,
}

/// A role that matches its spec now.
#[derive(Debug)]
pub struct RoleApplied {
    /// The role as the catalogs show it after this pass.
    pub role: ObservedRole,
    /// What this pass changed; empty when nothing differed.
    pub changes: Vec<Change>,
    /// The role's databases and the caller's other databases that exist, by name.
    pub databases: BTreeMap<String, ObservedDatabase>,
}

/// Why a role could not be brought in line.
#[derive(Debug, thiserror::Error)]
pub enum RoleFailure {
    #[error(transparent)]
    Refused(Refusal),
    #[error("{0}")]
    Sql(#[source] tokio_postgres::Error),
}

/// Brings every role of `requests` (all in the Cluster keyed `cluster_key`) in line: one
/// catalog read, password checks, plans, then the writes, over `clients` in parallel with up
/// to `batch_size` roles per transaction.
///
/// Errors of one role are in its outcome; `Err` means the catalog could not be read at all.
pub async fn sync_roles(
    clients: &[Arc<Client>],
    checks: &Arc<PasswordChecks>,
    cluster_key: &str,
    requests: Vec<RoleRequest>,
    batch_size: usize,
) -> Result<Vec<RoleOutcome>, tokio_postgres::Error> {
    let Some(reader) = clients.first() else {
        return Ok(Vec::new());
    };
    let role_names: Vec<&str> = requests.iter().map(|r| r.desired.name.as_str()).collect();
    let mut database_names: Vec<&str> = requests
        .iter()
        .flat_map(|r| {
            r.desired
                .databases
                .iter()
                .map(|d| d.name.as_str())
                .chain(r.other_databases.iter().map(String::as_str))
        })
        .collect();
    database_names.sort_unstable();
    database_names.dedup();
    let catalog = read_cluster(reader, &role_names, &database_names).await?;

    let actions = password_actions(checks, cluster_key, &requests, &catalog.roles).await;

    let mut planned: Vec<(usize, Result<RolePlan, Refusal>)> = Vec::with_capacity(requests.len());
    for (index, request) in requests.iter().enumerate() {
        let observed = catalog.roles.get(&request.desired.name);
        planned.push((
            index,
            plan_role(
                &request.desired,
                observed,
                &catalog.databases,
                &actions[index],
            ),
        ));
    }

    // Role statements, batched per transaction and spread over the connections.
    let writes: Vec<(usize, String)> = planned
        .iter()
        .filter_map(|(index, plan)| match plan {
            Ok(plan) if !plan.role_statements.is_empty() => {
                Some((*index, plan.role_statements.join(";\n")))
            }
            _ => None,
        })
        .collect();
    let mut failures: BTreeMap<usize, tokio_postgres::Error> = BTreeMap::new();
    if !writes.is_empty() {
        let batches: Vec<&[(usize, String)]> = writes.chunks(batch_size.max(1)).collect();
        let lanes = clients.len().min(batches.len()).max(1);
        let lane_results = futures::future::join_all((0..lanes).map(|lane| {
            let client = clients[lane].clone();
            let mine: Vec<&[(usize, String)]> =
                batches.iter().skip(lane).step_by(lanes).copied().collect();
            async move {
                let mut failed = Vec::new();
                for batch in mine {
                    failed.extend(run_batch(&client, batch).await);
                }
                failed
            }
        }))
        .await;
        failures.extend(lane_results.into_iter().flatten());
    }

    // CREATE DATABASE cannot share a transaction; run them one by one after the roles exist.
    for (index, plan) in &planned {
        let Ok(plan) = plan else { continue };
        if failures.contains_key(index) {
            continue;
        }
        for statement in &plan.create_databases {
            if let Err(error) = reader.batch_execute(statement).await {
                failures.insert(*index, error);
                break;
            }
        }
    }

    // Re-read only what changed, for new OIDs and the state the caller reports.
    let changed: Vec<&str> = planned
        .iter()
        .filter(|(index, plan)| {
            !failures.contains_key(index) && plan.as_ref().is_ok_and(|p| !p.is_empty())
        })
        .map(|(index, _)| requests[*index].desired.name.as_str())
        .collect();
    let after = if changed.is_empty() {
        None
    } else {
        Some(read_cluster(reader, &changed, &database_names).await?)
    };
    let databases = after
        .as_ref()
        .map_or(&catalog.databases, |after| &after.databases);

    let mut outcomes = Vec::with_capacity(requests.len());
    for ((index, plan), request) in planned.into_iter().zip(&requests) {
        let name = request.desired.name.clone();
        let result = match (plan, failures.remove(&index)) {
            (Err(refusal), _) => Err(RoleFailure::Refused(refusal)),
            (Ok(_), Some(error)) => Err(RoleFailure::Sql(error)),
            (Ok(plan), None) => {
                let role = after
                    .as_ref()
                    .and_then(|after| after.roles.get(&name))
                    .or_else(|| catalog.roles.get(&name))
                    .cloned();
                match role {
                    Some(role) => {
                        if let PasswordAction::Set(verifier) = &actions[index] {
                            checks.remember(cluster_key, &name, verifier, &request.password);
                        }
                        let wanted = request
                            .desired
                            .databases
                            .iter()
                            .map(|d| &d.name)
                            .chain(&request.other_databases);
                        let databases = wanted
                            .filter_map(|d| databases.get(d).map(|db| (d.clone(), db.clone())))
                            .collect();
                        Ok(RoleApplied {
                            role,
                            changes: plan.changes,
                            databases,
                        })
                    }
                    None => Err(RoleFailure::Refused(Refusal::RoleOwnedElsewhere(format!(
                        "role {name:?} vanished while it was being created: another client dropped it; tusk retries"
                    )))),
                }
            }
        };
        outcomes.push(RoleOutcome { name, result });
    }
    Ok(outcomes)
}

/// Runs one batch as one transaction; when it fails, runs each role on its own so one bad
/// role does not hold back the others. Returns the roles that failed.
async fn run_batch(
    client: &Client,
    batch: &[(usize, String)],
) -> Vec<(usize, tokio_postgres::Error)> {
    let sql = batch
        .iter()
        .map(|(_, sql)| sql.as_str())
        .collect::<Vec<_>>()
        .join(";\n");
    match client.batch_execute(&sql).await {
        Ok(()) => Vec::new(),
        Err(error) if batch.len() == 1 => vec![(batch[0].0, error)],
        Err(_) => {
            let mut failed = Vec::new();
            for (index, sql) in batch {
                if let Err(error) = client.batch_execute(sql).await {
                    failed.push((*index, error));
                }
            }
            failed
        }
    }
}

/// Decides per request whether the password must be set. A remembered match costs a string
/// comparison; anything else (a new role, a changed password, an operator restart) is checked
/// or hashed on blocking threads, a few at a time.
async fn password_actions(
    checks: &Arc<PasswordChecks>,
    cluster_key: &str,
    requests: &[RoleRequest],
    observed: &BTreeMap<String, ObservedRole>,
) -> Vec<PasswordAction> {
    let mut actions = vec![PasswordAction::Keep; requests.len()];
    let mut work: Vec<(usize, Option<String>, String, String)> = Vec::new();
    for (index, request) in requests.iter().enumerate() {
        let stored = observed
            .get(&request.desired.name)
            .and_then(|role| role.stored_password.clone());
        let known = stored.as_deref().is_some_and(|stored| {
            checks.known_match(
                cluster_key,
                &request.desired.name,
                stored,
                &request.password,
            )
        });
        if !known {
            work.push((
                index,
                stored,
                request.desired.name.clone(),
                request.password.clone(),
            ));
        }
    }
    if work.is_empty() {
        return actions;
    }
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let chunk = work.len().div_ceil(threads);
    let mut tasks = Vec::new();
    let mut rest = work;
    while !rest.is_empty() {
        let tail = rest.split_off(chunk.min(rest.len()));
        let mine = std::mem::replace(&mut rest, tail);
        let checks = checks.clone();
        let cluster_key = cluster_key.to_owned();
        let indices: Vec<(usize, String)> = mine
            .iter()
            .map(|(index, _, _, password)| (*index, password.clone()))
            .collect();
        let task = tokio::task::spawn_blocking(move || {
            mine.into_iter()
                .map(|(index, stored, role, password)| {
                    let matches = stored.as_deref().is_some_and(|stored| {
                        checks.matches(&cluster_key, &role, stored, &password)
                    });
                    let action = if matches {
                        PasswordAction::Keep
                    } else {
                        PasswordAction::Set(scram_verifier(&password))
                    };
                    (index, action)
                })
                .collect::<Vec<_>>()
        });
        tasks.push((indices, task));
    }
    for (indices, task) in tasks {
        match task.await {
            Ok(results) => {
                for (index, action) in results {
                    actions[index] = action;
                }
            }
            // The hashing thread died: set those passwords rather than assume they match.
            Err(_) => {
                for (index, password) in indices {
                    actions[index] = PasswordAction::Set(scram_verifier(&password));
                }
            }
        }
    }
    actions
}

/// Runs `statements` in `client`'s database as one transaction (one simple-query message).
pub async fn execute(client: &Client, statements: &[String]) -> Result<(), tokio_postgres::Error> {
    if statements.is_empty() {
        return Ok(());
    }
    client.batch_execute(&statements.join(";\n")).await
}

/// Ends every session of `role`; the role name is bound as a parameter. Returns how many.
pub async fn terminate_sessions(client: &Client, role: &str) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid))::int8 FROM pg_stat_activity \
             WHERE usename::text = $1 AND pid <> pg_backend_pid()",
            &[&role],
        )
        .await?;
    row.try_get(0)
}
