//! The CRDs survive serialisation unchanged, and the checked-in `crds/` and
//! `charts/tusk/crds/` files are exactly what `cargo xtask crds` would write now — so a plain
//! `cargo test` notices a type change whose CRD files were not regenerated.

mod support;

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

#[test]
fn every_crd_survives_a_yaml_round_trip_unchanged() {
    for crd in tusk_api::crds() {
        let yaml = serde_yaml_ng::to_string(&crd).expect("CRD to YAML");
        let back: CustomResourceDefinition =
            serde_yaml_ng::from_str(&yaml).expect("YAML back to a CRD");
        assert_eq!(
            back, crd,
            "{} changed in a YAML round trip",
            crd.spec.names.kind
        );
        // And as JSON, which is what kubectl sends and the API server stores.
        let json = serde_json::to_value(&crd).expect("CRD to JSON");
        let back: CustomResourceDefinition =
            serde_json::from_value(json).expect("JSON back to a CRD");
        assert_eq!(
            back, crd,
            "{} changed in a JSON round trip",
            crd.spec.names.kind
        );
    }
}

#[test]
fn checked_in_crd_files_match_the_types() {
    let root = support::workspace_root();
    let mut problems = Vec::new();
    for dir in support::CRD_DIRS {
        let mut expected = BTreeSet::new();
        for crd in tusk_api::crds() {
            let (name, contents) = support::render_crd_file(&crd);
            let path = root.join(dir).join(&name);
            match std::fs::read_to_string(&path) {
                Ok(on_disk) if on_disk == contents => {}
                Ok(_) => problems.push(format!("stale:   {dir}/{name}")),
                Err(_) => problems.push(format!("missing: {dir}/{name}")),
            }
            expected.insert(name);
        }
        let entries = std::fs::read_dir(root.join(dir)).into_iter().flatten();
        for entry in entries {
            let name = entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".yaml") && !expected.contains(&name) {
                problems.push(format!("extra:   {dir}/{name}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the CRD files differ from the types; run `cargo xtask crds`:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_crds_are_the_seven_tusk_kinds_in_one_group() {
    let kinds: Vec<String> = tusk_api::crds()
        .iter()
        .map(|crd| crd.spec.names.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        [
            "Cluster",
            "PostgresUser",
            "ServiceBinding",
            "Backup",
            "BackupSchedule",
            "PGUpgrade",
            "Pooler"
        ]
    );
    for crd in tusk_api::crds() {
        assert_eq!(crd.spec.group, tusk_api::GROUP);
        assert_eq!(crd.spec.scope, "Namespaced", "{}", crd.spec.names.kind);
        let versions: Vec<(&str, bool, bool)> = crd
            .spec
            .versions
            .iter()
            .map(|version| (version.name.as_str(), version.served, version.storage))
            .collect();
        assert_eq!(
            versions,
            [(tusk_api::VERSION, true, true)],
            "{}",
            crd.spec.names.kind
        );
    }
}
