//! vouch: the command-line client of vouchd, and the offline evidence verifier.

// Every line vouch prints goes through `text::output`: whatever came from outside (image names
// and commands, evidence, what a KBS or a registry answered) is shown, never obeyed by the
// terminal. Values are escaped field by field as well (`text::field`), so that none can add a
// line. Container output (`vouch logs`, `vouch run`) is written as it is, as docker does.
macro_rules! println {
    () => { ::std::println!() };
    ($($arg:tt)*) => { ::std::println!("{}", vouch::text::output(&format!($($arg)*))) };
}
macro_rules! print {
    ($($arg:tt)*) => { ::std::print!("{}", vouch::text::output(&format!($($arg)*))) };
}
macro_rules! eprintln {
    () => { ::std::eprintln!() };
    ($($arg:tt)*) => { ::std::eprintln!("{}", vouch::text::output(&format!($($arg)*))) };
}

mod format;

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Parser, Subcommand};
use vouch_api::{
    AttestRequest, Client, Container, CreateContainer, EventMessage, ImageSummary, Info, LoadImage,
    TaskState, WaitResponse,
};
use vouch_runtime::logframe::{FrameDecoder, STDERR};
use vouch_tee::{verify_evidence, Evidence, VerifyOptions};

/// Exit status for errors of vouch itself (as docker uses 125).
const EXIT_VOUCH_ERROR: u8 = 125;

