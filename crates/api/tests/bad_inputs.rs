//! A table of invalid objects, each a small change to a valid example from docs/examples/,
//! each with the rejection a person would see from `kubectl apply`: the field path and the
//! words of the message. Objects go through [`support::admit`] — defaults, the OpenAPI
//! schema, then the CEL rules (transition rules against the old object for updates).
//!
//! Every case is checked twice: the unchanged base must be accepted (so the case fails
//! because of its change, not because the base is broken), and the changed object must be
//! rejected with the expected path and message.
//!
//! Run `cargo test -p tusk-api --test bad_inputs -- --nocapture` to see every case with
//! everything the API server would say about it.
//!
//! To add a case: find the kind's section in [`cases`] and append
//!
//! ```ignore
//! case("what is wrong, in words", "Kind")
//!     .patch(json!({"spec": {"field": "bad value"}}))   // a JSON merge patch, or
//!     // .edit(|object| { ... })                        // any change to the JSON object
//!     // .on_update()                                   // old = base, new = changed base
//!     // .based_on("cluster-restore.yaml")             // another example as the base
//!     .rejects("spec.field", "words of the message"),
//! ```

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use serde_json::{Value, json};
use support::{Rejection, Source};

// ---------------------------------------------------------------------------------------------
// The table

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();

    // Cluster ---------------------------------------------------------------------------------
    cases.extend([
        case("no instances", "Cluster")
            .patch(json!({"spec": {"instances": 0}}))
            .rejects("spec.instances", "should be greater than or equal to 1"),
        case("negative instances", "Cluster")
            .patch(json!({"spec": {"instances": -1}}))
            .rejects("spec.instances", "should be greater than or equal to 1"),
        case("more instances than supported", "Cluster")
            .patch(json!({"spec": {"instances": 17}}))
            .rejects("spec.instances", "should be less than or equal to 16"),
        case("instances as a string", "Cluster")
            .patch(json!({"spec": {"instances": "3"}}))
            .rejects("spec.instances", "must be of type integer"),
        case("instances as a fraction", "Cluster")
            .patch(json!({"spec": {"instances": 2.5}}))
            .rejects("spec.instances", "must be of type integer"),
        case("PostgreSQL 12 is not supported", "Cluster")
            .patch(json!({"spec": {"postgresVersion": 12}}))
            .rejects("spec.postgresVersion", "should be greater than or equal to 15"),
        case("PostgreSQL 19 does not exist yet", "Cluster")
            .patch(json!({"spec": {"postgresVersion": 19}}))
            .rejects("spec.postgresVersion", "should be less than or equal to 18"),
        case("postgresVersion missing", "Cluster")
            .patch(json!({"spec": {"postgresVersion": null}}))
            .rejects("spec.postgresVersion", "Required value"),
        case("postgresVersion goes down on update", "Cluster")
            .patch(json!({"spec": {"postgresVersion": 16}}))
            .on_update()
            .rejects("spec", "spec.postgresVersion cannot go down"),
        case("unknown field in spec", "Cluster")
            .patch(json!({"spec": {"replicas": 3}}))
            .rejects("spec.replicas", "unknown field \"spec.replicas\""),
        case("misspelt nested field", "Cluster")
            .patch(json!({"spec": {"storage": {"sizee": "10Gi"}}}))
            .rejects("spec.storage.sizee", "unknown field"),
        case("unknown replication mode", "Cluster")
            .patch(json!({"spec": {"replication": {"mode": "Async"}}}))
            .rejects("spec.replication.mode", "Unsupported value: \"Async\": supported values: \"Asynchronous\""),
        case("synchronous replication with a single instance", "Cluster")
            .patch(json!({"spec": {"instances": 1}}))
            .rejects("spec", "synchronous replication needs more instances than"),
        case("unknown anti-affinity type", "Cluster")
            .patch(json!({"spec": {"scheduling": {"podAntiAffinity": {"type": "Soft"}}}}))
            .rejects("spec.scheduling.podAntiAffinity.type", "Unsupported value: \"Soft\""),
        case("unknown image pull policy", "Cluster")
            .patch(json!({"spec": {"imagePullPolicy": "Sometimes"}}))
            .rejects("spec.imagePullPolicy", "Unsupported value: \"Sometimes\""),
        case("empty image", "Cluster")
            .patch(json!({"spec": {"image": ""}}))
            .rejects("spec.image", "should be at least 1 chars long"),
        case("storage size missing", "Cluster")
            .patch(json!({"spec": {"storage": {"size": null}}}))
            .rejects("spec.storage.size", "Required value"),
        case("storage size is not a quantity", "Cluster")
            .patch(json!({"spec": {"storage": {"size": "lots"}}}))
            .rejects("spec.storage.size", "should match"),
        case("storage size with a unit Kubernetes does not know", "Cluster")
            .patch(json!({"spec": {"storage": {"size": "20GB"}}}))
            .rejects("spec.storage.size", "should match"),
        case("storage shrinks on update", "Cluster")
            .patch(json!({"spec": {"storage": {"size": "10Gi"}}}))
            .on_update()
            .rejects("spec.storage", "spec.storage.size cannot shrink"),
        case("storage class changes on update", "Cluster")
            .patch(json!({"spec": {"storage": {"storageClassName": "fast"}}}))
            .on_update()
            .rejects("spec.storage", "spec.storage.storageClassName cannot be changed after creation"),
        case("auto-grow threshold over 100%", "Cluster")
            .patch(json!({"spec": {"storage": {"autoGrow": {"thresholdPercent": 101}}}}))
            .rejects("spec.storage.autoGrow.thresholdPercent", "should be less than or equal to 99"),
        case("auto-grow threshold too low to be useful", "Cluster")
            .patch(json!({"spec": {"storage": {"autoGrow": {"thresholdPercent": 10}}}}))
            .rejects("spec.storage.autoGrow.thresholdPercent", "should be greater than or equal to 50"),
        case("auto-grow limit below the size", "Cluster")
            .patch(json!({"spec": {"storage": {"autoGrow": {"limit": "10Gi"}}}}))
            .rejects("spec.storage", "spec.storage.autoGrow.limit must be at least spec.storage.size"),
        case("forbidden parameter: port", "Cluster")
            .patch(json!({"spec": {"postgresql": {"parameters": {"port": "5433"}}}}))
            .rejects("spec.postgresql.parameters", "sets a parameter tusk controls"),
        case("forbidden parameter: archive_command", "Cluster")
            .patch(json!({"spec": {"postgresql": {"parameters": {"archive_command": "/bin/true"}}}}))
            .rejects("spec.postgresql.parameters", "sets a parameter tusk controls"),
        case("parameter name in upper case", "Cluster")
            .patch(json!({"spec": {"postgresql": {"parameters": {"Max_Connections": "100"}}}}))
            .rejects("spec.postgresql.parameters", "must be lowercase PostgreSQL parameter names"),
        case("parameter value not a string", "Cluster")
            .patch(json!({"spec": {"postgresql": {"parameters": {"max_connections": 100}}}}))
            .rejects("spec.postgresql.parameters[max_connections]", "must be of type string"),
        case("pg_hba line allowing trust over the network", "Cluster")
            .patch(json!({"spec": {"postgresql": {"pgHba": ["host all all 0.0.0.0/0 trust"]}}}))
            .rejects("spec.postgresql.pgHba", "lines must be `local` or `hostssl`"),
        case("pg_hba hostssl line with md5", "Cluster")
            .patch(json!({"spec": {"postgresql": {"pgHba": ["hostssl all all 10.0.0.0/8 md5"]}}}))
            .rejects("spec.postgresql.pgHba", "with scram-sha-256, cert or reject"),
        case("pg_hba line smuggling a second line", "Cluster")
            .patch(json!({"spec": {"postgresql": {"pgHba": ["hostssl all all 10.0.0.0/8 scram-sha-256\nhost all all all trust"]}}}))
            .rejects("spec.postgresql.pgHba", "lines must be `local` or `hostssl`"),
        case("cluster_name is Patroni's", "Cluster")
            .patch(json!({"spec": {"postgresql": {"parameters": {"cluster_name": "x"}}}}))
            .rejects("spec.postgresql.parameters", "sets a parameter tusk controls"),
        case("Patroni timing that cannot hold the leader lock", "Cluster")
            .patch(json!({"spec": {"highAvailability": {"ttlSeconds": 5}}}))
            .rejects("spec.highAvailability", "loopWaitSeconds + 2 * retryTimeoutSeconds <= ttlSeconds"),
        case("TLS server certificate without its CA", "Cluster")
            .patch(json!({"spec": {"tls": {"serverSecret": {"name": "db-server-tls"}}}}))
            .rejects("spec.tls", "spec.tls.serverSecret and spec.tls.caSecret go together"),
        case("a repository with two types (s3 and volume)", "Cluster")
            .edit(|object| {
                support::at(object, "/spec/backup/repositories/0")["volume"] = json!({"size": "10Gi"});
            })
            .rejects("spec.backup.repositories[0]", "a repository needs exactly one of volume, s3, gcs or azure"),
        case("a repository with no type", "Cluster")
            .edit(|object| {
                let repository = support::at(object, "/spec/backup/repositories/0");
                repository.as_object_mut().unwrap().remove("s3");
            })
            .rejects("spec.backup.repositories[0]", "a repository needs exactly one of volume, s3, gcs or azure"),
        case("two repositories with one name", "Cluster")
            .edit(|object| {
                let repositories = support::at(object, "/spec/backup/repositories");
                let copy = repositories[0].clone();
                repositories.as_array_mut().unwrap().push(copy);
            })
            .rejects("spec.backup.repositories[1]", "Duplicate value"),
        case("repository name outside repo1..repo4", "Cluster")
            .edit(|object| support::at(object, "/spec/backup/repositories/0")["name"] = json!("repo5"))
            .rejects("spec.backup.repositories[0].name", "should match '^repo[1-4]$'"),
        case("five repositories", "Cluster")
            .edit(|object| {
                let repositories = support::at(object, "/spec/backup/repositories");
                let template = repositories[0].clone();
                let items: Vec<Value> = (1..=5)
                    .map(|n| {
                        let mut repository = template.clone();
                        repository["name"] = json!(format!("repo{n}"));
                        repository
                    })
                    .collect();
                *repositories = Value::Array(items);
            })
            .rejects("spec.backup.repositories", "Too many: 5: must have at most 4 items"),
        case("no repositories in a backup section", "Cluster")
            .patch(json!({"spec": {"backup": {"repositories": []}}}))
            .rejects("spec.backup.repositories", "should have at least 1 items"),
        case("negative retention", "Cluster")
            .edit(|object| {
                support::at(object, "/spec/backup/repositories/0/retention")["full"] = json!(-1);
            })
            .rejects("spec.backup.repositories[0].retention.full", "should be greater than or equal to 1"),
        case("unknown retention type", "Cluster")
            .edit(|object| {
                support::at(object, "/spec/backup/repositories/0/retention")["fullType"] = json!("Weeks");
            })
            .rejects("spec.backup.repositories[0].retention.fullType", "Unsupported value: \"Weeks\""),
        case("unknown compression", "Cluster")
            .patch(json!({"spec": {"backup": {"compression": {"type": "zip"}}}}))
            .rejects("spec.backup.compression.type", "Unsupported value: \"zip\""),
        case("compression level out of range", "Cluster")
            .patch(json!({"spec": {"backup": {"compression": {"level": 20}}}}))
            .rejects("spec.backup.compression.level", "should be less than or equal to 19"),
        case("the same namespace admitted twice", "Cluster")
            .patch(json!({"spec": {"bindingPolicy": {"namespaces": ["shop", "shop"]}}}))
            .rejects("spec.bindingPolicy.namespaces[1]", "Duplicate value: \"shop\""),
        case("admitted namespace that is not a DNS label", "Cluster")
            .patch(json!({"spec": {"bindingPolicy": {"namespaces": ["Shop_Team"]}}}))
            .rejects("spec.bindingPolicy.namespaces[0]", "should match"),
        case("restore from a cluster and an inline repository at once", "Cluster")
            .based_on("cluster-restore.yaml")
            .patch(json!({"spec": {"bootstrap": {"restore": {"repository": {
                "name": "repo1", "path": "/db/db", "volume": {"size": "50Gi"}}}}}}))
            .rejects("spec.bootstrap.restore", "needs exactly one of cluster"),
        case("restore target with both a time and an LSN", "Cluster")
            .based_on("cluster-restore.yaml")
            .patch(json!({"spec": {"bootstrap": {"restore": {"target": {"lsn": "0/3000060"}}}}}))
            .rejects("spec.bootstrap.restore.target", "a recovery target needs exactly one of time, lsn or restorePoint"),
        case("restore target time that is not a time stamp", "Cluster")
            .based_on("cluster-restore.yaml")
            .patch(json!({"spec": {"bootstrap": {"restore": {"target": {"time": "yesterday"}}}}}))
            .rejects("spec.bootstrap.restore.target.time", "should match"),
        case("bootstrap changed after creation", "Cluster")
            .based_on("cluster-restore.yaml")
            .patch(json!({"spec": {"bootstrap": {"restore": {"target": {"time": "2026-11-22T11:00:00Z"}}}}}))
            .on_update()
            .rejects("spec.bootstrap", "spec.bootstrap cannot be changed after the Cluster is created"),
        case("bootstrap added after creation", "Cluster")
            .patch(json!({"spec": {"bootstrap": {"initdb": {}}}}))
            .on_update()
            .rejects("spec", "spec.bootstrap cannot be added or removed"),
        case("WAL volume added after creation", "Cluster")
            .based_on("cluster-minimal.yaml")
            .patch(json!({"spec": {"walStorage": {"size": "5Gi"}}}))
            .on_update()
            .rejects("spec", "spec.walStorage cannot be added or removed"),
        case("WAL volume shrinks", "Cluster")
            .patch(json!({"spec": {"walStorage": {"size": "1Gi"}}}))
            .on_update()
            .rejects("spec.walStorage", "a volume's size cannot shrink"),
        case("repository volume shrinks", "Cluster")
            .based_on("cluster-restore.yaml")
            .patch(json!({"spec": {"backup": {"repositories": [{"name": "repo1", "volume": {"size": "10Gi"}}]}}}))
            .on_update()
            .rejects("spec.backup.repositories[0].volume", "a volume's size cannot shrink"),
        case("encryption added to existing repositories", "Cluster")
            .patch(json!({"spec": {"backup": {"encryption": {"passphraseSecret": {"name": "db-cipher", "key": "passphrase"}}}}}))
            .on_update()
            .rejects("spec.backup", "spec.backup.encryption cannot be added, removed or changed"),
        case("inline restore repository without a path", "Cluster")
            .based_on("cluster-restore.yaml")
            .edit(|object| {
                let restore = support::at(object, "/spec/bootstrap/restore");
                restore.as_object_mut().unwrap().remove("cluster");
                restore["repository"] = json!({"name": "repo1", "volume": {"size": "50Gi"}});
            })
            .rejects("spec.bootstrap.restore", "spec.bootstrap.restore.repository needs a path"),
        case("restore from the cluster itself", "Cluster")
            .based_on("cluster-restore.yaml")
            .patch(json!({"spec": {"bootstrap": {"restore": {"cluster": "db-restored"}}}}))
            .rejects("", "names this Cluster itself"),
        case("cluster name too long for its children", "Cluster")
            .edit(|object| object["metadata"]["name"] = json!("c".repeat(41)))
            .rejects("", "a Cluster name may have at most 40 characters"),
        case("pod label in tusk's own namespace", "Cluster")
            .patch(json!({"spec": {"instanceMetadata": {"labels": {"tusk.dev/role": "primary"}}}}))
            .rejects("spec.instanceMetadata.labels", "may not set tusk.dev/ or app.kubernetes.io/ labels"),
        case("pod label value that is not a label value", "Cluster")
            .patch(json!({"spec": {"instanceMetadata": {"labels": {"team": "a b"}}}}))
            .rejects("spec.instanceMetadata.labels[team]", "should match"),
    ]);

    // PostgresUser ----------------------------------------------------------------------------
    cases.extend([
        case("role name postgres", "PostgresUser")
            .patch(json!({"spec": {"roleName": "postgres"}}))
            .rejects("spec.roleName", "spec.roleName is a reserved role name"),
        case("role name pg_monitor", "PostgresUser")
            .patch(json!({"spec": {"roleName": "pg_monitor"}}))
            .rejects("spec.roleName", "spec.roleName is a reserved role name"),
        case("role name of tusk's replication role", "PostgresUser")
            .patch(json!({"spec": {"roleName": "replicator"}}))
            .rejects("spec.roleName", "spec.roleName is a reserved role name"),
        case("object named postgres without a role name", "PostgresUser")
            .edit(|object| {
                object["metadata"]["name"] = json!("postgres");
                object["spec"].as_object_mut().unwrap().remove("roleName");
            })
            .rejects("", "metadata.name is a reserved role name"),
        case("object name over 63 characters without a role name", "PostgresUser")
            .edit(|object| {
                object["metadata"]["name"] = json!("u".repeat(64));
                object["spec"].as_object_mut().unwrap().remove("roleName");
            })
            .rejects("", "needs spec.roleName: PostgreSQL role names are at most 63 bytes"),
        case("empty role name", "PostgresUser")
            .patch(json!({"spec": {"roleName": ""}}))
            .rejects("spec.roleName", "should be at least 1 chars long"),
        case("role name over 63 bytes in 32 characters", "PostgresUser")
            .patch(json!({"spec": {"roleName": "é".repeat(32)}}))
            .rejects("spec.roleName", "longer than 63 bytes"),
        case("role name changed after creation", "PostgresUser")
            .patch(json!({"spec": {"roleName": "renamed"}}))
            .on_update()
            .rejects("spec", "spec.roleName cannot be changed"),
        case("cluster changed after creation", "PostgresUser")
            .patch(json!({"spec": {"cluster": {"name": "other"}}}))
            .on_update()
            .rejects("spec", "spec.cluster cannot be changed"),
        case("empty cluster name", "PostgresUser")
            .patch(json!({"spec": {"cluster": {"name": ""}}}))
            .rejects("spec.cluster.name", "should be at least 1 chars long"),
        case("connection limit below -1", "PostgresUser")
            .patch(json!({"spec": {"connectionLimit": -2}}))
            .rejects("spec.connectionLimit", "should be greater than or equal to -1"),
        case("empty database name", "PostgresUser")
            .patch(json!({"spec": {"databases": [{"name": ""}]}}))
            .rejects("spec.databases[0].name", "should be at least 1 chars long"),
        case("database template1", "PostgresUser")
            .patch(json!({"spec": {"databases": [{"name": "template1"}]}}))
            .rejects("spec.databases[0].name", "spec.databases cannot include postgres, template0 or template1"),
        case("the same database twice", "PostgresUser")
            .patch(json!({"spec": {"databases": [{"name": "shop"}, {"name": "shop"}]}}))
            .rejects("spec.databases[1]", "Duplicate value"),
        case("unknown grant access", "PostgresUser")
            .patch(json!({"spec": {"grants": [{"database": "shop", "access": "Admin"}]}}))
            .rejects("spec.grants[0].access", "Unsupported value: \"Admin\""),
        case("grant without schemas", "PostgresUser")
            .patch(json!({"spec": {"grants": [{"database": "shop", "access": "ReadOnly", "schemas": []}]}}))
            .rejects("spec.grants[0].schemas", "should have at least 1 items"),
        case("unknown deletion policy", "PostgresUser")
            .patch(json!({"spec": {"deletion": {"policy": "Delete"}}}))
            .rejects("spec.deletion.policy", "Unsupported value: \"Delete\""),
        case("reassignOwnedTo while the role is retained", "PostgresUser")
            .patch(json!({"spec": {"deletion": {"policy": "Retain", "reassignOwnedTo": "app_owner"}}}))
            .rejects("spec.deletion", "only apply when spec.deletion.policy is Drop"),
        case("reassign and drop owned objects at once", "PostgresUser")
            .patch(json!({"spec": {"deletion": {"policy": "Drop", "reassignOwnedTo": "app_owner", "dropOwnedObjects": true}}}))
            .rejects("spec.deletion", "set either reassignOwnedTo"),
        case("password rotation every ten minutes", "PostgresUser")
            .patch(json!({"spec": {"password": {"secret": null, "rotationInterval": "10m"}}}))
            .rejects("spec.password.rotationInterval", "must be at least 1h"),
        case("password rotation interval in words", "PostgresUser")
            .patch(json!({"spec": {"password": {"secret": null, "rotationInterval": "monthly"}}}))
            .rejects("spec.password.rotationInterval", "should match"),
        case("rotation of a password the user supplies", "PostgresUser")
            .patch(json!({"spec": {"password": {"secret": {"name": "app-password", "key": "password"}, "rotationInterval": "720h"}}}))
            .rejects("spec.password", "only applies to generated passwords"),
        case("asking for superuser", "PostgresUser")
            .patch(json!({"spec": {"superuser": true}}))
            .rejects("spec.superuser", "unknown field \"spec.superuser\""),
    ]);

    // ServiceBinding --------------------------------------------------------------------------
    cases.extend([
        case("empty database", "ServiceBinding")
            .patch(json!({"spec": {"database": ""}}))
            .rejects("spec.database", "should be at least 1 chars long"),
        case("database missing", "ServiceBinding")
            .patch(json!({"spec": {"database": null}}))
            .rejects("spec.database", "Required value"),
        case("unknown access", "ServiceBinding")
            .patch(json!({"spec": {"access": "Admin"}}))
            .rejects("spec.access", "Unsupported value: \"Admin\""),
        case(
            "cluster namespace that is not a DNS label",
            "ServiceBinding",
        )
        .patch(json!({"spec": {"cluster": {"namespace": "Team_DB"}}}))
        .rejects("spec.cluster.namespace", "should match"),
        case("cluster changed after creation", "ServiceBinding")
            .patch(json!({"spec": {"cluster": {"name": "other"}}}))
            .on_update()
            .rejects("spec", "spec.cluster cannot be changed"),
        case("secret name changed after creation", "ServiceBinding")
            .patch(json!({"spec": {"secretName": "renamed-secret"}}))
            .on_update()
            .rejects("spec", "spec.secretName cannot be changed"),
        case("pooler name that is not a DNS label", "ServiceBinding")
            .patch(json!({"spec": {"pooler": {"name": "DB_Pooler"}}}))
            .rejects("spec.pooler.name", "should match"),
        case("pooler without a name", "ServiceBinding")
            .patch(json!({"spec": {"pooler": {}}}))
            .rejects("spec.pooler.name", "Required value"),
        case("binding name longer than a label value", "ServiceBinding")
            .edit(|object| object["metadata"]["name"] = json!("b".repeat(64)))
            .rejects("", "ServiceBinding names are at most 63 characters"),
    ]);

    // Backup ----------------------------------------------------------------------------------
    cases.extend([
        case("unknown backup type", "Backup")
            .patch(json!({"spec": {"type": "Snapshot"}}))
            .rejects("spec.type", "Unsupported value: \"Snapshot\": supported values: \"Full\", \"Differential\", \"Incremental\""),
        case("backup type changed after creation", "Backup")
            .patch(json!({"spec": {"type": "Incremental"}}))
            .on_update()
            .rejects("spec", "Backup spec is immutable"),
        case("backup repository changed after creation", "Backup")
            .patch(json!({"spec": {"repository": "repo2"}}))
            .on_update()
            .rejects("spec", "Backup spec is immutable"),
        case("repository outside repo1..repo4", "Backup")
            .patch(json!({"spec": {"repository": "repo9"}}))
            .rejects("spec.repository", "should match '^repo[1-4]$'"),
        case("unknown deletion policy", "Backup")
            .patch(json!({"spec": {"deletionPolicy": "Delete"}}))
            .rejects("spec.deletionPolicy", "Unsupported value: \"Delete\""),
        case("empty cluster name", "Backup")
            .patch(json!({"spec": {"cluster": {"name": ""}}}))
            .rejects("spec.cluster.name", "should be at least 1 chars long"),
    ]);

    // BackupSchedule --------------------------------------------------------------------------
    cases.extend([
        case("schedule in words", "BackupSchedule")
            .patch(json!({"spec": {"schedule": "every night"}}))
            .rejects(
                "spec.schedule",
                "spec.schedule must be a cron expression with five fields",
            ),
        case("schedule with six fields (seconds)", "BackupSchedule")
            .patch(json!({"spec": {"schedule": "0 0 3 * * *"}}))
            .rejects(
                "spec.schedule",
                "spec.schedule must be a cron expression with five fields",
            ),
        case("schedule with minute 60", "BackupSchedule")
            .patch(json!({"spec": {"schedule": "60 3 * * *"}}))
            .rejects(
                "spec.schedule",
                "spec.schedule must be a cron expression with five fields",
            ),
        case("schedule with hour 24", "BackupSchedule")
            .patch(json!({"spec": {"schedule": "0 24 * * *"}}))
            .rejects(
                "spec.schedule",
                "spec.schedule must be a cron expression with five fields",
            ),
        case("unknown schedule macro", "BackupSchedule")
            .patch(json!({"spec": {"schedule": "@nightly"}}))
            .rejects(
                "spec.schedule",
                "spec.schedule must be a cron expression with five fields",
            ),
        case("empty schedule", "BackupSchedule")
            .patch(json!({"spec": {"schedule": ""}}))
            .rejects("spec.schedule", "should be at least 1 chars long"),
        case("time zone Local", "BackupSchedule")
            .patch(json!({"spec": {"timeZone": "Local"}}))
            .rejects(
                "spec.timeZone",
                "spec.timeZone must be an IANA time zone name",
            ),
        case("time zone with a space", "BackupSchedule")
            .patch(json!({"spec": {"timeZone": "Europe/Isle of Man"}}))
            .rejects(
                "spec.timeZone",
                "spec.timeZone must be an IANA time zone name",
            ),
        case("negative successful history limit", "BackupSchedule")
            .patch(json!({"spec": {"successfulBackupsHistoryLimit": -1}}))
            .rejects(
                "spec.successfulBackupsHistoryLimit",
                "should be greater than or equal to 0",
            ),
        case("negative failed history limit", "BackupSchedule")
            .patch(json!({"spec": {"failedBackupsHistoryLimit": -1}}))
            .rejects(
                "spec.failedBackupsHistoryLimit",
                "should be greater than or equal to 0",
            ),
        case("history limit over 100", "BackupSchedule")
            .patch(json!({"spec": {"successfulBackupsHistoryLimit": 101}}))
            .rejects(
                "spec.successfulBackupsHistoryLimit",
                "should be less than or equal to 100",
            ),
        case(
            "expiring every backup as soon as it completes",
            "BackupSchedule",
        )
        .patch(
            json!({"spec": {"backupDeletionPolicy": "Expire", "successfulBackupsHistoryLimit": 0}}),
        )
        .rejects(
            "spec",
            "successfulBackupsHistoryLimit 0 would expire every backup",
        ),
        case("unknown backup type", "BackupSchedule")
            .patch(json!({"spec": {"backupType": "Snapshot"}}))
            .rejects("spec.backupType", "Unsupported value: \"Snapshot\""),
        case("concurrent backups allowed", "BackupSchedule")
            .patch(json!({"spec": {"concurrencyPolicy": "Allow"}}))
            .rejects(
                "spec.concurrencyPolicy",
                "Unsupported value: \"Allow\": supported values: \"Forbid\"",
            ),
        case("starting deadline under 10 seconds", "BackupSchedule")
            .patch(json!({"spec": {"startingDeadlineSeconds": 5}}))
            .rejects(
                "spec.startingDeadlineSeconds",
                "should be greater than or equal to 10",
            ),
        case(
            "schedule name too long for the Backups it names",
            "BackupSchedule",
        )
        .edit(|object| object["metadata"]["name"] = json!("s".repeat(51)))
        .rejects("", "BackupSchedule names are at most 50 characters"),
        case("repository outside repo1..repo4", "BackupSchedule")
            .patch(json!({"spec": {"repository": "repo0"}}))
            .rejects("spec.repository", "should match '^repo[1-4]$'"),
    ]);

    // PGUpgrade -------------------------------------------------------------------------------
    cases.extend([
        case("upgrade to the same major", "PGUpgrade")
            .patch(json!({"spec": {"fromPostgresVersion": 17, "toPostgresVersion": 17}}))
            .rejects(
                "spec",
                "toPostgresVersion must be greater than fromPostgresVersion",
            ),
        case("upgrade to an older major", "PGUpgrade")
            .patch(json!({"spec": {"fromPostgresVersion": 17, "toPostgresVersion": 16}}))
            .rejects(
                "spec",
                "toPostgresVersion must be greater than fromPostgresVersion",
            ),
        case("upgrade from PostgreSQL 13", "PGUpgrade")
            .patch(json!({"spec": {"fromPostgresVersion": 13}}))
            .rejects(
                "spec.fromPostgresVersion",
                "should be greater than or equal to 14",
            ),
        case("upgrade to PostgreSQL 19", "PGUpgrade")
            .patch(json!({"spec": {"toPostgresVersion": 19}}))
            .rejects(
                "spec.toPostgresVersion",
                "should be less than or equal to 18",
            ),
        case("target version missing", "PGUpgrade")
            .patch(json!({"spec": {"toPostgresVersion": null}}))
            .rejects("spec.toPostgresVersion", "Required value"),
        case("unknown transfer method", "PGUpgrade")
            .patch(json!({"spec": {"transferMethod": "Rsync"}}))
            .rejects(
                "spec.transferMethod",
                "Unsupported value: \"Rsync\": supported values: \"Link\", \"Copy\", \"Clone\"",
            ),
        case("target version changed after creation", "PGUpgrade")
            .edit(|object| {
                // One major further, or one back when the example already goes to the newest.
                let to = support::at(object, "/spec/toPostgresVersion");
                let changed = if to.as_i64() == Some(18) { 17 } else { 18 };
                *to = json!(changed);
                support::at(object, "/spec")["fromPostgresVersion"] = json!(15);
            })
            .on_update()
            .rejects("spec", "PGUpgrade spec is immutable"),
        case("transfer method changed after creation", "PGUpgrade")
            .patch(json!({"spec": {"transferMethod": "Copy"}}))
            .on_update()
            .rejects("spec", "PGUpgrade spec is immutable"),
        case("upgrade name longer than a label value", "PGUpgrade")
            .edit(|object| object["metadata"]["name"] = json!("u".repeat(64)))
            .rejects("", "PGUpgrade names are at most 63 characters"),
        case("empty cluster name", "PGUpgrade")
            .patch(json!({"spec": {"cluster": {"name": ""}}}))
            .rejects("spec.cluster.name", "should be at least 1 chars long"),
    ]);

    // Pooler ----------------------------------------------------------------------------------
    cases.extend([
        case("no PgBouncer pods", "Pooler")
            .patch(json!({"spec": {"instances": 0}}))
            .rejects("spec.instances", "should be greater than or equal to 1"),
        case("an unknown pool mode", "Pooler")
            .patch(json!({"spec": {"pgbouncer": {"poolMode": "transactional"}}}))
            .rejects("spec.pgbouncer.poolMode", "Unsupported value"),
        case("an unknown target", "Pooler")
            .patch(json!({"spec": {"target": "Primary"}}))
            .rejects("spec.target", "Unsupported value"),
        case("pools of size 0", "Pooler")
            .patch(json!({"spec": {"pgbouncer": {"defaultPoolSize": 0}}}))
            .rejects(
                "spec.pgbouncer.defaultPoolSize",
                "should be greater than or equal to 1",
            ),
        case("pools larger than the database limit", "Pooler")
            .patch(json!({"spec": {"pgbouncer": {"defaultPoolSize": 50, "maxDbConnections": 40}}}))
            .rejects("spec.pgbouncer", "defaultPoolSize is larger than maxDbConnections"),
        case("authentication through parameters", "Pooler")
            .patch(json!({"spec": {"pgbouncer": {"parameters": {"auth_type": "trust"}}}}))
            .rejects("spec.pgbouncer.parameters", "sets something tusk controls"),
        case("the pool mode through parameters", "Pooler")
            .patch(json!({"spec": {"pgbouncer": {"parameters": {"pool_mode": "statement"}}}}))
            .rejects("spec.pgbouncer.parameters", "use the field"),
        case("a parameter name PgBouncer does not spell so", "Pooler")
            .patch(json!({"spec": {"pgbouncer": {"parameters": {"Server-Lifetime": "60"}}}}))
            .rejects("spec.pgbouncer.parameters", "lowercase letters, digits and underscores"),
        case("a parameter value smuggling a second line", "Pooler")
            .patch(json!({"spec": {"pgbouncer": {"parameters": {"server_lifetime": "60\nauth_type = trust"}}}}))
            .rejects("spec.pgbouncer.parameters.server_lifetime", "is one line"),
    ]);

    cases
}

