//! Whether the suite runs, and against what.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `TUSK_E2E_KUBECONFIG` | kubeconfig of a disposable cluster with the chart installed | unset: every scenario is skipped with a printed reason |
//! | `TUSK_E2E_OPERATOR_NAMESPACE` | where the chart runs the operator | `tusk-system` |
//! | `TUSK_E2E_POSTGRES_VERSION` | major of the Clusters the scenarios create | `17` |
//! | `TUSK_E2E_UPGRADE_FROM` | major the upgrade scenario starts from (it goes to the next) | `16` |
//! | `TUSK_E2E_EXPANDABLE_STORAGE_CLASS` | a StorageClass with `allowVolumeExpansion: true` for the auto-grow scenario | unset: that scenario is skipped (kind's `standard` class cannot expand) |
//! | `TUSK_E2E_TIMEOUT_SCALE` | multiplies every timeout (slow machines) | `1` |
//! | `TUSK_E2E_KEEP_NAMESPACES` | `1` keeps a failed scenario's namespaces for inspection | unset |

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub const KUBECONFIG_VAR: &str = "TUSK_E2E_KUBECONFIG";

/// Whether to run, decided from `TUSK_E2E_KUBECONFIG` alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not configured: skip, printing why.
    Skip(String),
    /// Run against the cluster of this kubeconfig.
    Run(PathBuf),
}

pub fn decide(value: Option<OsString>) -> Decision {
    match value {
        Some(path) if !path.is_empty() => Decision::Run(PathBuf::from(path)),
        _ => Decision::Skip(format!(
            "{KUBECONFIG_VAR} is not set: the e2e scenarios need a disposable Kubernetes \
             cluster with the tusk chart installed (see e2e/README.md)"
        )),
    }
}

/// Everything a scenario may tune.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub operator_namespace: String,
    pub postgres_version: i32,
    pub upgrade_from: i32,
    pub expandable_storage_class: Option<String>,
    pub timeout_scale: f64,
    pub keep_namespaces: bool,
}

impl Settings {
    /// Reads the settings through `lookup` (the process environment in the suite).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let major = |var: &str, default: i32| -> anyhow::Result<i32> {
            match lookup(var) {
                None => Ok(default),
                Some(v) => {
                    let major: i32 = v
                        .trim()
                        .parse()
                        .with_context(|| format!("{var}={v:?} is not a PostgreSQL major"))?;
                    if !(tusk_api::OLDEST_UPGRADABLE_POSTGRES_VERSION
                        ..=*tusk_api::SUPPORTED_POSTGRES_VERSIONS.end())
                        .contains(&major)
                    {
                        bail!("{var}={major} is outside the majors tusk supports");
                    }
                    Ok(major)
                }
            }
        };
        let timeout_scale = match lookup("TUSK_E2E_TIMEOUT_SCALE") {
            None => 1.0,
            Some(v) => match v.trim().parse::<f64>() {
                Ok(scale) if scale.is_finite() && scale > 0.0 => scale,
                _ => bail!("TUSK_E2E_TIMEOUT_SCALE={v:?} must be a positive number"),
            },
        };
        let upgrade_from = major("TUSK_E2E_UPGRADE_FROM", 16)?;
        if !tusk_api::SUPPORTED_POSTGRES_VERSIONS.contains(&(upgrade_from + 1)) {
            bail!("TUSK_E2E_UPGRADE_FROM={upgrade_from}: the next major is not supported");
        }
        Ok(Self {
            operator_namespace: lookup("TUSK_E2E_OPERATOR_NAMESPACE")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "tusk-system".to_owned()),
            postgres_version: major("TUSK_E2E_POSTGRES_VERSION", 17)?,
            upgrade_from,
            expandable_storage_class: lookup("TUSK_E2E_EXPANDABLE_STORAGE_CLASS")
                .filter(|v| !v.is_empty()),
            timeout_scale,
            keep_namespaces: lookup("TUSK_E2E_KEEP_NAMESPACES").as_deref() == Some("1"),
        })
    }

    /// `base` stretched by `TUSK_E2E_TIMEOUT_SCALE`.
    pub fn timeout(&self, base: Duration) -> Duration {
        base.mul_f64(self.timeout_scale)
    }
}