#[derive(Parser)]
#[command(
    name = "vouch",
    version,
    about = "Run containers in a confidential VM and prove exactly what runs",
    after_help = "Start the daemon with `vouchd`, then e.g.:\n  vouch image load -i busybox-oci.tar --name busybox\n  vouch run --rm busybox echo hello\n  vouch attest -o evidence.json\n  vouch verify evidence.json --allow-sim"
)]
struct Cli {
    /// vouchd's API socket.
    #[arg(long, global = true, env = vouch_api::SOCKET_ENV, default_value = vouch_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run a command in a new container (measured before it starts).
    Run(RunArgs),
    /// List containers.
    Ps {
        /// Show all containers (default shows running ones).
        #[arg(short, long)]
        all: bool,
        /// Only print container ids.
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print a container's output.
    Logs {
        /// Keep following the output until the container ends.
        #[arg(short, long)]
        follow: bool,
        container: String,
    },
    /// Stop containers: SIGTERM, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before SIGKILL (at most an hour).
        #[arg(short, long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=vouch_api::MAX_STOP_TIMEOUT))]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill running containers first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Wait for containers to end and print their exit codes (as `docker wait`).
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show containers in detail, with their events (JSON).
    Inspect {
        #[arg(required = true)]
        containers: Vec<String>,
        /// Show the measured projection of each container's runtime spec and its digest (the
        /// `config_digest` its `container.create` record holds) instead.
        #[arg(long)]
        spec: bool,
    },
    /// Show lifecycle events of all containers.
    Events {
        /// Keep streaming new events.
        #[arg(short, long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Pull an image from a registry (same as `vouch image pull`).
    Pull(PullArgs),
    /// Get evidence (quote + event log) for the current state, bound to a nonce.
    Attest {
        /// Hex nonce from the verifier; a random one is made (and printed) if omitted.
        #[arg(long)]
        nonce: Option<String>,
        /// Write the evidence here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// json: vouch's evidence (quote, event log, runtime data). aael: the event log alone
        /// as Confidential Containers' Attestation Agent Event Log text (`INIT sha384/...`, then
        /// `<domain> <op> <content>` lines), which replays by AAEL's rules to the quoted
        /// register.
        #[arg(long, default_value = "json", value_parser = ["json", "aael"])]
        format: String,
    },
    /// Verify evidence offline: quote signature, nonce, event-log replay; list what ran.
    /// With --quote: verify a raw Intel TDX or SGX quote against its collateral instead.
    Verify {
        /// Evidence file from `vouch attest` (- for standard input).
        #[arg(required_unless_present_any = ["quote", "tpm_quote", "snp_report"])]
        file: Option<PathBuf>,
        /// A raw TDX or SGX (DCAP) quote to verify.
        #[arg(long, conflicts_with = "file")]
        quote: Option<PathBuf>,
        /// An AMD SEV-SNP attestation report to verify; needs --vcek and --chain.
        #[arg(long, conflicts_with_all = ["file", "quote"], requires_all = ["vcek", "chain"])]
        snp_report: Option<PathBuf>,
        /// The report's VCEK (or VLEK) certificate (DER).
        #[arg(long)]
        vcek: Option<PathBuf>,
        /// The AMD certificates (PEM, any order): the ASK (or the ASVK for a VLEK) and the ARK,
        /// as AMD's KDS or Trustee ship them.
        #[arg(long)]
        chain: Option<PathBuf>,
        /// Accept SNP guests whose policy allows debugging.
        #[arg(long)]
        allow_debug: bool,
        /// TDX golden value: the MRTD (hex).
        #[arg(long)]
        mrtd: Option<String>,
        /// TDX golden values for RTMR0-2, as N=HEX (repeatable).
        #[arg(long = "rtmr", value_name = "N=HEX")]
        rtmr: Vec<String>,
        /// SEV-SNP golden value: the launch measurement (hex).
        #[arg(long)]
        measurement: Option<String>,
        /// SEV-SNP: the highest VMPL the report may come from (0 as Trustee requires; some
        /// clouds' guests report from VMPL 1 under a paravisor). Default: any, shown as a claim.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=3))]
        max_vmpl: Option<u32>,
        /// SEV-SNP minimum reported TCB: BOOTLOADER,TEE,SNP,MICROCODE.
        #[arg(long, value_name = "BL,TEE,SNP,UCODE")]
        min_tcb: Option<String>,
        /// SEV-SNP: also trust the AMD root key (ARK) with this DER SHA-256 (hex), for products
        /// vouch does not pin (it pins ARK-Milan). Repeatable.
        #[arg(long, value_name = "SHA256")]
        trust_ark: Vec<String>,
        /// A TPM 2.0 quote (TPMS_ATTEST) to verify; needs --tpm-sig, --ak and --nonce.
        #[arg(long, conflicts_with_all = ["file", "quote"], requires_all = ["tpm_sig", "ak", "nonce"])]
        tpm_quote: Option<PathBuf>,
        /// The quote's TPMT_SIGNATURE.
        #[arg(long)]
        tpm_sig: Option<PathBuf>,
        /// The attestation key (TPMT_PUBLIC).
        #[arg(long)]
        ak: Option<PathBuf>,
        /// With --tpm-quote: the AK's certificate (PEM, intermediates after it, or DER), checked
        /// against --tpm-ak-ca and against the AK.
        #[arg(long, requires_all = ["tpm_quote", "tpm_ak_ca"])]
        ak_cert: Option<PathBuf>,
        /// PCR values as JSON {"0": "hex", ...} for the quoted bank; checked against the quote.
        #[arg(long)]
        pcrs: Option<PathBuf>,
        /// A TCG2 event log (binary_bios_measurements) to replay against --pcrs.
        #[arg(long, requires = "pcrs")]
        eventlog: Option<PathBuf>,
        /// Collateral for a TDX quote (given with --quote, or inside tdx evidence): JSON with PEM
        /// chains, TCB info, QE identity; CRLs and signatures in hex.
        #[arg(long, conflicts_with_all = ["collateral_dir", "pccs"])]
        collateral: Option<PathBuf>,
        #[command(flatten)]
        collateral_from: vouch::CollateralArgs,
        /// Verify as of this unix time (default: now).
        #[arg(long)]
        at: Option<u64>,
        /// TCB statuses to accept besides UpToDate (e.g. SWHardeningNeeded).
        #[arg(long = "accept-tcb", value_name = "STATUS")]
        accept_tcb: Vec<String>,
        /// TDX: require this TD attribute bit (debug, icssd, servtd_ext, lass, sept_ve_disable,
        /// migratable, pks, kl, tpa, perfmon). Repeatable. By default TD attributes are claims
        /// only (as in Intel's QVL); debug and reserved bits are always refused.
        #[arg(long = "require-td-attribute", value_name = "NAME")]
        require_td_attribute: Vec<String>,
        /// TDX: refuse a TD with this attribute bit set (e.g. migratable). Repeatable.
        #[arg(long = "refuse-td-attribute", value_name = "NAME")]
        refuse_td_attribute: Vec<String>,
        /// TDX: require SEPT_VE_DISABLE (as --require-td-attribute sept_ve_disable). Azure's TDX
        /// guests do not set it.
        #[arg(long)]
        require_sept_ve_disable: bool,
        /// Require this nonce.
        #[arg(long)]
        nonce: Option<String>,
        /// Accept evidence from the sim TEE (software only, NOT hardware-backed).
        #[arg(long)]
        allow_sim: bool,
        /// Require sim quotes to be signed by this sim key (hex, as `vouch tee info` shows it).
        /// Repeatable: any of them.
        #[arg(long, value_name = "HEX", requires = "allow_sim")]
        sim_key: Vec<String>,
        /// Evidence: trust TPM quotes signed by this attestation key (sha256:HEX, as
        /// `vouch tee info` shows it). Repeatable.
        #[arg(long, value_name = "FINGERPRINT")]
        tpm_ak: Vec<String>,
        /// Evidence: trust TPM attestation keys certified by this CA (PEM or DER certificate
        /// file; an AK certificate itself pins that AK). Repeatable.
        #[arg(long, value_name = "FILE")]
        tpm_ak_ca: Vec<PathBuf>,
        /// Evidence: check every container of the document's image against this signed golden
        /// value (`vouch golden sign`); a pinned runtime spec's digest is recomputed from the
        /// document and compared with each container's measured config digest.
        #[arg(long, value_name = "SIGNED", requires = "golden_key")]
        golden: Option<PathBuf>,
        /// The golden value signer's public key (PEM).
        #[arg(long, value_name = "PEM", requires = "golden")]
        golden_key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The TEE vouchd runs on.
    #[command(subcommand)]
    Tee(TeeCmd),
    /// Named volumes.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Signing keys for images (cosign's key format).
    #[command(subcommand)]
    Key(KeyCmd),
    /// Golden values: signed reference documents of what an image is and how it may run.
    #[command(subcommand)]
    Golden(GoldenCmd),
    /// Sign an image in its registry with a cosign key (the signature is attached as
    /// sha256-<digest>.sig in the image's repository, where cosign looks for it).
    Sign {
        /// [REGISTRY/]REPOSITORY[:TAG|@DIGEST]
        reference: String,
        /// The private key (from `vouch key generate` or `cosign generate-key-pair`).
        #[arg(long, required_unless_present = "gpg_key", conflicts_with = "gpg_key")]
        key: Option<PathBuf>,
        /// Sign with an OpenPGP secret key (armored, e.g. `gpg --export-secret-keys --armor`)
        /// as containers' simple signing does; the signature goes to the registry's lookaside
        /// store named in --registries-d.
        #[arg(long)]
        gpg_key: Option<PathBuf>,
        /// registries.d directory naming the lookaside store (for --gpg-key).
        #[arg(long, default_value = "/etc/containers/registries.d")]
        registries_d: PathBuf,
        /// Reach the registry over plain HTTP.
        #[arg(long)]
        insecure_registry: bool,
        /// Read the key password from stdin (default: VOUCH_KEY_PASSWORD).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Show the daemon's TEE and measurement state.
    Info {
        #[arg(long)]
        json: bool,
    },
}

#[derive(ClapArgs)]
struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    detach: bool,
    /// Remove the container when it ends.
    #[arg(long)]
    rm: bool,
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass this shell's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines; # comments).
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Memory limit, e.g. 64m or 1g.
    #[arg(short, long)]
    memory: Option<String>,
    /// Maximum number of processes.
    #[arg(long)]
    pids_limit: Option<i64>,
    /// CPU limit, e.g. 0.5.
    #[arg(long)]
    cpus: Option<String>,
    /// Network: none (default, private namespace) or host.
    #[arg(long, value_parser = ["none", "host"])]
    network: Option<String>,
    /// User: NAME, UID, NAME:GROUP or UID:GID (names from the image's /etc/passwd and /etc/group;
    /// a NAME alone also gets the groups that list it as a member).
    #[arg(short, long)]
    user: Option<String>,
    /// Add the container's process to this group too: a name from the image's /etc/group, or a
    /// GID. Repeatable.
    #[arg(long, value_name = "GROUP")]
    group_add: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// A secret released by a KBS to this container only after attestation:
    /// kbs://HOST:PORT/REPO/TYPE/TAG (kbss:// for a KBS serving TLS), readable at
    /// /secret/REPO/TYPE/TAG
    /// (or at /secret/NAME with `,target=NAME`).
    #[arg(long, value_name = "URL[,target=NAME]")]
    secret: Vec<String>,
    /// Publish a container port on the host: [IP:]HOST_PORT:CONTAINER_PORT[/tcp]
    /// (the address defaults to vouchd's --publish-address).
    #[arg(short, long, value_name = "[IP:]HOST:CONTAINER")]
    publish: Vec<String>,
    /// Mount a named volume (created empty on first use, kept until removed): NAME:/PATH[:ro].
    #[arg(short, long, value_name = "NAME:/PATH[:ro]")]
    volume: Vec<String>,
    /// A signed golden-value document (a file or an http:// URL) the launch must match
    /// (default: the one attached to the image in its registry, if any).
    #[arg(long, value_name = "FILE|URL")]
    golden: Option<PathBuf>,
    /// When to pull the image from its registry: missing (default: when it is not in the
    /// store and names a registry), always, or never.
    #[arg(long, default_value = "missing", value_parser = ["missing", "always", "never"])]
    pull: String,
    /// Reach the image's registry over plain HTTP when pulling.
    #[arg(long)]
    insecure_registry: bool,
    /// Image name, id or digest (REGISTRY/REPOSITORY[:TAG|@DIGEST] is pulled when missing).
    image: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Subcommand)]
enum TeeCmd {
    /// The detected TEE and its current registers.
    Info {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// List images.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        json: bool,
    },
    /// Load images from an OCI layout directory or archive (.tar, .tar.gz), sent to vouchd over
    /// its socket (as `docker load` does); `-` or no input reads an archive from stdin.
    Load {
        /// The layout directory or archive (read with your permissions, not the daemon's).
        #[arg(short, long = "input", conflicts_with = "daemon_path")]
        input: Option<PathBuf>,
        /// Same as --input.
        #[arg(conflicts_with = "daemon_path")]
        path: Option<PathBuf>,
        /// Load an archive (a regular file) that is on the daemon's own host, by its absolute
        /// path there, instead of sending one.
        #[arg(long, value_name = "PATH")]
        daemon_path: Option<PathBuf>,
        /// Name the image (default: its org.opencontainers.image.ref.name).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Pull an image from an OCI registry; every blob is verified against its digest.
    Pull(PullArgs),
    /// Remove images.
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
}

#[derive(Subcommand)]
enum VolumeCmd {
    /// List volumes and the containers using them.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove volumes and their content (refused while a container uses one).
    Rm {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
}

fn volume(client: &Client, cmd: VolumeCmd) -> Result<u8> {
    match cmd {
        VolumeCmd::Ls { quiet, json } => {
            let list: Vec<vouch_api::Volume> = client.call("GET", "/v1/volumes", None::<&()>)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if quiet {
                for v in &list {
                    println!("{}", v.name);
                }
            } else {
                println!("{:<32} USED BY", "VOLUME NAME");
                for v in &list {
                    println!("{:<32} {}", v.name, v.used_by.join(","));
                }
            }
            Ok(0)
        }
        VolumeCmd::Rm { volumes } => {
            let mut failed = false;
            for v in volumes {
                match client.call::<vouch_api::Volume>(
                    "DELETE",
                    &format!("/v1/volumes/{}", seg(&v)),
                    None::<&()>,
                ) {
                    Ok(removed) => println!("{}", removed.name),
                    Err(e) => {
                        eprintln!("vouch: {e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
    }
}

#[derive(Subcommand)]
enum GoldenCmd {
    /// Write the golden-value document of an image in its registry (edit env_keys or
    /// allow_args before signing if the defaults do not fit).
    Create {
        reference: String,
        /// Let containers pass other arguments after the entrypoint.
        #[arg(long)]
        allow_args: bool,
        /// Pin the whole runtime spec to that of this container (as `vouch inspect --spec`
        /// shows it; it must run this image): a launch must then have exactly that spec, and
        /// `vouch verify --golden` recomputes its digest from the document.
        #[arg(long, value_name = "CONTAINER")]
        spec_from: Option<String>,
        #[arg(long)]
        insecure_registry: bool,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Sign a document with a cosign key; --push attaches it to the image (sha256-<hex>.rv).
    Sign {
        document: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Attach the signed document to this image in its registry.
        #[arg(long, value_name = "REFERENCE")]
        push: Option<String>,
        #[arg(long)]
        insecure_registry: bool,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Check a signed document's signature, and optionally an image in its registry against it.
    Verify {
        signed: PathBuf,
        /// The signer's public key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// Compare with this image (manifest, config, layers) in its registry.
        #[arg(long, value_name = "REFERENCE")]
        image: Option<String>,
        #[arg(long)]
        insecure_registry: bool,
    },
}

fn registry_opts(reference: &str, insecure: bool) -> vouch_image::registry::PullOptions {
    let registry = vouch_image::registry::registry_host(reference)
        .unwrap_or("docker.io")
        .to_string();
    vouch_image::registry::PullOptions {
        insecure_registries: if insecure { vec![registry] } else { Vec::new() },
        ..Default::default()
    }
}

fn write_out(output: Option<&PathBuf>, text: &str) -> Result<()> {
    match output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display())),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn golden(client: &Client, cmd: GoldenCmd) -> Result<u8> {
    use vouch_image::golden::Golden;
    match cmd {
        GoldenCmd::Create {
            reference,
            allow_args,
            spec_from,
            insecure_registry,
            output,
        } => {
            let record = vouch_image::registry::inspect(
                &reference,
                &registry_opts(&reference, insecure_registry),
            )?;
            let repo = reference
                .rsplit_once('@')
                .map(|(r, _)| r)
                .unwrap_or(&reference)
                .to_string();
            let mut doc = Golden::for_image(&repo, &record, allow_args);
            if let Some(container) = spec_from {
                let c: Container = client.call(
                    "GET",
                    &format!("/v1/containers/{}", seg(&container)),
                    None::<&()>,
                )?;
                if c.image_digest != record.manifest_digest.to_string() {
                    bail!(
                        "container {} runs {}, not {reference} ({}): pin the spec of a container of this image",
                        &c.id[..12],
                        c.image_digest,
                        record.manifest_digest
                    );
                }
                let rs: vouch_api::RuntimeSpec = client.call(
                    "GET",
                    &format!("/v1/containers/{}/spec", seg(&container)),
                    None::<&()>,
                )?;
                // The document's other rules say what the pinned spec has: its arguments after
                // the entrypoint, and its environment's names.
                if let Some(rest) = c.command.strip_prefix(doc.entrypoint.as_slice()) {
                    doc.cmd = rest.to_vec();
                }
                doc.allow_args = false;
                let env = rs.spec.pointer("/process/env").and_then(|e| e.as_array());
                for e in env.into_iter().flatten().filter_map(|e| e.as_str()) {
                    doc.env_keys
                        .push(e.split_once('=').map_or(e, |(k, _)| k).to_string());
                }
                doc.env_keys.sort();
                doc.env_keys.dedup();
                doc.pin_spec(rs.spec)?;
                if doc.spec_digest.as_deref() != Some(rs.config_digest.as_str()) {
                    bail!("vouchd's digest of the spec of {container} does not match the spec it returned");
                }
            }
            write_out(output.as_ref(), &serde_json::to_string_pretty(&doc)?)?;
            Ok(0)
        }
        GoldenCmd::Sign {
            document,
            key,
            output,
            push,
            insecure_registry,
            password_stdin,
        } => {
            let doc: Golden = serde_json::from_slice(
                &std::fs::read(&document)
                    .with_context(|| format!("cannot read {}", document.display()))?,
            )
            .with_context(|| format!("{} is not a golden-value document", document.display()))?;
            let password = key_password(password_stdin)?;
            let pem = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read {}", key.display()))?;
            let signing = vouch_image::cosign::decrypt_private(&pem, password.as_bytes())?;
            let signed = doc.sign(&signing);
            write_out(output.as_ref(), &serde_json::to_string_pretty(&signed)?)?;
            if let Some(reference) = push {
                vouch_image::registry::push_golden(
                    &reference,
                    &signed,
                    &doc.manifest_digest,
                    &registry_opts(&reference, insecure_registry),
                )?;
                eprintln!(
                    "Attached the golden value to {reference} ({})",
                    doc.manifest_digest
                );
            }
            Ok(0)
        }
        GoldenCmd::Verify {
            signed,
            key,
            image,
            insecure_registry,
        } => {
            let (envelope, doc) = open_golden(&signed, &key)?;
            println!("signature: verified ({})", envelope.key);
            if let Some(reference) = image {
                let record = vouch_image::registry::inspect(
                    &reference,
                    &registry_opts(&reference, insecure_registry),
                )?;
                let mut args = record.defaults.entrypoint.clone();
                args.extend(record.defaults.cmd.iter().cloned());
                let diff = doc.differences(&record, &args, &[]);
                if !diff.is_empty() {
                    println!("{reference}: NOT verified: {}", diff.join("; "));
                    return Ok(1);
                }
                println!("{reference}: verified ({})", record.manifest_digest);
            }
            Ok(0)
        }
    }
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Create a signing key pair: PREFIX.key (encrypted, 0600) and PREFIX.pub, in the format
    /// cosign and skopeo read. The password comes from VOUCH_KEY_PASSWORD or stdin.
    Generate {
        /// Path prefix of the two files.
        #[arg(long, default_value = "cosign")]
        output_prefix: PathBuf,
        /// Read the password from stdin.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// A key password from VOUCH_KEY_PASSWORD, or the first line of stdin.
fn key_password(from_stdin: bool) -> Result<zeroize::Zeroizing<String>> {
    if from_stdin {
        let mut p = String::new();
        std::io::stdin()
            .read_line(&mut p)
            .context("cannot read the password from stdin")?;
        return Ok(zeroize::Zeroizing::new(
            p.trim_end_matches(['\r', '\n']).to_string(),
        ));
    }
    std::env::var("VOUCH_KEY_PASSWORD")
        .map(zeroize::Zeroizing::new)
        .map_err(|_| {
            anyhow::anyhow!("give the key password in VOUCH_KEY_PASSWORD or with --password-stdin")
        })
}

fn key(cmd: KeyCmd) -> Result<u8> {
    match cmd {
        KeyCmd::Generate {
            output_prefix,
            password_stdin,
        } => {
            let password = key_password(password_stdin)?;
            let (private, public) = vouch_image::cosign::generate(password.as_bytes())?;
            let with = |ext: &str| {
                let mut p = output_prefix.clone().into_os_string();
                p.push(ext);
                PathBuf::from(p)
            };
            let (key_path, pub_path) = (with(".key"), with(".pub"));
            for p in [&key_path, &pub_path] {
                if p.exists() {
                    bail!("{} exists already; not overwriting it", p.display());
                }
            }
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .and_then(|mut f| f.write_all(private.as_bytes()))
                .with_context(|| format!("cannot write {}", key_path.display()))?;
            std::fs::write(&pub_path, public.as_bytes())
                .with_context(|| format!("cannot write {}", pub_path.display()))?;
            let fp = vouch_image::cosign::fingerprint(&vouch_image::cosign::parse_public(&public)?);
            println!("Private key written to {}", key_path.display());
            println!("Public key written to {} ({fp})", pub_path.display());
            Ok(0)
        }
    }
}

#[derive(ClapArgs)]
struct PullArgs {
    /// [REGISTRY/]REPOSITORY[:TAG|@DIGEST]
    reference: String,
    /// Reach the registry over plain HTTP (a loopback or trusted-network registry).
    #[arg(long)]
    insecure_registry: bool,
    /// Registry user name (the password is read from VOUCH_REGISTRY_PASSWORD or stdin).
    #[arg(short, long)]
    username: Option<String>,
    /// Read the registry password from stdin.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    #[arg(short, long)]
    quiet: bool,
    #[arg(long)]
    json: bool,
    /// Report on stderr (when `vouch run` pulls, stdout is the container's).
    #[arg(skip)]
    report_on_stderr: bool,
}

fn pull(client: &Client, args: PullArgs) -> Result<u8> {
    let password = match (&args.username, args.password_stdin) {
        (None, _) => None,
        (Some(_), true) => {
            let mut p = String::new();
            std::io::stdin()
                .read_line(&mut p)
                .context("cannot read the password from stdin")?;
            Some(p.trim_end_matches(['\r', '\n']).to_string())
        }
        (Some(_), false) => Some(std::env::var("VOUCH_REGISTRY_PASSWORD").map_err(|_| {
            anyhow::anyhow!(
                "--username needs a password: --password-stdin or VOUCH_REGISTRY_PASSWORD"
            )
        })?),
    };
    if !args.quiet && !args.json {
        eprintln!("Pulling {}", args.reference);
    }
    let req = vouch_api::PullImage {
        reference: args.reference.clone(),
        insecure_registry: args.insecure_registry,
        username: args.username.clone(),
        password,
    };
    let body = serde_json::to_vec(&req)?;
    let resp = client.send("POST", "/v1/images/pull?progress=true", Some(&body))?;
    if !(200..300).contains(&resp.status) {
        let mut data = Vec::new();
        let mut r = resp.body;
        std::io::Read::read_to_end(&mut r, &mut data)?;
        return Err(vouch_api::client::api_error(resp.status, &data).into());
    }
    let tty = !args.quiet && !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = format::PullProgress::new(tty);
    let mut image: Option<ImageSummary> = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(resp.body)) {
        let line = line.context("the pull stream was cut")?;
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("vouchd sent an unexpected line: {line}"))?;
        match v["status"].as_str() {
            Some("done") => image = Some(serde_json::from_value(v["image"].clone())?),
            Some("error") => bail!("{}", v["message"].as_str().unwrap_or("pull failed")),
            _ if !args.quiet && !args.json => progress.event(&v),
            _ => {}
        }
    }
    let image = image.context("the pull stream ended without a result")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&image)?);
    } else if args.quiet {
        println!("{}", image.manifest_digest);
    } else if args.report_on_stderr {
        eprintln!(
            "Pulled {} ({}, {} layers, {} bytes)",
            args.reference, image.manifest_digest, image.layers, image.size
        );
    } else {
        println!(
            "Pulled {} ({}, {} layers, {} bytes)",
            args.reference, image.manifest_digest, image.layers, image.size
        );
    }
    Ok(0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verifying = matches!(cli.command, Cmd::Verify { .. });
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let msg = vouch::error_line(&e);
            eprintln!("vouch: {msg}");
            ExitCode::from(if verifying { 1 } else { EXIT_VOUCH_ERROR })
        }
    }
}

/// Send an OCI layout directory (as a tar made on the fly), an archive file, or stdin to vouchd.
fn upload_images(
    client: &Client,
    input: Option<PathBuf>,
    name: Option<&str>,
) -> Result<Vec<ImageSummary>> {
    let mut path = "/v1/images/load".to_string();
    if let Some(n) = name {
        path.push_str(&format!("?name={}", seg(n)));
    }
    let input = input.filter(|p| p.as_os_str() != "-");
    let loaded = match input {
        None => {
            let hint = "give the OCI layout or archive to load (vouch image load -i PATH), or pipe an archive into stdin";
            if std::io::IsTerminal::is_terminal(&io::stdin()) {
                bail!("{hint}");
            }
            // Nothing on stdin is the caller's mistake, said as such before anything is sent.
            let mut stdin = io::stdin().lock();
            let first = io::BufRead::fill_buf(&mut stdin)?.len();
            if first == 0 {
                bail!("stdin is empty: {hint}");
            }
            client.upload(&path, "application/x-tar", |w| {
                io::copy(&mut stdin, w).map(drop)
            })?
        }
        Some(p) => {
            let meta =
                std::fs::metadata(&p).with_context(|| format!("cannot open {}", p.display()))?;
            if meta.is_dir() {
                if !p.join("oci-layout").is_file() {
                    bail!(
                        "{} is not an OCI image layout (no oci-layout file)",
                        p.display()
                    );
                }
                client.upload(&path, "application/x-tar", |w| {
                    let mut tar = tar::Builder::new(w);
                    tar.follow_symlinks(false);
                    tar.mode(tar::HeaderMode::Deterministic);
                    tar.append_dir_all(".", &p)?;
                    tar.finish()
                })?
            } else {
                let mut f = std::fs::File::open(&p)
                    .with_context(|| format!("cannot open {}", p.display()))?;
                client.upload(&path, "application/x-tar", |w| {
                    io::copy(&mut f, w).map(drop)
                })?
            }
        }
    };
    Ok(loaded)
}

/// Percent-encode one path segment.
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn run(cli: Cli) -> Result<u8> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Cmd::Run(args) => run_container(&client, args),
        Cmd::Ps { all, quiet, json } => {
            let list: Vec<Container> =
                client.call("GET", &format!("/v1/containers?all={all}"), None::<&()>)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if quiet {
                for c in &list {
                    println!("{}", &c.id[..12]);
                }
            } else {
                print!("{}", format::ps_table(&list));
            }
            Ok(0)
        }
        Cmd::Logs { follow, container } => {
            let resp = client.stream(
                "GET",
                &format!("/v1/containers/{}/logs?follow={follow}", seg(&container)),
            )?;
            demux(resp.body)?;
            Ok(0)
        }
        Cmd::Stop { time, containers } => Ok(for_each(containers, |c| {
            client.call::<Container>(
                "POST",
                &format!("/v1/containers/{}/stop?timeout={time}", seg(c)),
                None::<&()>,
            )?;
            println!("{c}");
            Ok(())
        })),
        Cmd::Rm { force, containers } => Ok(for_each(containers, |c| {
            client.call::<Container>(
                "DELETE",
                &format!("/v1/containers/{}?force={force}", seg(c)),
                None::<&()>,
            )?;
            println!("{c}");
            Ok(())
        })),
        Cmd::Wait { containers } => {
            for c in containers {
                let w: WaitResponse = client.call(
                    "POST",
                    &format!("/v1/containers/{}/wait", seg(&c)),
                    None::<&()>,
                )?;
                match w.exit_code {
                    Some(code) => println!("{code}"),
                    None => bail!(
                        "container {c} ended without an exit status: {}",
                        w.error.unwrap_or_default()
                    ),
                }
            }
            Ok(0)
        }
        Cmd::Inspect { containers, spec } => {
            let mut out = Vec::new();
            for c in containers {
                out.push(if spec {
                    serde_json::to_value(client.call::<vouch_api::RuntimeSpec>(
                        "GET",
                        &format!("/v1/containers/{}/spec", seg(&c)),
                        None::<&()>,
                    )?)?
                } else {
                    serde_json::to_value(client.call::<Container>(
                        "GET",
                        &format!("/v1/containers/{}", seg(&c)),
                        None::<&()>,
                    )?)?
                });
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        Cmd::Events { follow, json } => {
            let past: Vec<EventMessage> = client.call("GET", "/v1/events", None::<&()>)?;
            for e in &past {
                print_event(e, json)?;
            }
            if follow {
                let resp = client.stream("GET", "/v1/events?follow=true")?;
                let reader = io::BufReader::new(resp.body);
                for line in io::BufRead::lines(reader) {
                    let e: EventMessage = serde_json::from_str(&line?)?;
                    print_event(&e, json)?;
                }
            }
            Ok(0)
        }
        Cmd::Image(cmd) => image(&client, cmd),
        Cmd::Pull(args) => pull(&client, args),
        Cmd::Key(cmd) => key(cmd),
        Cmd::Golden(cmd) => golden(&client, cmd),
        Cmd::Volume(cmd) => volume(&client, cmd),
        Cmd::Sign {
            reference,
            key,
            gpg_key,
            registries_d,
            insecure_registry,
            password_stdin,
        } => {
            let opts = registry_opts(&reference, insecure_registry);
            if let Some(gpg_key) = gpg_key {
                // The passphrase (often empty for automation keys) from the same places.
                let passphrase = key_password(password_stdin).unwrap_or_default();
                let secret = std::fs::read(&gpg_key)
                    .with_context(|| format!("cannot read {}", gpg_key.display()))?;
                let lookaside = vouch_image::simplesign::Lookaside::load(&registries_d)?;
                let record = vouch_image::registry::inspect(&reference, &opts)?;
                let name = record.names.first().cloned().unwrap_or_default();
                let (repository, _) = name
                    .rsplit_once(':')
                    .filter(|(r, t)| !t.contains('/') && r.contains('/'))
                    .unwrap_or((name.as_str(), ""));
                let repository = repository.split('@').next().unwrap_or_default();
                let payload = vouch_image::simplesign::payload(&name, &record.manifest_digest);
                let signature = vouch_image::simplesign::sign(&secret, &passphrase, &payload)?;
                let path = lookaside.store(repository, &record.manifest_digest, &signature)?;
                println!(
                    "Signed {name} ({}); signature stored at {}",
                    record.manifest_digest,
                    path.display()
                );
                return Ok(0);
            }
            let Some(key) = key else {
                bail!("give --key (cosign) or --gpg-key (OpenPGP)")
            };
            let password = key_password(password_stdin)?;
            let pem = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read {}", key.display()))?;
            let signing = vouch_image::cosign::decrypt_private(&pem, password.as_bytes())?;
            let digest = vouch_image::registry::push_cosign_signature(&reference, &signing, &opts)?;
            let fp = vouch_image::cosign::fingerprint(signing.verifying_key());
            println!("Signed {reference} ({digest}) with {fp}");
            Ok(0)
        }
        Cmd::Tee(TeeCmd::Info { json }) => {
            let info: vouch_api::TeeInfo = client.call("GET", "/v1/tee", None::<&()>)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!(
                    "TEE: {}{}",
                    info.tee,
                    if info.hardware {
                        ""
                    } else {
                        " (NOT hardware-backed)"
                    }
                );
                for (i, r) in info.registers.iter().enumerate() {
                    let mark = if i == info.register_index {
                        "  <- vouch's event log"
                    } else {
                        ""
                    };
                    println!("  register {i}: {r}{mark}");
                }
                if let Some(k) = &info.attestation_key {
                    let flag = if info.tee == "sim" {
                        "--sim-key"
                    } else {
                        "--tpm-ak"
                    };
                    println!("attestation key: {k}  (verifiers pin it: {flag} {k})");
                }
                if let Some(w) = &info.warning {
                    println!("WARNING: {w}");
                }
            }
            Ok(0)
        }
        Cmd::Attest {
            nonce,
            output,
            format,
        } => {
            let nonce = match nonce {
                Some(n) => n.to_ascii_lowercase(),
                None => {
                    let mut b = [0u8; 32];
                    getrandom::fill(&mut b)
                        .context("cannot read the OS random number generator")?;
                    let n = hex::encode(b);
                    eprintln!("nonce: {n}");
                    n
                }
            };
            let evidence: serde_json::Value =
                client.call("POST", "/v1/attest", Some(&AttestRequest { nonce }))?;
            let text = if format == "aael" {
                let evidence: vouch_tee::Evidence = serde_json::from_value(evidence)
                    .context("vouchd sent evidence vouch cannot read")?;
                match evidence.aa_eventlog {
                    Some(text) => text,
                    None => vouch_measure::aael::to_text(&evidence.event_log)?,
                }
            } else {
                serde_json::to_string_pretty(&evidence)? + "\n"
            };
            match output {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("evidence written to {}", path.display());
                }
                None => io::stdout().write_all(text.as_bytes())?,
            }
            Ok(0)
        }
        Cmd::Verify {
            snp_report: Some(report),
            vcek: Some(vcek),
            chain: Some(chain),
            at,
            allow_debug,
            measurement,
            min_tcb,
            trust_ark,
            max_vmpl,
            json,
            ..
        } => verify_snp(
            &report,
            &vcek,
            &chain,
            at,
            &trust_ark,
            snp_policy(allow_debug, measurement, min_tcb, max_vmpl)?,
            json,
        ),
        Cmd::Verify {
            tpm_quote: Some(tq),
            tpm_sig: Some(sig),
            ak: Some(ak),
            nonce: Some(nonce),
            pcrs,
            eventlog,
            ak_cert,
            tpm_ak_ca,
            at,
            json,
            ..
        } => verify_tpm(
            TpmQuoteFiles {
                quote: &tq,
                sig: &sig,
                ak: &ak,
            },
            ak_cert.as_deref().map(|c| {
                (
                    c,
                    tpm_ak_ca.as_slice(),
                    at.unwrap_or_else(vouch_tee::unix_now),
                )
            }),
            &nonce,
            pcrs.as_deref(),
            eventlog.as_deref(),
            json,
        ),
        Cmd::Verify {
            quote: Some(quote),
            collateral,
            collateral_from,
            at,
            accept_tcb,
            require_td_attribute,
            refuse_td_attribute,
            require_sept_ve_disable,
            mrtd,
            rtmr,
            json,
            ..
        } => verify_quote(
            &quote,
            collateral.as_deref(),
            &collateral_from,
            at,
            dcap_policy(TdxFlags {
                accept_tcb,
                require_td_attribute,
                refuse_td_attribute,
                require_sept_ve_disable,
                mrtd,
                rtmr,
            })?,
            json,
        ),
        Cmd::Verify {
            file,
            nonce,
            allow_sim,
            sim_key,
            tpm_ak,
            tpm_ak_ca,
            collateral,
            collateral_from,
            at,
            accept_tcb,
            require_td_attribute,
            refuse_td_attribute,
            require_sept_ve_disable,
            mrtd,
            rtmr,
            golden,
            golden_key,
            json,
            ..
        } => {
            let golden = match (golden, golden_key) {
                (Some(doc), Some(key)) => Some(open_golden(&doc, &key)?.1),
                _ => None,
            };
            let mut opts = VerifyOptions {
                allow_sim,
                nonce,
                sim_keys: sim_key,
                at,
                tpm_aks: tpm_ak.iter().map(|f| f.to_ascii_lowercase()).collect(),
                ..Default::default()
            };
            opts.dcap_policy = dcap_policy(TdxFlags {
                accept_tcb,
                require_td_attribute,
                refuse_td_attribute,
                require_sept_ve_disable,
                mrtd,
                rtmr,
            })?;
            if let Some(path) = collateral {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                opts.tdx_collateral = Some(vouch_tee::dcap::load_collateral(&bytes)?);
            }
            opts.collateral = collateral_from.store()?;
            opts.tpm_ak_cas = vouch::ca_certificates(&tpm_ak_ca)?;
            verify(
                file.unwrap_or_else(|| PathBuf::from("-")),
                opts,
                golden.as_ref(),
                json,
            )
        }
        Cmd::Info { json } => {
            let info: Info = client.call("GET", "/v1/info", None::<&()>)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", format::info(&info));
            }
            Ok(0)
        }
    }
}

/// Apply `op` to every target, reporting each failure on its own line; 1 if any failed.
fn for_each(
    targets: Vec<String>,
    mut op: impl FnMut(&str) -> Result<(), vouch_api::ClientError>,
) -> u8 {
    let mut failed = false;
    for t in &targets {
        if let Err(e) = op(t) {
            eprintln!("vouch: {e}");
            failed = true;
        }
    }
    u8::from(failed)
}

fn print_event(e: &EventMessage, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(e)?);
    } else {
        use vouch::text::field;
        println!(
            "{} {} {} ({}) {}",
            field(&e.event.time),
            field(e.id.get(..12).unwrap_or(&e.id)),
            field(&e.event.action),
            field(&e.name),
            field(&e.event.message)
        );
    }
    Ok(())
}

fn parse_env(args: &RunArgs) -> Result<Vec<String>> {
    let mut env = Vec::new();
    let mut push = |entry: &str, origin: &str| -> Result<()> {
        if entry.contains('=') {
            if entry.starts_with('=') {
                bail!("invalid environment variable {entry:?} in {origin}: the name is empty");
            }
            env.push(entry.to_string());
        } else if let Ok(v) = std::env::var(entry) {
            env.push(format!("{entry}={v}"));
        }
        Ok(())
    };
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read env file {}", file.display()))?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            push(line, &file.display().to_string())?;
        }
    }
    for e in &args.env {
        push(e, "--env")?;
    }
    Ok(env)
}