// ---------------------------------------------------------------------------------------------
// The machinery

#[derive(Debug)]
enum Edit {
    /// A JSON merge patch (RFC 7386): objects merge, `null` removes a field.
    Patch(Value),
    /// Any change to the object, for lists and other things a merge patch cannot say.
    With(fn(&mut Value)),
}

#[derive(Debug)]
struct Case {
    name: &'static str,
    kind: &'static str,
    /// The example file holding the base object; default: the first example of the kind.
    file: Option<&'static str>,
    edit: Edit,
    /// Update: the base is the old object and the edited base the new one.
    update: bool,
    path: &'static str,
    message: &'static str,
}

struct CaseBuilder {
    name: &'static str,
    kind: &'static str,
    file: Option<&'static str>,
    edit: Option<Edit>,
    update: bool,
}

fn case(name: &'static str, kind: &'static str) -> CaseBuilder {
    CaseBuilder {
        name,
        kind,
        file: None,
        edit: None,
        update: false,
    }
}

impl CaseBuilder {
    fn patch(mut self, patch: Value) -> Self {
        self.edit = Some(Edit::Patch(patch));
        self
    }

    fn edit(mut self, edit: fn(&mut Value)) -> Self {
        self.edit = Some(Edit::With(edit));
        self
    }

    fn on_update(mut self) -> Self {
        self.update = true;
        self
    }

