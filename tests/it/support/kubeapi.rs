//! The test Kubernetes API server (`crate::apiserver`) as the source of a cluster: the real
//! binary watching it through an ordinary kubeconfig, and a kube-rs client talking to it.

use crate::apiserver::ApiServer;

use super::{Server, config_with_source};

impl Server {
    /// The real binary watching `api` (kubeconfig in the server's own folder, 1 s startup
    /// timeout), with [`super::base_config`]'s listeners plus `extra`.
    pub(crate) fn start_kube(api: &ApiServer, extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path());
        let source = format!(
            "source:\n  kubernetes:\n    kubeconfig: {}\n    startup_timeout: 1s\n",
            kubeconfig.display()
        );
        Server::start_in(dir, &config_with_source(&source, extra), &[])
    }
}

/// A kube-rs client for `api`, configured from the kubeconfig the server writes.
pub(crate) async fn kube_client(api: &ApiServer) -> kube::Client {
    let dir = tempfile::tempdir().unwrap();
    let kc = kube::config::Kubeconfig::read_from(api.write_kubeconfig(dir.path())).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}