fn run_container(client: &Client, args: RunArgs) -> Result<u8> {
    let env = parse_env(&args)?;
    let req = CreateContainer {
        image: args.image.clone(),
        name: args.name.clone(),
        cmd: args.command.clone(),
        env,
        memory: args.memory.clone(),
        pids_limit: args.pids_limit,
        cpus: args.cpus.clone(),
        network: args.network.clone(),
        user: args.user.clone(),
        group_add: args.group_add.clone(),
        workdir: args.workdir.clone(),
        auto_remove: args.rm,
        attach: !args.detach,
        secrets: args.secret.clone(),
        publish: args.publish.clone(),
        volumes: args.volume.clone(),
        golden: match &args.golden {
            Some(p) => {
                let text = p.to_string_lossy();
                let bytes = if text.starts_with("http://") {
                    vouch_image::simplesign::http_get(&text, 1 << 20)
                        .map_err(|e| anyhow::anyhow!("cannot fetch the golden value: {e}"))?
                        .with_context(|| format!("{text}: not found"))?
                } else {
                    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?
                };
                Some(
                    serde_json::from_slice(&bytes)
                        .with_context(|| format!("{text} is not a signed golden value (JSON)"))?,
                )
            }
            None => None,
        },
    };
    // `host[:port]/...` or `localhost/...` names a registry (as docker decides it).
    let from_registry = vouch_image::registry::registry_host(&args.image).is_some();
    let pull_args = || PullArgs {
        reference: args.image.clone(),
        insecure_registry: args.insecure_registry,
        username: None,
        password_stdin: false,
        quiet: false,
        json: false,
        report_on_stderr: true,
    };
    if args.pull == "always" {
        pull(client, pull_args())?;
    }
    let created: Container = match client.call("POST", "/v1/containers", Some(&req)) {
        Err(vouch_api::ClientError::Api { message, .. })
            if args.pull == "missing" && from_registry && message.starts_with("no such image") =>
        {
            pull(client, pull_args())?;
            client.call("POST", "/v1/containers", Some(&req))?
        }
        other => other?,
    };
    if args.detach {
        println!("{}", created.id);
        return Ok(0);
    }
    let resp = client.stream(
        "GET",
        &format!("/v1/containers/{}/logs?follow=true", created.id),
    )?;
    demux(resp.body)?;
    let done: WaitResponse = client.call(
        "POST",
        &format!("/v1/containers/{}/wait", created.id),
        None::<&()>,
    )?;
    if done.oom_killed {
        eprintln!(
            "vouch: container {} was killed by the OOM killer (memory limit reached)",
            &created.id[..12]
        );
    }
    match (done.state, done.exit_code) {
        (TaskState::Exited, Some(code)) => Ok(code.clamp(0, 255) as u8),
        (_, _) => {
            bail!(
                "container {} ended without an exit status: {}",
                &created.id[..12],
                done.error.unwrap_or_default()
            )
        }
    }
}