    fn based_on(mut self, file: &'static str) -> Self {
        self.file = Some(file);
        self
    }

    /// The rejection expected: the field path exactly (empty for the object itself) and a
    /// piece of the message.
    fn rejects(self, path: &'static str, message: &'static str) -> Case {
        Case {
            name: self.name,
            kind: self.kind,
            file: self.file,
            edit: self
                .edit
                .unwrap_or_else(|| panic!("case {:?} changes nothing", self.name)),
            update: self.update,
            path,
            message,
        }
    }
}

/// The base object of a case: the named example, or `<kind>.yaml`, or the first example of
/// the kind in any file.
fn base_object(examples: &[support::Example], case: &Case) -> Result<Value, String> {
    let of_kind = |example: &&support::Example| example.kind() == case.kind;
    let conventional = format!("{}.yaml", case.kind.to_lowercase());
    let found = match case.file {
        Some(file) => examples
            .iter()
            .filter(of_kind)
            .find(|example| example.file == file),
        None => examples
            .iter()
            .filter(of_kind)
            .find(|example| example.file == conventional)
            .or_else(|| examples.iter().find(of_kind)),
    };
    found.map(|example| example.value.clone()).ok_or_else(|| {
        format!(
            "no {} example in docs/examples{}",
            case.kind,
            case.file.map(|f| format!("/{f}")).unwrap_or_default()
        )
    })
}

