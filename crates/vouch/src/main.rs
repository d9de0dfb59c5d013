//! vouch: the command-line client of vouchd, and the offline evidence verifier.

// Every line vouch prints goes through `text::output`: whatever came from outside (image names
// and commands, evidence, what a KBS or a registry answered) is shown, never obeyed by the
// terminal. Values are escaped field by field as well (`text::field`), so that none can add a
// line. Container output (`vouch logs`, `vouch run`) is written as it is, as docker does.
macro_rules! println {
    () => { ::std::println!() };
    ($($arg:tt)*) => { ::std::println!("{}", vouch_cli_common::text::output(&format!($($arg)*))) };
}
macro_rules! print {
    ($($arg:tt)*) => { ::std::print!("{}", vouch_cli_common::text::output(&format!($($arg)*))) };
}
macro_rules! eprintln {
    () => { ::std::eprintln!() };
    ($($arg:tt)*) => { ::std::eprintln!("{}", vouch_cli_common::text::output(&format!($($arg)*))) };
}

mod commands;
mod format;
mod hints;

use commands::{golden::*, image::*, install::*, key::*, run::*, verify::*, volume::*};
use hints::hint;

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
    /// Create a container (verified, measured, its secrets delivered) whose process waits for
    /// `vouch start`; prints its id.
    Create(RunArgs),
    /// Start created containers.
    Start {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers' processes (default SIGKILL).
    Kill {
        /// The signal: a name (TERM, SIGTERM) or a number.
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Run a command in a running container (measured as a container.exec record before it
    /// runs); exits with the command's exit code.
    #[command(
        trailing_var_arg = true,
        after_help = "The command runs in the container's namespaces and cgroup, with its seccomp filter and\ncapabilities, as its user in its working directory unless -u or -w say otherwise.\nExamples:\n  vouch exec web cat /etc/os-release\n  vouch exec -u 1000:1000 -e DEBUG=1 web /bin/sh -c 'id; env'"
    )]
    Exec {
        /// Set an environment variable (KEY=VALUE); repeatable.
        #[arg(short, long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Run as UID[:GID] (default: the container's user).
        #[arg(short, long, value_name = "UID[:GID]")]
        user: Option<String>,
        /// Working directory inside the container (default: the container's).
        #[arg(short, long, value_name = "DIR")]
        workdir: Option<String>,
        /// Keep stdin open and feed it to the command.
        #[arg(short, long)]
        interactive: bool,
        /// Give the command a terminal (this one's size, following it; the output is all
        /// stdout). Needs a terminal here.
        #[arg(short, long)]
        tty: bool,
        /// Print the exec's id and return at once.
        #[arg(short, long)]
        detach: bool,
        container: String,
        #[arg(required = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
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
    Verify(VerifyArgs),
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
    /// Add vouch's runtime to a container engine's configuration (containerd: runtime type
    /// io.containerd.vouch.v2, handler `vouch`).
    #[command(subcommand)]
    Install(InstallCmd),
    /// Remove what `vouch install` added, leaving the configuration as it was.
    #[command(subcommand)]
    Uninstall(UninstallCmd),
    /// Show the daemon's TEE and measurement state.
    Info {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TeeCmd {
    /// The detected TEE and its current registers.
    Info {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verifying = matches!(cli.command, Cmd::Verify(_));
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let msg = vouch_cli_common::error_line(&e);
            match hint(&e) {
                Some(h) => eprintln!("vouch: {msg} ({h})"),
                None => eprintln!("vouch: {msg}"),
            }
            ExitCode::from(if verifying { 1 } else { EXIT_VOUCH_ERROR })
        }
    }
}

/// Percent-encode one path segment.
pub(crate) fn seg(s: &str) -> String {
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
        Cmd::Create(args) => commands::run::create_container(&client, args),
        Cmd::Start { containers } => Ok(for_each(containers, |c| {
            client.call::<Container>(
                "POST",
                &format!("/v1/containers/{}/start", seg(c)),
                None::<&()>,
            )?;
            println!("{c}");
            Ok(())
        })),
        Cmd::Kill { signal, containers } => Ok(for_each(containers, |c| {
            client.call::<Container>(
                "POST",
                &format!("/v1/containers/{}/kill?signal={}", seg(c), seg(&signal)),
                None::<&()>,
            )?;
            println!("{c}");
            Ok(())
        })),
        Cmd::Exec {
            env,
            user,
            workdir,
            interactive,
            tty,
            detach,
            container,
            command,
        } => commands::run::exec(
            &client,
            &container,
            &vouch_api::ExecRequest {
                cmd: command,
                env,
                user,
                workdir,
                tty,
                stdin: interactive,
                ..Default::default()
            },
            detach,
        ),
        Cmd::Ps { all, quiet, json } => {
            let list: Vec<Container> =
                client.call("GET", &format!("/v1/containers?all={all}"), None::<&()>)?;
            print_list(
                &list,
                Listing { json, quiet },
                |c| format::short_id(&c.id),
                format::ps_table,
            )
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
        Cmd::Install(cmd) => install_cmd(cmd),
        Cmd::Uninstall(cmd) => uninstall_cmd(cmd),
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
        Cmd::Verify(args) => verify_command(args),
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

/// How a list command prints: `--json`, `-q` (one key per line), or a table.
pub(crate) struct Listing {
    pub(crate) json: bool,
    pub(crate) quiet: bool,
}

/// Print a list as its `Listing` says.
pub(crate) fn print_list<T: serde::Serialize>(
    list: &[T],
    how: Listing,
    key: impl Fn(&T) -> &str,
    table: impl FnOnce(&[T]) -> String,
) -> Result<u8> {
    if how.json {
        println!("{}", serde_json::to_string_pretty(list)?);
    } else if how.quiet {
        for item in list {
            println!("{}", key(item));
        }
    } else {
        print!("{}", table(list));
    }
    Ok(0)
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
        use vouch_cli_common::text::field;
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