/// Copy a multiplexed log stream to stdout and stderr.
fn demux(mut body: Box<dyn Read + Send>) -> Result<()> {
    let mut dec = FrameDecoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    let stdout = io::stdout();
    let stderr = io::stderr();
    loop {
        let n = body
            .read(&mut buf)
            .context("reading the container's output")?;
        if n == 0 {
            break;
        }
        dec.push(&buf[..n]);
        while let Some((stream, data)) = dec.next_frame()? {
            if stream == STDERR {
                let mut e = stderr.lock();
                e.write_all(&data)?;
                e.flush()?;
            } else {
                let mut o = stdout.lock();
                o.write_all(&data)?;
                o.flush()?;
            }
        }
    }
    Ok(())
}

fn image(client: &Client, cmd: ImageCmd) -> Result<u8> {
    match cmd {
        ImageCmd::Ls { quiet, json } => {
            let list: Vec<ImageSummary> = client.call("GET", "/v1/images", None::<&()>)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if quiet {
                for i in &list {
                    println!("{}", i.id);
                }
            } else {
                print!("{}", format::image_table(&list));
            }
            Ok(0)
        }
        ImageCmd::Pull(args) => pull(client, args),
        ImageCmd::Load {
            input,
            path,
            daemon_path,
            name,
            json,
        } => {
            let loaded: Vec<ImageSummary> = match daemon_path {
                Some(p) => {
                    if !p.is_absolute() {
                        bail!("--daemon-path must be an absolute path on the daemon's host");
                    }
                    let req = LoadImage {
                        path: p.display().to_string(),
                        name,
                    };
                    client.call("POST", "/v1/images/load-path", Some(&req))?
                }
                None => upload_images(client, input.or(path), name.as_deref())?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&loaded)?);
            } else {
                for i in &loaded {
                    let label = i.names.first().cloned().unwrap_or_else(|| i.id.clone());
                    println!("Loaded image: {label} ({})", i.manifest_digest);
                }
            }
            Ok(0)
        }
        ImageCmd::Rm { images } => Ok(for_each(images, |i| {
            let removed: ImageSummary =
                client.call("DELETE", &format!("/v1/images/{}", seg(i)), None::<&()>)?;
            println!("Deleted: {}", removed.manifest_digest);
            Ok(())
        })),
    }
}

