//! vouch-kbs-bench: a load generator for a KBS. Complete auth + attest + resource round trips
//! with sim evidence (vouch's, or Confidential Containers' sample evidence) from concurrent
//! clients; prints round trips per second and latency percentiles. Kept out of the production
//! `vouch-kbs` binary.

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use serde_json::json;
use vouch_kbs_client::{FlavourChoice, KbsClient, KbsClientError, KbsFlavour};

#[derive(Parser)]
#[command(
    name = "vouch-kbs-bench",
    version,
    about = "Load generator for a KBS: complete auth + attest + resource round trips with sim evidence (vouch's, or Confidential Containers' sample evidence) from concurrent clients; prints round trips per second and latency percentiles"
)]
struct Args {
    /// The KBS address: HOST:PORT, or https://HOST:PORT for a KBS serving TLS.
    #[arg(long, default_value = "127.0.0.1:8080")]
    kbs: String,
    /// Trust this CA (PEM) for the KBS's TLS certificate (implies TLS). Repeatable.
    #[arg(long, value_name = "FILE")]
    kbs_ca: Vec<PathBuf>,
    /// REPO/TYPE/TAG to fetch (must exist and be released to sim evidence).
    #[arg(long, default_value = "default/key/app")]
    resource: String,
    /// Round trips in flight at once, each its own sim TEE and connection.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Threads driving the clients (default: two per core, at most one per client). A
    /// thread writes the next request of each of its clients before it waits for any
    /// answer, as wrk does with its connections.
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds to run (at most an hour).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Whose evidence the clients present: `vouch` (vouch's signed sim evidence) or `coco`
    /// (Confidential Containers' sample evidence, bound as CoCo binds it; the KBS must run with
    /// --allow-sample).
    #[arg(long, default_value = "vouch", value_name = "vouch|coco")]
    evidence: Flavour,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Flavour {
    Vouch,
    Coco,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let result = vouch_cli_common::kbs_client(&a.kbs, &a.kbs_ca).and_then(|kbs| {
        bench(
            &kbs,
            &a.resource,
            a.evidence,
            a.clients,
            a.threads,
            Duration::from_secs(a.duration),
            a.json,
        )
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vouch-kbs-bench: {}", vouch_cli_common::error_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn bench(
    kbs: &KbsClient,
    resource: &str,
    evidence: Flavour,
    clients: usize,
    threads: Option<usize>,
    duration: Duration,
    json_out: bool,
) -> Result<()> {
    use std::time::Instant;
    let path = vouch_cli_common::resource_path(resource)?;
    let clients = clients.max(1);
    let threads = threads
        .unwrap_or_else(|| 2 * std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, clients);
    let deadline = Instant::now() + duration;
    let kbs = &kbs.clone().with_flavour(match evidence {
        Flavour::Vouch => FlavourChoice::Vouch,
        Flavour::Coco => FlavourChoice::Coco,
    });
    let mut handles = Vec::new();
    for t in 0..threads {
        // Clients t, t + threads, ... belong to thread t.
        let mine = (t..clients).step_by(threads).count();
        let kbs = kbs.clone();
        let path = path.clone();
        handles.push(std::thread::spawn(move || -> Result<(Vec<u32>, u64)> {
            // Each client is its own sim TEE with a short measured log.
            let dir = tempfile_dir()?;
            let mut group = Vec::new();
            for i in 0..mine {
                let sim = Arc::new(vouch_tee::sim::SimAttester::open(&dir.join(format!("sim{i}")))?);
                let (mut journal, _) = vouch_tee::Journal::open(&dir.join(format!("log{i}")), sim, vouch_tee::VOUCH_REGISTER)?;
                journal.append("container.create", json!({"id": "bench", "image_digest": "sha256:bench", "config_digest": "sha384:bench"}))?;
                // Each client its own connection (clones would share the idle one).
                group.push((kbs.fresh(), journal));
            }
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut fail = |e: KbsClientError| {
                errors += 1;
                if errors == 1 {
                    eprintln!("vouch-kbs-bench: {e}");
                }
            };
            while Instant::now() < deadline {
                // Each step for every client of the group, then the next step.
                let started: Vec<_> = group
                    .iter()
                    .filter_map(|(c, j)| match c.start(kbs_types::Tee::Sample) {
                        Ok(a) => Some((Instant::now(), a, j)),
                        Err(e) => { fail(e); None }
                    })
                    .collect();
                let challenged: Vec<_> = started
                    .into_iter()
                    .filter_map(|(t, a, j)| match a.challenge() {
                        Ok(c) => Some((t, c, j)),
                        Err(e) => { fail(e); None }
                    })
                    .collect();
                let attested: Vec<_> = challenged
                    .into_iter()
                    .filter_map(|(t, c, j)| {
                        let b = c.binding();
                        let ev = match b.flavour {
                            KbsFlavour::Vouch => j
                                .evidence(b.runtime_data.clone())
                                .map_err(|e| e.to_string())
                                .and_then(|e| serde_json::to_value(e).map_err(|e| e.to_string())),
                            KbsFlavour::Coco => {
                                j.coco_evidence(&b.runtime_data).map_err(|e| e.to_string())
                            }
                        };
                        match ev.map_err(KbsClientError::Evidence).and_then(|ev| c.attest(ev, &path)) {
                            Ok(a) => Some((t, a)),
                            Err(e) => { fail(e); None }
                        }
                    })
                    .collect();
                for (t, a) in attested {
                    match a.finish() {
                        Ok(_) => latencies.push(t.elapsed().as_micros() as u32),
                        Err(e) => fail(e),
                    }
                }
            }
            let _ = fs::remove_dir_all(&dir);
            Ok((latencies, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a bench client panicked"))??;
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let rate = all.len() as f64 / duration.as_secs_f64();
    if json_out {
        println!(
            "{}",
            json!({"clients": clients, "round_trips": all.len(), "errors": errors, "per_second": rate, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0)})
        );
    } else {
        println!(
            "clients {clients}: {} round trips in {:?}, {errors} errors",
            all.len(),
            duration
        );
        println!(
            "{rate:.0} round trips/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(0.50),
            pct(0.99),
            pct(1.0)
        );
    }
    if errors > 0 {
        bail!("{errors} round trips failed");
    }
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let mut r = [0u8; 8];
    getrandom::fill(&mut r)?;
    let dir = std::env::temp_dir().join(format!("vouch-kbs-bench-{}", hex::encode(r)));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}
