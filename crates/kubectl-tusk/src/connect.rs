//! The client and namespace, chosen the way kubectl chooses them: `--kubeconfig`, else
//! `$KUBECONFIG`, else `~/.kube/config`, else the in-cluster service account; `--context` picks
//! a context; `-n` the namespace, else the context's, else `default`.

use std::path::Path;

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Where the commands run.
#[derive(Clone)]
pub struct Target {
    pub client: kube::Client,
    pub namespace: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Builds the client from the kubectl-style flags.
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    namespace: Option<&str>,
) -> anyhow::Result<Target> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        (None, Some(name)) => kube::Config::from_kubeconfig(&options)
            .await
            .with_context(|| format!("kubeconfig context {name:?}"))?,
        (None, None) => kube::Config::infer()
            .await
            .context("no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not in a cluster")?,
    };
    let namespace = namespace
        .map(str::to_owned)
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("cannot build a Kubernetes client")?;
    Ok(Target { client, namespace })
}
