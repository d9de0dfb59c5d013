//! What the CRI's tests and `scripts/bench pod` (examples/pod_bench.rs, which includes this
//! file) share: a gRPC channel to containerd's CRI over its unix socket, and a pod as the
//! kubelet describes one on a node without CNI (the node's network, its own PID namespace).

use std::path::Path;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

/// A channel to the CRI at `socket`.
pub async fn channel(socket: &Path) -> Result<Channel, String> {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(|e| format!("cannot reach the CRI: {e}"))
}

/// The pod `namespace/name` (uid `uid-NAME`), its containers' logs under `logs` if given.
pub fn pod_config(namespace: &str, name: &str, logs: Option<&Path>) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: namespace.into(),
            attempt: 0,
        }),
        log_directory: logs
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
