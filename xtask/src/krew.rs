//! `cargo xtask krew`: the krew plugin manifest for a release of `kubectl tusk`.
//!
//! ```text
//!   release.yml: build (4 platforms) ──► dist/kubectl-tusk_<os>_<arch>.tar.gz + .sha256
//!                publish ──► cargo xtask krew --version vX.Y.Z --dist dist ──► dist/tusk.yaml
//!                        └─► GitHub release with the archives, checksums and tusk.yaml
//! ```
//!
//! The archive names are [`PLATFORMS`]' (the release workflow builds exactly those); every
//! archive's `.sha256` file (as `sha256sum` writes it) must be present, so a manifest never
//! points at a binary that was not built. `kubectl krew install --manifest=tusk.yaml` (or
//! `--manifest-url` of the release asset) installs it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use serde_json::json;

/// Where the release archives are downloaded from.
const RELEASES: &str = "https://github.com/tusk-operator/tusk/releases/download";
const HOMEPAGE: &str =
    "https://github.com/tusk-operator/tusk/blob/main/docs/operations/kubectl-plugin.md";

/// `(krew os, krew arch)` of every archive the release workflow builds.
pub(crate) const PLATFORMS: [(&str, &str); 4] = [
    ("linux", "amd64"),
    ("linux", "arm64"),
    ("darwin", "amd64"),
    ("darwin", "arm64"),
];

#[derive(Debug, Args)]
pub(crate) struct KrewArgs {
    /// The release tag, `v` and a semantic version (`v0.2.0`).
    #[arg(long)]
    version: String,
    /// The directory with the archives and their `.sha256` files; `tusk.yaml` is written here.
    #[arg(long, default_value = "dist")]
    dist: PathBuf,
}

/// The archive of one platform: `kubectl-tusk_<os>_<arch>.tar.gz`.
pub(crate) fn archive_name(os: &str, arch: &str) -> String {
    format!("kubectl-tusk_{os}_{arch}.tar.gz")
}

pub(crate) fn run(args: &KrewArgs) -> Result<()> {
    let mut checksums = Vec::new();
    for (os, arch) in PLATFORMS {
        let archive = archive_name(os, arch);
        let path = args.dist.join(format!("{archive}.sha256"));
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        checksums
            .push(parse_checksum(&text, &archive).with_context(|| path.display().to_string())?);
    }
    let manifest = manifest(&args.version, &checksums)?;
    let out = args.dist.join("tusk.yaml");
    write(&out, &manifest)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// The hash in a `sha256sum` line (`<64 hex>  <file>`), which must name `archive`.
fn parse_checksum(text: &str, archive: &str) -> Result<String> {
    let mut fields = text.split_whitespace();
    let (Some(hash), Some(file)) = (fields.next(), fields.next()) else {
        bail!("expected `<sha256>  {archive}`, found {text:?}");
    };
    let file = file.trim_start_matches('*');
    ensure!(
        Path::new(file).file_name().and_then(|f| f.to_str()) == Some(archive),
        "the checksum is for {file}, not {archive}"
    );
    ensure!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hash:?} is not a SHA-256 in hex"
    );
    Ok(hash.to_ascii_lowercase())
}

