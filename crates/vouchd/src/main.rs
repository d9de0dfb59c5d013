//! vouchd: the in-TEE daemon. Argument parsing and wiring only; the logic is in vouch-daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vouch_daemon::server;
use vouch_launch::{DaemonConfig, Engine};
use vouch_runtime::monitor::{self, MonitorArgs};

#[derive(Parser)]
#[command(
    name = "vouchd",
    version,
    about = "The vouch daemon: runs OCI containers measured into a TEE register and proves what ran",
    long_about = "vouchd runs inside the confidential VM (or on a TPM-backed machine) as the one privileged \
process. It verifies images, measures every launch into a register with a replayable event log, runs \
containers, and serves a REST API on a unix socket (mode 0600)."
)]
struct Args {
    /// Directory for all state: database, images, containers, event log, TEE state.
    #[arg(long, env = "VOUCH_STATE_DIR", default_value = "/var/lib/vouch")]
    state_dir: PathBuf,
    /// Unix socket to serve the API on.
    #[arg(long, env = "VOUCH_SOCKET", default_value = vouch_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// TEE backend: auto detects hardware and falls back to sim (software, NOT hardware-backed).
    #[arg(long, default_value = "auto", value_parser = vouch_tee::TeeChoice::NAMES)]
    tee: String,
    /// TPM backend: how to reach the TPM (a TCTI such as device:/dev/tpmrm0 or
    /// swtpm:host=127.0.0.1,port=2321); default: the kernel's resource manager.
    #[arg(long, env = "VOUCH_TPM_TCTI", value_name = "TCTI")]
    tpm_tcti: Option<String>,
    /// TPM backend: the application PCR vouch extends (16-23).
    #[arg(long, default_value_t = vouch_tee::tpm::DEFAULT_PCR, value_name = "N")]
    tpm_pcr: u8,
    /// TPM backend: the attestation key's certificate (PEM: the AK certificate first, then any
    /// intermediate CAs; or one DER certificate), carried in evidence so verifiers can trust the
    /// AK through its CA (vouch verify --tpm-ak-ca) instead of pinning it.
    #[arg(long, value_name = "FILE", conflicts_with = "tpm_ak_cert_nv")]
    tpm_ak_cert: Option<PathBuf>,
    /// TPM backend: read the attestation key's certificate (DER) from this NV index of the TPM,
    /// where the cloud provider keeps it (e.g. 0x01C101D0 on Azure confidential VMs).
    #[arg(long, value_name = "INDEX", value_parser = parse_nv_index)]
    tpm_ak_cert_nv: Option<u32>,
    /// cgroup parent of all containers.
    #[arg(long, default_value = "/vouch")]
    cgroup_parent: String,
    /// Host address of published ports that name none (`-p 8080:80`, Conker's Ports). The
    /// default publishes on loopback only; give 0.0.0.0 (or an address) to reach containers
    /// from other machines, or name the address per port (`-p 0.0.0.0:8080:80`).
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    publish_address: std::net::IpAddr,
    /// Image policy in containers' policy.json format (default reject or accept, per-registry
    /// and per-repository sigstoreSigned keys); enforced before an image is unpacked.
    #[arg(long, value_name = "FILE")]
    image_policy: Option<std::path::PathBuf>,
    /// Seconds a registry may stay silent (connecting, or between reads) before a pull fails.
    #[arg(long, default_value_t = 30, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    registry_timeout: u64,
    /// Trust golden-value documents signed with this public key (PEM; repeatable). Launches of
    /// images that carry one must match it.
    #[arg(long, value_name = "PUB")]
    golden_key: Vec<std::path::PathBuf>,
    /// Refuse to launch an image that has no golden value.
    #[arg(long)]
    require_golden: bool,
    /// registries.d directory (containers' format): the lookaside store of each registry's
    /// OpenPGP signatures, for signedBy policy requirements.
    #[arg(
        long,
        default_value = "/etc/containers/registries.d",
        value_name = "DIR"
    )]
    registries_d: std::path::PathBuf,
    /// A registry (host[:port]) always reached over plain HTTP, as if every pull from it said
    /// --insecure-registry. Repeatable.
    #[arg(long, value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// Trust this CA (PEM) for the certificates of kbss:// KBSs, instead of the system's roots.
    /// Repeatable.
    #[arg(long, value_name = "FILE")]
    kbs_ca: Vec<PathBuf>,
    /// Seconds one secret's whole exchange with its KBS (auth, attest, resource) may take;
    /// a KBS that answers slowly or a byte at a time fails the launch after it.
    #[arg(long, default_value_t = 30, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=600))]
    kbs_timeout: u64,
    /// Which evidence KBSs are given: `vouch` (a vouch-kbs; it names the requesting container),
    /// `coco` (a Confidential Containers KBS such as Trustee: CoCo's evidence, which binds the
    /// TEE but names no container), or `auto` (a vouch-kbs says so in its challenge; any other
    /// KBS is given CoCo's evidence).
    #[arg(long, default_value = "auto", value_name = "auto|vouch|coco")]
    kbs_flavour: vouch_kbs_client::FlavourChoice,
    /// Whether processes may be exec'd into running containers (`vouch exec`, containerd's
    /// Exec, `kubectl exec`): each is measured as a container.exec record; `deny` refuses them
    /// all (an image can refuse them for its own containers with the label io.vouch.exec=deny).
    #[arg(long = "exec", value_name = "allow|deny", default_value = "allow", value_parser = ["allow", "deny"])]
    exec_policy: String,
    /// Log filter, e.g. info or debug.
    #[arg(long, env = "VOUCH_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Subcommand)]
