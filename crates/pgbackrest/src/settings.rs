//! The pgBackRest configuration model: options in a `[global]` and a stanza section, each a
//! literal (rendered into the configuration file, which lives in a ConfigMap), a secret
//! (passed as a `PGBACKREST_*` environment variable from a Secret key) or a secret file (a
//! Secret key mounted as a file; the option holds its path).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, KeyToPath, SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
};

use crate::STANZA;

/// The value of one pgBackRest option.
#[derive(Clone, Debug, PartialEq)]
pub enum OptionValue {
    /// A value written into the configuration file.
    Literal(String),
    /// A secret value (a passphrase, an access key): never in the configuration file, passed
    /// as the environment variable `PGBACKREST_<OPTION>` from this Secret key.
    Secret(SecretKeySelector),
    /// A file that comes from a Secret (a service-account key, a CA bundle): the option is the
    /// file's path, and the pod mounts the Secret key there (see [`Settings::volumes`]).
    SecretFile(SecretFile),
}

impl OptionValue {
    /// A literal value.
    pub fn literal(value: impl Into<String>) -> Self {
        OptionValue::Literal(value.into())
    }

    /// The literal value, or the mounted file's path; `None` for a secret.
    pub fn rendered(&self) -> Option<&str> {
        match self {
            OptionValue::Literal(value) => Some(value),
            OptionValue::SecretFile(file) => Some(&file.path),
            OptionValue::Secret(_) => None,
        }
    }
}

/// A Secret key mounted as a file at `path`.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretFile {
    /// The Secret and key.
    pub secret: SecretKeySelector,
    /// Absolute path of the file in the container.
    pub path: String,
}

/// pgBackRest settings for one kind of process (instance, repository host, backup Job).
///
/// Rendering is deterministic: sections in the order `[global]`, `[<stanza>]`, options sorted
/// by name, so an unchanged Cluster renders a byte-identical ConfigMap (and no API write).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    /// Options of the `[global]` section: repositories, compression, logging, TLS server.
    pub global: BTreeMap<String, OptionValue>,
    /// Options of the stanza section ([`STANZA`]): the PostgreSQL host (`pg1-*`).
    pub stanza: BTreeMap<String, OptionValue>,
}

impl Settings {
    /// Sets a global option.
    pub fn set_global(&mut self, option: impl Into<String>, value: OptionValue) {
        self.global.insert(option.into(), value);
    }

    /// Sets a stanza option.
    pub fn set_stanza(&mut self, option: impl Into<String>, value: OptionValue) {
        self.stanza.insert(option.into(), value);
    }

    /// The value of `option` in either section (stanza first, as pgBackRest reads it).
    pub fn get(&self, option: &str) -> Option<&OptionValue> {
        self.stanza.get(option).or_else(|| self.global.get(option))
    }

    /// The rendered value of `option` (literal or secret-file path), if it is set and not a
    /// secret.
    pub fn value(&self, option: &str) -> Option<&str> {
        self.get(option).and_then(OptionValue::rendered)
    }

    /// The configuration file (`pgbackrest.conf`): literal options and secret-file paths only.
    /// Secret options are left out — they reach pgBackRest through [`Settings::env`].
    pub fn to_ini(&self) -> String {
        let mut ini = String::new();
        for (section, options) in [("global", &self.global), (STANZA, &self.stanza)] {
            let lines: Vec<String> = options
                .iter()
                .filter_map(|(option, value)| {
                    value.rendered().map(|value| format!("{option}={value}\n"))
                })
                .collect();
            if lines.is_empty() {
                continue;
            }
            if !ini.is_empty() {
                ini.push('\n');
            }
            ini.push_str(&format!("[{section}]\n"));
            ini.extend(lines);
        }
        ini
    }

    /// Environment variables for the secret options: `PGBACKREST_<OPTION>` (upper case, `-`
    /// becomes `_`) from a `secretKeyRef`, sorted by name.
    pub fn env(&self) -> Vec<EnvVar> {
        self.secret_options()
            .map(|(option, secret)| EnvVar {
                name: env_var_name(option),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(secret.clone()),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            })
            .collect()
    }

    /// The secret options, by option name.
    pub fn secret_options(&self) -> impl Iterator<Item = (&str, &SecretKeySelector)> {
        let mut secrets: Vec<(&str, &SecretKeySelector)> = self
            .global
            .iter()
            .chain(self.stanza.iter())
            .filter_map(|(option, value)| match value {
                OptionValue::Secret(secret) => Some((option.as_str(), secret)),
                _ => None,
            })
            .collect();
        secrets.sort_by_key(|(option, _)| *option);
        secrets.into_iter()
    }

