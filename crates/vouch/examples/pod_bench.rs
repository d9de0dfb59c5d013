//! `scripts/bench pod`: a pod sandbox and its container started through containerd's CRI, the
//! kubelet's calls (RunPodSandbox, CreateContainer, StartContainer), timed until StartContainer
//! answers, for each runtime handler in turn (interleaved, so both see the same machine state).
//! The pods are stopped and removed outside the timing.
//!
//! Usage: pod_bench CRI_SOCKET IMAGE RUNS WARMUP HANDLER...

use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

#[path = "../tests/e2e/cri_client.rs"]
mod cri_client;

type Rs = RuntimeServiceClient<Channel>;

async fn pod(rs: &mut Rs, handler: &str, image: &str, n: usize) -> Result<Duration, String> {
    let config = cri_client::pod_config("bench", &format!("bench-{handler}-{n}"), None);
    let t0 = Instant::now();
    let sandbox = rs
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .map_err(|e| format!("RunPodSandbox ({handler}): {}", e.message()))?
        .into_inner()
        .pod_sandbox_id;
    let container = rs
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                command: vec!["/bin/sleep".into(), "60".into()],
                ..Default::default()
            }),
            sandbox_config: Some(config),
        })
        .await
        .map_err(|e| format!("CreateContainer ({handler}): {}", e.message()))?
        .into_inner()
        .container_id;
    rs.start_container(StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .map_err(|e| format!("StartContainer ({handler}): {}", e.message()))?;
    let took = t0.elapsed();
    let _ = rs
        .stop_container(StopContainerRequest {
            container_id: container.clone(),
            timeout: 0,
        })
        .await;
    let _ = rs
        .remove_container(RemoveContainerRequest {
            container_id: container,
        })
        .await;
    let _ = rs
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await;
    let _ = rs
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: sandbox,
        })
        .await;
    Ok(took)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        return Err("usage: pod_bench CRI_SOCKET IMAGE RUNS WARMUP HANDLER...".into());
    }
    let image = &args[2];
    let runs: usize = args[3].parse().map_err(|_| "RUNS must be a number")?;
    let warmup: usize = args[4].parse().map_err(|_| "WARMUP must be a number")?;
    let handlers = &args[5..];
    let channel = cri_client::channel(std::path::Path::new(&args[1])).await?;
    let mut rs = RuntimeServiceClient::new(channel);
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); handlers.len()];
    for n in 0..warmup + runs {
        for (i, h) in handlers.iter().enumerate() {
            let t = pod(&mut rs, h, image, n).await?;
            if n >= warmup {
                times[i].push(t);
            }
        }
    }
    println!("| runtime handler | median [ms] | p90 [ms] | min [ms] | mean [ms] |");
    println!("|:---|---:|---:|---:|---:|");
    for (h, t) in handlers.iter().zip(times.iter_mut()) {
        t.sort();
        let mean = t.iter().map(|d| ms(*d)).sum::<f64>() / t.len() as f64;
        println!(
            "| `{h}` | {:.1} | {:.1} | {:.1} | {:.1} |",
            ms(t[t.len() / 2]),
            ms(t[(t.len() * 9 / 10).min(t.len() - 1)]),
            ms(t[0]),
            mean
        );
    }
    Ok(())
}