/// A signed golden-value document and what it says, its signature checked against `key`.
fn open_golden(
    doc: &std::path::Path,
    key: &std::path::Path,
) -> Result<(
    vouch_image::golden::SignedGolden,
    vouch_image::golden::Golden,
)> {
    let envelope = vouch_image::golden::SignedGolden::parse(
        &std::fs::read(doc).with_context(|| format!("cannot read {}", doc.display()))?,
    )?;
    let pem =
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    let opened = envelope.open(&[vouch_image::cosign::parse_public(&pem)?])?;
    Ok((envelope, opened))
}

/// How the containers of a verdict compare with a golden value.
fn golden_check(
    verdict: &vouch_tee::verify::Verdict,
    doc: &vouch_image::golden::Golden,
) -> Result<format::GoldenCheck> {
    let pinned = doc.pinned_spec_digest()?;
    let image_digest = doc.manifest_digest.to_string();
    let containers: Vec<format::GoldenContainer> = verdict
        .containers
        .iter()
        .filter(|c| c.image_digest == image_digest)
        .map(|c| format::GoldenContainer {
            id: c.id.clone(),
            config_digest: c.config_digest.clone(),
            spec_matches: pinned.as_deref().map(|d| d == c.config_digest),
        })
        .collect();
    let matches =
        !containers.is_empty() && containers.iter().all(|c| c.spec_matches != Some(false));
    Ok(format::GoldenCheck {
        image_digest,
        spec_recomputed: doc.spec.is_some(),
        spec_digest: pinned,
        containers,
        matches,
    })
}