enum Sub {
    /// Internal: the per-container monitor process started by vouchd.
    #[command(hide = true)]
    Monitor {
        #[arg(long)]
        id: String,
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long)]
        runtime_root: PathBuf,
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        exit_file: PathBuf,
        #[arg(long)]
        cgroup_path: String,
        #[arg(long)]
        private_net: bool,
        /// The network namespace (DEV:INO) vouchd checked, for a container that joins one.
        #[arg(long)]
        netns: Option<String>,
        #[arg(long)]
        publish: Vec<String>,
        #[arg(long)]
        tty: bool,
        #[arg(long)]
        stdin: bool,
        #[arg(long)]
        attach: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        cols: u16,
        #[arg(long, default_value_t = 0)]
        rows: u16,
    },
    /// Internal: the monitor of a process exec'd into a running container.
    #[command(hide = true)]
    ExecMonitor {
        #[arg(long)]
        container_id: String,
        #[arg(long)]
        runtime_root: PathBuf,
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long)]
        process: PathBuf,
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        exit_file: PathBuf,
        #[arg(long)]
        attach: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    let args = Args::parse();
    if let Some(Sub::ExecMonitor {
        container_id,
        runtime_root,
        bundle,
        process,
        log,
        exit_file,
        attach,
    }) = args.command
    {
        // Single-threaded from here on: libcontainer forks.
        let code = vouch_runtime::exec::run(&vouch_runtime::exec::ExecArgs {
            attach,
            container_id,
            runtime_root,
            bundle,
            process,
            log_path: log,
            exit_path: exit_file,
        });
        return ExitCode::from(code as u8);
    }
    if let Some(Sub::Monitor {
        id,
        bundle,
        runtime_root,
        log,
        exit_file,
        cgroup_path,
        private_net,
        netns,
        publish,
        tty,
        stdin,
        attach,
        cols,
        rows,
    }) = args.command
    {
        let joined_network = match netns.as_deref().map(|n| {
            n.split_once(':')
                .and_then(|(d, i)| Some((d.parse().ok()?, i.parse().ok()?)))
                .ok_or_else(|| format!("invalid --netns {n:?}: DEV:INO"))
        }) {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(e)) => {
                eprintln!("vouchd monitor: {e}");
                return ExitCode::FAILURE;
            }
        };
        let any = std::net::IpAddr::from([0u8, 0, 0, 0]);
        let publish = match publish
            .iter()
            .map(|p| vouch_runtime::net::PortMapping::parse(p, any))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("vouchd monitor: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Single-threaded from here on: libcontainer forks.
        let code = monitor::run(&MonitorArgs {
            id,
            bundle,
            runtime_root,
            log_path: log,
            exit_path: exit_file,
            cgroup_path,
            private_net,
            joined_network,
            publish,
            terminal: tty,
            stdin,
            attach,
            size: (cols, rows),
        });
        return ExitCode::from(code as u8);
    }
    // No core dumps and no ptrace by other users: secrets pass through this process's memory.
    // SAFETY: prctl(PR_SET_DUMPABLE) takes integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let filter = format!("{},libcgroups=error,libcontainer=warn", args.log_level);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vouchd: error: {}", chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    vouch_base::error_chain(e)
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if nix::unistd::geteuid().as_raw() != 0 {
        return Err(
            "vouchd must run as root: it mounts filesystems, creates namespaces and cgroups".into(),
        );
    }
    // Monitors (and so every container's first process) start from a sealed copy of this
    // executable, never from the host's file: a container cannot reach vouchd's inode.
    let exe = vouch_runtime::sealed::current_exe()
        .map_err(|e| {
            format!("cannot make the sealed copy of vouchd that monitors start from: {e}")
        })?
        .path();
    let cfg = DaemonConfig {
        state_dir: args.state_dir.clone(),
        socket: args.socket.clone(),
        exe,
        cgroup_parent: args.cgroup_parent,
        publish_address: args.publish_address,
        image_policy: args.image_policy.clone(),
        registry_timeout: std::time::Duration::from_secs(args.registry_timeout),
        golden_keys: args.golden_key.clone(),
        require_golden: args.require_golden,
        registries_d: args.registries_d.clone(),
        insecure_registries: args.insecure_registry.clone(),
        kbs_cas: args.kbs_ca.clone(),
        kbs_timeout: std::time::Duration::from_secs(args.kbs_timeout),
        kbs_flavour: args.kbs_flavour,
        exec_denied: args.exec_policy == "deny",
    };
    let mut tee = vouch_tee::TeeOptions {
        sim_dir: cfg.tee_dir().join("sim"),
        tpm_tcti: args.tpm_tcti.clone(),
        tpm_pcr: args.tpm_pcr,
        tpm_ak_certs: Vec::new(),
        tpm_ak_cert_nv: args.tpm_ak_cert_nv,
    };
    if let Some(path) = &args.tpm_ak_cert {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        tee.tpm_ak_certs = vouch_tee::tpm::akcert::parse_certs(&bytes)
            .map_err(|e| format!("--tpm-ak-cert {}: {e}", path.display()))?;
    }
    let choice: vouch_tee::TeeChoice = args.tee.parse()?;
    let selected = vouch_tee::select(choice, &tee).map_err(|e| {
        use vouch_tee::SelectError::*;
        let hint = match e {
            NoTpm => " (--tpm-tcti)",
            SnpHasNoRegisters => " (--tee tpm, --tpm-ak-cert)",
            NotInThisBuild(_) => " (use --tee sim)",
            _ => "",
        };
        format!("--tee {choice}: {e}{hint}")
    })?;
    for note in &selected.notes {
        match note {
            vouch_tee::select::Note::Info(m) => tracing::info!("{m}"),
            vouch_tee::select::Note::Warn(m) => tracing::warn!("{m}"),
        }
    }
    let attester = selected.attester;
    if cfg.publish_address.is_loopback() {
        tracing::info!(address = %cfg.publish_address, "published ports without an address listen on loopback only (--publish-address 0.0.0.0 to publish beyond this machine)");
    } else {
        tracing::info!(address = %cfg.publish_address, "published ports without an address listen on this address");
    }
    let engine = Engine::open(cfg.clone(), attester)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = server::bind(&cfg.socket)?;
        tracing::info!(socket = %cfg.socket.display(), state = %cfg.state_dir.display(), "vouchd ready");
        server::serve(listener, engine).await?;
        let _ = std::fs::remove_file(&cfg.socket);
        tracing::info!("vouchd stopped; containers keep running and are picked up at the next start");
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

/// `0x01C101D0` or a decimal number.
fn parse_nv_index(s: &str) -> Result<u32, String> {
    let n = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|_| format!("{s:?} is not an NV index (e.g. 0x01C101D0)"))?;
    if n >> 24 != 0x01 {
        return Err(format!("{s} is not an NV index handle (0x01xxxxxx)"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published ports that name no address listen on loopback unless told otherwise.
    #[test]
    fn ports_are_published_on_loopback_by_default() {
        let args = Args::parse_from(["vouchd"]);
        assert_eq!(
            args.publish_address,
            std::net::IpAddr::from([127u8, 0, 0, 1])
        );
    }

    #[test]
    fn nv_indices() {
        assert_eq!(parse_nv_index("0x01C101D0"), Ok(0x01C1_01D0));
        assert_eq!(parse_nv_index("29426128"), Ok(0x01C1_01D0));
        assert!(parse_nv_index("0x81010023").is_err(), "a persistent handle");
        assert!(parse_nv_index("nv").is_err());
    }
}