#[derive(Debug)]
enum Outcome {
    /// Rejected as expected.
    Rejected(Vec<Rejection>),
    /// Something else: the reason, and what was said.
    Wrong(String, Vec<Rejection>),
}

fn run(case: &Case, examples: &[support::Example], kinds: &[support::KindSchema]) -> Outcome {
    let Some(kind) = kinds.iter().find(|kind| kind.kind == case.kind) else {
        return Outcome::Wrong(format!("no CRD of kind {}", case.kind), Vec::new());
    };
    let base = match base_object(examples, case) {
        Ok(base) => base,
        Err(reason) => return Outcome::Wrong(reason, Vec::new()),
    };

    // Without the change the object must pass: otherwise the case proves nothing.
    let control = support::admit(kind, &base, case.update.then_some(&base));
    if !control.is_empty() {
        return Outcome::Wrong(
            "the unchanged base object is rejected too".to_owned(),
            control,
        );
    }

    let mut changed = base.clone();
    match &case.edit {
        Edit::Patch(patch) => support::merge_patch(&mut changed, patch),
        Edit::With(edit) => edit(&mut changed),
    }
    if changed == base {
        return Outcome::Wrong(
            "the change leaves the base object as it was".to_owned(),
            Vec::new(),
        );
    }

    let rejections = support::admit(kind, &changed, case.update.then_some(&base));
    if let Some(defect) = rejections
        .iter()
        .find(|rejection| rejection.source == Source::CelDefect)
    {
        return Outcome::Wrong(
            format!("a CEL rule cannot be evaluated: {}", defect.message),
            rejections,
        );
    }
    let expected = rejections.iter().any(|rejection| {
        rejection.path == case.path
            && rejection.message.contains(case.message)
            && matches!(rejection.source, Source::Schema(_) | Source::Cel)
    });
    if expected {
        Outcome::Rejected(rejections)
    } else if rejections.is_empty() {
        Outcome::Wrong("accepted".to_owned(), rejections)
    } else {
        Outcome::Wrong("rejected, but not as expected".to_owned(), rejections)
    }
}