fn verify(
    file: PathBuf,
    opts: VerifyOptions,
    golden: Option<&vouch_image::golden::Golden>,
    json: bool,
) -> Result<u8> {
    let bytes = if file.as_os_str() == "-" {
        let mut b = Vec::new();
        io::stdin().read_to_end(&mut b)?;
        b
    } else {
        std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let evidence = Evidence::from_json(&bytes)
        .with_context(|| format!("{} is not vouch evidence", file.display()))?;
    let checked_nonce = opts.nonce.is_some();
    let result = verify_evidence(&evidence, &opts).map_err(anyhow::Error::new);
    let (Some(doc), Ok(verdict)) = (golden, &result) else {
        return report_verification(json, result, |verdict| {
            print!("{}", format::verdict(verdict, checked_nonce));
        });
    };
    let check = golden_check(verdict, doc)?;
    if json {
        let mut out = serde_json::to_value(verdict)?;
        out["golden"] = serde_json::to_value(&check)?;
        report_verification(true, Ok(out), |_| {})?;
    } else {
        print!("{}", format::verdict(verdict, checked_nonce));
        print!("{}", format::golden(&check));
    }
    Ok(u8::from(!check.matches))
}

fn verify_quote(
    quote: &std::path::Path,
    collateral: Option<&std::path::Path>,
    collateral_from: &vouch::CollateralArgs,
    at: Option<u64>,
    policy: vouch_tee::dcap::DcapPolicy,
    json: bool,
) -> Result<u8> {
    use vouch_tee::dcap;
    let raw = std::fs::read(quote).with_context(|| format!("cannot read {}", quote.display()))?;
    let now = at.unwrap_or_else(vouch_tee::unix_now);
    let col = match (collateral, collateral_from.store()?) {
        (Some(path), _) => dcap::load_collateral(
            &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        )?,
        (None, Some(store)) => store.for_quote(&raw, now)?,
        (None, None) => {
            bail!("a quote needs its collateral: give --collateral FILE, --collateral-dir DIR or --pccs URL")
        }
    };
    let result = dcap::verify_quote(&raw, &col, now)
        .and_then(|claims| policy.check(&claims).map(|()| claims));
    // The JSON adds `platform`: the claims under the names a KBS policy reads them by.
    let result = result.map_err(anyhow::Error::new).and_then(|claims| {
        let mut out = serde_json::to_value(&claims)?;
        out["platform"] = serde_json::to_value(claims.platform_claims())?;
        Ok((claims, out))
    });
    if json {
        return report_verification(true, result.map(|(_, out)| out), |_| {});
    }
    report_verification(
        false,
        result.map(|(claims, _)| claims),
        |claims: &dcap::DcapClaims| {
            println!("Quote VERIFIED ({}) at {now}", claims.kind);
            println!(
                "  TCB status:  {}{}",
                claims.tcb_status,
                if claims.advisories.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", claims.advisories.join(", "))
                }
            );
            if let Some(m) = &claims.mrtd {
                println!("  MRTD:        {m}");
            }
            for (i, r) in claims.rtmrs.iter().enumerate() {
                println!("  RTMR{i}:       {r}");
            }
            if let Some(m) = &claims.mr_enclave {
                println!("  MRENCLAVE:   {m}");
            }
            if let Some(m) = &claims.mr_signer {
                println!("  MRSIGNER:    {m}");
            }
            if let Some(a) = &claims.td_attributes {
                let set: Vec<&str> = claims
                    .td_attribute_bits
                    .iter()
                    .filter(|(_, set)| **set)
                    .map(|(name, _)| name.as_str())
                    .collect();
                println!(
                    "  TD attributes: {a} ({})",
                    if set.is_empty() {
                        "none set".to_string()
                    } else {
                        set.join(", ")
                    }
                );
            }
            println!("  debug:       {}", claims.debug);
            println!("  report data: {}", claims.report_data);
        },
    )
}