/// A reachable cluster and the settings.
#[derive(Clone)]
pub struct E2e {
    pub client: Client,
    pub settings: Settings,
}

impl std::fmt::Debug for E2e {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2e")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// `None` (after printing why) when the suite is not configured; panics — failing the test —
/// when it is configured but the cluster cannot be reached or the settings are wrong.
pub async fn setup() -> Option<E2e> {
    match decide(std::env::var_os(KUBECONFIG_VAR)) {
        Decision::Skip(reason) => {
            eprintln!("skipped: {reason}");
            None
        }
        Decision::Run(path) => match connect(&path).await {
            Ok(e2e) => Some(e2e),
            Err(error) => panic!("{KUBECONFIG_VAR}={}: {error:#}", path.display()),
        },
    }
}

async fn connect(path: &std::path::Path) -> anyhow::Result<E2e> {
    let settings = Settings::from_lookup(|var| std::env::var(var).ok())?;
    let kubeconfig = Kubeconfig::read_from(path).context("reading the kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")?;
    install_crypto_provider();
    let client = Client::try_from(config).context("building a client")?;
    let version = client
        .apiserver_version()
        .await
        .context("the API server is not reachable")?;
    eprintln!(
        "e2e against Kubernetes {}.{} (operator in {})",
        version.major, version.minor, settings.operator_namespace
    );
    Ok(E2e { client, settings })
}

/// Selects rustls' ring provider for this process. A `cargo test --workspace` build unifies
/// features across crates and some test-only dependencies enable aws-lc-rs as well; with two
/// providers compiled in, rustls refuses to guess, so the choice is made explicitly (the
/// operator binary itself is built with ring only). Installing twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn unset_or_empty_kubeconfig_skips_with_a_reason() {
        for value in [None, Some(OsString::new())] {
            let Decision::Skip(reason) = decide(value) else {
                panic!("must skip")
            };
            assert!(reason.contains(KUBECONFIG_VAR), "{reason}");
        }
    }

    #[test]
    fn a_set_kubeconfig_runs_against_it() {
        assert_eq!(
            decide(Some("/tmp/kind.yaml".into())),
            Decision::Run("/tmp/kind.yaml".into())
        );
    }

    #[test]
    fn defaults_without_variables() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.operator_namespace, "tusk-system");
        assert_eq!((s.postgres_version, s.upgrade_from), (17, 16));
        assert_eq!(s.expandable_storage_class, None);
        assert!(!s.keep_namespaces);
        assert_eq!(s.timeout(Duration::from_secs(10)), Duration::from_secs(10));
    }

    #[test]
    fn variables_override_and_bad_values_are_errors() {
        let s = settings(&[
            ("TUSK_E2E_POSTGRES_VERSION", "18"),
            ("TUSK_E2E_UPGRADE_FROM", "15"),
            ("TUSK_E2E_TIMEOUT_SCALE", "2.5"),
            ("TUSK_E2E_EXPANDABLE_STORAGE_CLASS", "csi-hostpath"),
            ("TUSK_E2E_KEEP_NAMESPACES", "1"),
        ])
        .unwrap();
        assert_eq!((s.postgres_version, s.upgrade_from), (18, 15));
        assert_eq!(s.timeout(Duration::from_secs(10)), Duration::from_secs(25));
        assert_eq!(s.expandable_storage_class.as_deref(), Some("csi-hostpath"));
        assert!(s.keep_namespaces);
        for bad in [
            ("TUSK_E2E_POSTGRES_VERSION", "seventeen"),
            ("TUSK_E2E_POSTGRES_VERSION", "9"),
            ("TUSK_E2E_UPGRADE_FROM", "18"),
            ("TUSK_E2E_TIMEOUT_SCALE", "0"),
            ("TUSK_E2E_TIMEOUT_SCALE", "NaN"),
        ] {
            assert!(settings(&[bad]).is_err(), "{bad:?} must be refused");
        }
    }
}