#[test]
fn bad_inputs_are_rejected_with_a_clear_message() {
    let examples = support::examples();
    let kinds = support::kinds();
    let cases = cases();
    let mut failures = Vec::new();
    println!("\n{} bad inputs:", cases.len());
    for case in &cases {
        let when = if case.update { "update" } else { "create" };
        let (verdict, said) = match run(case, &examples, &kinds) {
            Outcome::Rejected(said) => ("ok  ", said),
            Outcome::Wrong(reason, said) => {
                failures.push(format!("{} / {} ({when}): {reason}", case.kind, case.name));
                ("FAIL", said)
            }
        };
        println!("{verdict} {:<14} {} ({when})", case.kind, case.name);
        let shown_path = if case.path.is_empty() {
            "<object>"
        } else {
            case.path
        };
        println!("       expected  {shown_path}: …{}…", case.message);
        for rejection in &said {
            println!("       got       {rejection}");
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad-input cases failed (run with --nocapture for the table):\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

#[test]
fn case_names_are_unique_per_kind() {
    let cases = cases();
    for (index, case) in cases.iter().enumerate() {
        assert!(
            !cases[..index]
                .iter()
                .any(|earlier| earlier.kind == case.kind && earlier.name == case.name),
            "two {} cases are called {:?}",
            case.kind,
            case.name
        );
    }
}