/// A raw TPM quote as files: TPMS_ATTEST, TPMT_SIGNATURE, the AK's TPMT_PUBLIC.
struct TpmQuoteFiles<'a> {
    quote: &'a std::path::Path,
    sig: &'a std::path::Path,
    ak: &'a std::path::Path,
}

fn verify_tpm(
    TpmQuoteFiles { quote, sig, ak }: TpmQuoteFiles<'_>,
    ak_cert: Option<(&std::path::Path, &[PathBuf], u64)>,
    nonce: &str,
    pcrs: Option<&std::path::Path>,
    eventlog: Option<&std::path::Path>,
    json: bool,
) -> Result<u8> {
    use vouch_tee::{tcg, tpm};
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let nonce_bytes = hex::decode(nonce).context("--nonce must be hex")?;
    let ak = tpm::parse_ak(&read(ak)?).context("attestation key")?;
    // The AK's certificate, when given, must fit the AK and chain to a trusted CA.
    let certified = match ak_cert {
        Some((path, cas, now)) => {
            let certs = vouch_tee::akcert::parse_certs(&read(path)?)
                .with_context(|| format!("--ak-cert {}", path.display()))?;
            let (leaf, chain) = certs
                .split_first()
                .context("--ak-cert holds no certificate")?;
            let anchors = vouch::ca_certificates(cas)?;
            Some(vouch_tee::akcert::verify_ak_cert(
                leaf, chain, &anchors, &ak, now,
            ))
        }
        None => None,
    };
    let values: Option<std::collections::BTreeMap<String, String>> = match pcrs {
        Some(p) => Some(
            serde_json::from_slice(&read(p)?)
                .with_context(|| format!("{} is not a JSON object of PCR values", p.display()))?,
        ),
        None => None,
    };
    let lookup = |_: u16, i: u32| {
        values
            .as_ref()
            .and_then(|v| v.get(&i.to_string()))
            .and_then(|h| hex::decode(h).ok())
    };
    let lookup_ref: Option<&dyn Fn(u16, u32) -> Option<Vec<u8>>> = values
        .as_ref()
        .map(|_| &lookup as &dyn Fn(u16, u32) -> Option<Vec<u8>>);
    let result = tpm::verify_quote(
        &read(quote)?,
        &read(sig)?,
        &ak,
        Some(&nonce_bytes),
        lookup_ref,
    )
    .map_err(anyhow::Error::new)
    .and_then(|claims| {
        if let Some(Err(e)) = &certified {
            bail!("{e}");
        }
        let mut replayed = Vec::new();
        if let (Some(log_path), Some(values)) = (eventlog, values.as_ref()) {
            let log = tcg::parse(&read(log_path)?).context("event log")?;
            let bank = claims
                .selection
                .first()
                .map(|(b, _)| b.clone())
                .unwrap_or_default();
            let alg = match bank.as_str() {
                "sha1" => tcg::ALG_SHA1,
                "sha384" => tcg::ALG_SHA384,
                "sha512" => tcg::ALG_SHA512,
                _ => tcg::ALG_SHA256,
            };
            for (idx, value) in log.replay(alg)? {
                let quoted = values.get(&idx.to_string()).cloned().unwrap_or_default();
                if hex::encode(&value) != quoted {
                    bail!(
                        "event log replays PCR{idx} ({bank}) to {}, the quoted value is {quoted}",
                        hex::encode(&value)
                    );
                }
                replayed.push(idx);
            }
        }
        Ok((claims, replayed))
    });
    #[derive(serde::Serialize)]
    struct TpmVerdict {
        #[serde(flatten)]
        claims: tpm::TpmQuoteClaims,
        pcrs_checked: bool,
        eventlog_replayed_pcrs: Vec<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ak_certified_by: Option<Vec<String>>,
    }
    let pcrs_checked = values.is_some();
    let ak_certified_by = certified.and_then(Result::ok);
    let result = result.map(|(claims, eventlog_replayed_pcrs)| TpmVerdict {
        claims,
        pcrs_checked,
        eventlog_replayed_pcrs,
        ak_certified_by,
    });
    report_verification(json, result, |v| {
        println!("TPM quote VERIFIED");
        println!("  nonce:       {} (matches)", v.claims.nonce);
        println!("  firmware:    {}", v.claims.firmware_version);
        for (bank, idx) in &v.claims.selection {
            println!("  PCRs ({bank}): {idx:?}");
        }
        let checked = if v.pcrs_checked {
            " (matches the given values)"
        } else {
            " (values not given: --pcrs)"
        };
        println!("  PCR digest:  {}{checked}", v.claims.pcr_digest);
        if let Some(path) = &v.ak_certified_by {
            println!("  AK certificate: {}", path.join(" <- "));
        }
        if eventlog.is_some() {
            println!(
                "  event log:   replays to PCRs {:?}",
                v.eventlog_replayed_pcrs
            );
        }
    })
}