    /// The files the pod must mount from Secrets, by option name.
    pub fn secret_files(&self) -> Vec<(&str, &SecretFile)> {
        let mut files: Vec<(&str, &SecretFile)> = self
            .global
            .iter()
            .chain(self.stanza.iter())
            .filter_map(|(option, value)| match value {
                OptionValue::SecretFile(file) => Some((option.as_str(), file)),
                _ => None,
            })
            .collect();
        files.sort_by_key(|(option, _)| *option);
        files
    }

    /// One Secret volume per secret file, named `pgbackrest-<option>` (for example
    /// `pgbackrest-repo1-gcs-key`), holding only that key, readable by owner and group.
    pub fn volumes(&self) -> Vec<Volume> {
        self.secret_files()
            .into_iter()
            .map(|(option, file)| Volume {
                name: volume_name(option),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(file.secret.name.clone()),
                    items: Some(vec![KeyToPath {
                        key: file.secret.key.clone(),
                        path: file_name(&file.path).to_owned(),
                        mode: None,
                    }]),
                    default_mode: Some(0o440),
                    optional: None,
                }),
                ..Volume::default()
            })
            .collect()
    }

    /// Read-only mounts of [`Settings::volumes`], each at the directory of its file.
    pub fn volume_mounts(&self) -> Vec<VolumeMount> {
        self.secret_files()
            .into_iter()
            .map(|(option, file)| VolumeMount {
                name: volume_name(option),
                mount_path: parent_dir(&file.path).to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            })
            .collect()
    }
}

/// The environment variable pgBackRest reads `option` from: `repo1-cipher-pass` →
/// `PGBACKREST_REPO1_CIPHER_PASS`.
pub fn env_var_name(option: &str) -> String {
    format!(
        "PGBACKREST_{}",
        option.to_ascii_uppercase().replace('-', "_")
    )
}

fn volume_name(option: &str) -> String {
    format!("pgbackrest-{option}")
}

fn file_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}

fn parent_dir(path: &str) -> &str {
    path.rsplit_once('/')
        .map_or("/", |(dir, _)| if dir.is_empty() { "/" } else { dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(name: &str, key: &str) -> SecretKeySelector {
        SecretKeySelector {
            name: name.to_owned(),
            key: key.to_owned(),
            optional: None,
        }
    }

    fn sample() -> Settings {
        let mut settings = Settings::default();
        settings.set_global("repo1-path", OptionValue::literal("/repo"));
        settings.set_global("compress-type", OptionValue::literal("zst"));
        settings.set_global(
            "repo1-cipher-pass",
            OptionValue::Secret(selector("pass", "passphrase")),
        );
        settings.set_global(
            "repo1-gcs-key",
            OptionValue::SecretFile(SecretFile {
                secret: selector("gcs", "key.json"),
                path: "/etc/pgbackrest/secrets/repo1-gcs-key/key.json".to_owned(),
            }),
        );
        settings.set_stanza("pg1-path", OptionValue::literal("/pgdata/pg17"));
        settings
    }

    #[test]
    fn ini_has_sorted_literals_and_file_paths_but_no_secrets() {
        let ini = sample().to_ini();
        assert_eq!(
            ini,
            "[global]\ncompress-type=zst\nrepo1-gcs-key=/etc/pgbackrest/secrets/repo1-gcs-key/key.json\nrepo1-path=/repo\n\n[db]\npg1-path=/pgdata/pg17\n"
        );
        assert!(!ini.contains("passphrase") && !ini.contains("cipher-pass"));
    }

    #[test]
    fn secrets_become_pgbackrest_environment_variables() {
        let env = sample().env();
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].name, "PGBACKREST_REPO1_CIPHER_PASS");
        assert_eq!(env[0].value, None);
        let source = env[0].value_from.as_ref().unwrap();
        assert_eq!(source.secret_key_ref, Some(selector("pass", "passphrase")));
    }

    #[test]
    fn secret_files_are_mounted_by_key_at_their_directory() {
        let settings = sample();
        let volumes = settings.volumes();
        assert_eq!(volumes.len(), 1);
        assert_eq!(volumes[0].name, "pgbackrest-repo1-gcs-key");
        let secret = volumes[0].secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("gcs"));
        let items = secret.items.as_ref().unwrap();
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            ("key.json", "key.json")
        );
        let mounts = settings.volume_mounts();
        assert_eq!(
            mounts[0].mount_path,
            "/etc/pgbackrest/secrets/repo1-gcs-key"
        );
        assert_eq!(mounts[0].read_only, Some(true));
    }

    #[test]
    fn empty_sections_are_left_out() {
        let mut settings = Settings::default();
        settings.set_stanza("pg1-path", OptionValue::literal("/d"));
        assert_eq!(settings.to_ini(), "[db]\npg1-path=/d\n");
        assert_eq!(Settings::default().to_ini(), "");
    }
}