/// The krew `Plugin` manifest (krew.googlecontainertools.github.com/v1alpha2) for `version`,
/// with one platform per entry of [`PLATFORMS`] and its archive's hash in `checksums`.
pub(crate) fn manifest(version: &str, checksums: &[String]) -> Result<String> {
    ensure!(
        version
            .strip_prefix('v')
            .is_some_and(|v| { v.split('.').count() == 3 && v.split('.').all(|p| !p.is_empty()) }),
        "the version must look like v1.2.3 (krew wants a semantic version with a v), not {version:?}"
    );
    ensure!(
        checksums.len() == PLATFORMS.len(),
        "one checksum per platform"
    );
    let platforms: Vec<_> = PLATFORMS
        .iter()
        .zip(checksums)
        .map(|((os, arch), sha256)| {
            json!({
                "selector": {"matchLabels": {"os": os, "arch": arch}},
                "uri": format!("{RELEASES}/{version}/{}", archive_name(os, arch)),
                "sha256": sha256,
                "bin": "kubectl-tusk",
                "files": [
                    {"from": "kubectl-tusk", "to": "."},
                    {"from": "LICENSE", "to": "."},
                ],
            })
        })
        .collect();
    let plugin = json!({
        "apiVersion": "krew.googlecontainertools.github.com/v1alpha2",
        "kind": "Plugin",
        "metadata": {"name": "tusk"},
        "spec": {
            "version": version,
            "homepage": HOMEPAGE,
            "shortDescription": "Status, switchover, restart, backup and support reports for tusk PostgreSQL clusters",
            "description": "kubectl tusk is the command-line companion of the tusk PostgreSQL operator:\n`status` shows a Cluster's health on one screen; `switchover`, `restart`, `backup` and\n`rotate-password` ask the controllers and wait for the outcome; `psql` opens a session on\nthe primary or a replica; `report` writes a support bundle with no Secret value in it.\n",
            "platforms": platforms,
        },
    });
    Ok(serde_yaml_ng::to_string(&plugin)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn the_manifest_points_every_platform_at_its_archive_and_hash() {
        let sums: Vec<String> = (0..4).map(|i| format!("{i}{}", &HASH[1..])).collect();
        let yaml = manifest("v0.2.0", &sums).unwrap();
        let plugin: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(plugin["kind"], "Plugin");
        assert_eq!(plugin["metadata"]["name"], "tusk");
        assert_eq!(plugin["spec"]["version"], "v0.2.0");
        let platforms = plugin["spec"]["platforms"].as_array().unwrap();
        assert_eq!(platforms.len(), 4);
        let darwin_arm = &platforms[3];
        assert_eq!(darwin_arm["selector"]["matchLabels"]["os"], "darwin");
        assert_eq!(darwin_arm["selector"]["matchLabels"]["arch"], "arm64");
        assert_eq!(
            darwin_arm["uri"],
            "https://github.com/tusk-operator/tusk/releases/download/v0.2.0/kubectl-tusk_darwin_arm64.tar.gz"
        );
        assert_eq!(darwin_arm["sha256"], sums[3].as_str());
        assert_eq!(darwin_arm["bin"], "kubectl-tusk");
    }

    #[test]
    fn a_version_krew_refuses_is_refused_here() {
        let sums = vec![HASH.to_owned(); 4];
        assert!(manifest("0.2.0", &sums).is_err());
        assert!(manifest("v0.2", &sums).is_err());
        assert!(manifest("v0.2.0", &sums[..3]).is_err());
    }

    #[test]
    fn checksum_files_are_read_as_sha256sum_writes_them() {
        let archive = archive_name("linux", "amd64");
        assert_eq!(
            parse_checksum(&format!("{HASH}  {archive}\n"), &archive).unwrap(),
            HASH
        );
        assert_eq!(
            parse_checksum(&format!("{HASH} *dist/{archive}\n"), &archive).unwrap(),
            HASH,
            "binary mode and a directory, as shasum -a 256 may write"
        );
        assert!(parse_checksum(&format!("{HASH}  other.tar.gz"), &archive).is_err());
        assert!(parse_checksum(&format!("abc  {archive}"), &archive).is_err());
        assert!(parse_checksum("", &archive).is_err());
    }

    /// The release workflow builds and names exactly the archives the manifest points at.
    #[test]
    fn the_release_workflow_builds_every_platform_of_the_manifest() {
        let workflow =
            fs::read_to_string(crate::workspace_root().join(".github/workflows/release.yml"))
                .unwrap();
        for (os, arch) in PLATFORMS {
            let line = format!("platform: {os}_{arch}");
            assert!(workflow.contains(&line), "release.yml has no `{line}`");
        }
        assert!(workflow.contains("kubectl-tusk_${{ matrix.platform }}.tar.gz"));
        assert!(workflow.contains("cargo xtask krew --version"));
    }
}