fn verify_snp(
    report: &std::path::Path,
    vcek: &std::path::Path,
    chain: &std::path::Path,
    at: Option<u64>,
    trust_ark: &[String],
    policy: vouch_tee::snp::SnpPolicy,
    json: bool,
) -> Result<u8> {
    use vouch_tee::snp;
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let now = at.unwrap_or_else(vouch_tee::unix_now);
    let result =
        snp::verify_report_with_roots(&read(report)?, &read(vcek)?, &read(chain)?, now, trust_ark)
            .and_then(|c| policy.check(&c).map(|()| c));
    if json {
        // `platform`: the claims under the names a KBS policy reads them by.
        let out = result.map_err(anyhow::Error::new).and_then(|c| {
            let mut out = serde_json::to_value(&c)?;
            out["platform"] = serde_json::to_value(c.platform_claims())?;
            Ok(out)
        });
        return report_verification(true, out, |_| {});
    }
    report_verification(
        false,
        result.map_err(anyhow::Error::new),
        |c: &snp::SnpClaims| {
            if c.signing_key == "vlek" {
                println!("SEV-SNP report VERIFIED (VLEK <- ASVK <- ARK) at {now}");
            } else {
                println!("SEV-SNP report VERIFIED (VCEK <- ASK <- ARK) at {now}");
            }
            println!("  measurement:  {}", c.measurement);
            println!("  VMPL:         {}", c.vmpl);
            println!(
                "  policy:       {}{}",
                c.policy,
                if c.debug { " (debugging allowed)" } else { "" }
            );
            let t = c.reported_tcb;
            println!(
                "  reported TCB: bootloader {} tee {} snp {} microcode {}",
                t.bootloader, t.tee, t.snp, t.microcode
            );
            println!("  report data:  {}", c.report_data);
            println!("  chip id:      {}", c.chip_id);
        },
    )
}

/// Print a verification result as JSON (with `"verified"`) or through `human`; a failure prints
/// `{"verified": false, ...}` under --json and becomes the one-line error (exit status 1).
fn report_verification<T: serde::Serialize>(
    json: bool,
    result: Result<T>,
    human: impl FnOnce(&T),
) -> Result<u8> {
    match result {
        Ok(claims) => {
            if json {
                let mut v = serde_json::to_value(&claims)?;
                v["verified"] = serde_json::Value::Bool(true);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                human(&claims);
            }
            Ok(0)
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"verified": false, "error": vouch::error_line(&e)})
                );
            }
            Err(e.context("verification FAILED"))
        }
    }
}

/// The TDX flags of `vouch verify`.
struct TdxFlags {
    accept_tcb: Vec<String>,
    require_td_attribute: Vec<String>,
    refuse_td_attribute: Vec<String>,
    require_sept_ve_disable: bool,
    mrtd: Option<String>,
    rtmr: Vec<String>,
}

/// The TDX policy from the command line: accepted TCB statuses, TD attributes, golden values.
fn dcap_policy(flags: TdxFlags) -> Result<vouch_tee::dcap::DcapPolicy> {
    let TdxFlags {
        accept_tcb,
        mut require_td_attribute,
        refuse_td_attribute,
        require_sept_ve_disable,
        mrtd,
        rtmr,
    } = flags;
    if require_sept_ve_disable {
        require_td_attribute.push("sept_ve_disable".into());
    }
    let names = |flag: &str, names: Vec<String>| -> Result<Vec<String>> {
        names
            .into_iter()
            .map(|n| {
                vouch_tee::dcap::td_attribute(&n)
                    .map(|_| n.to_ascii_lowercase())
                    .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
            })
            .collect()
    };
    let mut policy = vouch_tee::dcap::DcapPolicy {
        mrtd,
        required_attributes: names("--require-td-attribute", require_td_attribute)?,
        refused_attributes: names("--refuse-td-attribute", refuse_td_attribute)?,
        ..Default::default()
    };
    policy.accepted_tcb.extend(accept_tcb);
    for spec in rtmr {
        let (n, value) = spec
            .split_once('=')
            .with_context(|| format!("--rtmr {spec:?}: use N=HEX"))?;
        let n: usize = n.parse().ok().filter(|n| *n <= 2).with_context(|| {
            format!("--rtmr {spec:?}: N is 0, 1 or 2 (RTMR3 is checked by replay)")
        })?;
        policy.rtmrs[n] = Some(value.to_ascii_lowercase());
    }
    Ok(policy)
}

/// The SEV-SNP policy from the command line.
fn snp_policy(
    allow_debug: bool,
    measurement: Option<String>,
    min_tcb: Option<String>,
    max_vmpl: Option<u32>,
) -> Result<vouch_tee::snp::SnpPolicy> {
    let min_tcb = match min_tcb {
        Some(spec) => {
            let v: Vec<u8> = spec
                .split(',')
                .map(|x| x.trim().parse::<u8>())
                .collect::<Result<_, _>>()
                .with_context(|| {
                    format!("--min-tcb {spec:?}: use four numbers BL,TEE,SNP,UCODE")
                })?;
            let [bootloader, tee, snp, microcode] = v[..] else {
                bail!("--min-tcb {spec:?}: use four numbers BL,TEE,SNP,UCODE")
            };
            Some(vouch_tee::snp::Tcb {
                bootloader,
                tee,
                snp,
                microcode,
            })
        }
        None => None,
    };
    Ok(vouch_tee::snp::SnpPolicy {
        allow_debug,
        min_tcb,
        measurement,
        max_vmpl,
    })
}
