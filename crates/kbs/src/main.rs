//! vouch-kbs: the key broker. Argument parsing and wiring only; the logic is in the kbs crate.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;
use vouch_kbs::store::RedbStorage;
use vouch_kbs::{token, Kbs, KbsConfig};
use vouch_kbs_client::KbsClient;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "vouch-kbs",
    version,
    about = "Key broker: releases secrets only to attested containers (CoCo KBS protocol, Rego policies)",
    after_help = "Quick start:\n  vouch-kbs keygen --out-dir ./admin\n  vouch-kbs serve --admin-key ./admin/admin.pub --state-dir ./kbs &\n  vouch-kbs resource set default/key/app --file secret.json --admin-key ./admin/admin.key\n  vouch run --secret kbs://127.0.0.1:8080/default/key/app IMAGE ..."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Serve the KBS protocol and the admin API.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Keep resources, policies and reference values in PostgreSQL instead of the embedded
        /// database (for several replicas), e.g. postgres://kbs@127.0.0.1:5432/kbs.
        #[arg(long, env = "VOUCH_KBS_DATABASE", hide_env_values = true)]
        database: Option<String>,
        /// Directory for the database and the token signing key.
        #[arg(long, default_value = "/var/lib/vouch-kbs")]
        state_dir: PathBuf,
        /// The owner's admin public key (from `vouch-kbs keygen`); without it the admin API is off.
        #[arg(long)]
        admin_key: Option<PathBuf>,
        /// Serve Prometheus metrics at /metrics to scrapers that send this file's token (its
        /// first line, at least 16 characters) as Authorization: Bearer; without it /metrics is
        /// off.
        #[arg(long, value_name = "FILE")]
        metrics_token_file: Option<PathBuf>,
        /// Conker quick mode: release this JSON file (re-read on every request) as resource
        /// conker/secret/json, only to evidence with --measurement running --image.
        #[arg(long, requires_all = ["measurement", "image"])]
        secret_file: Option<PathBuf>,
        /// Quick mode: the platform measurement (hex of register 1: RTMR1 on TDX).
        #[arg(long, requires = "secret_file")]
        measurement: Option<String>,
        /// Quick mode: the image digest (sha256:HEX or HEX) the container must run.
        #[arg(long, requires = "secret_file")]
        image: Option<String>,
        /// Collateral for TDX evidence.
        #[command(flatten)]
        collateral: Box<vouch_cli_common::CollateralArgs>,
        /// Accept evidence from the sim TEE (development only: it is NOT hardware-backed).
        #[arg(long)]
        allow_sim: bool,
        /// With --allow-sim: accept sim evidence only from this sim TEE key (hex, as `vouch tee
        /// info` shows it on the machine). Repeatable.
        #[arg(long, value_name = "HEX", requires = "allow_sim")]
        sim_key: Vec<String>,
        /// Accept Confidential Containers' `sample` evidence (development only: it is
        /// UNSIGNED, so anyone can write it; weaker than sim evidence, which the sim
        /// instance's key at least signs).
        #[arg(long)]
        allow_sample: bool,
        /// The ASK and ARK (PEM, ASK first, as AMD's KDS serves them at
        /// /vcek/v1/PRODUCT/cert_chain) for SEV-SNP evidence whose certificate chain holds only
        /// the VCEK. The ARK must be one vouch pins.
        #[arg(long, value_name = "FILE")]
        snp_chain: Option<PathBuf>,
        /// The audience admin tokens must name (give each KBS its own, so that a token made for
        /// one is refused by the others).
        #[arg(long, default_value = vouch_kbs::token::DEFAULT_ADMIN_AUDIENCE, value_name = "NAME")]
        admin_audience: String,
        #[command(flatten)]
        tls: Box<TlsArgs>,
        /// Trust TPM quotes signed by this attestation key (its fingerprint, sha256:HEX, as
        /// `vouch tee info` shows it on the machine). Repeatable.
        #[arg(long, value_name = "FINGERPRINT")]
        tpm_ak: Vec<String>,
        /// Trust TPM attestation keys certified by this CA (PEM or DER certificate file), when
        /// the evidence carries the AK's certificate. Repeatable.
        #[arg(long, value_name = "FILE")]
        tpm_ak_ca: Vec<PathBuf>,
        /// Seconds a session (challenge) stays valid (at most a day).
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400), value_name = "SECONDS")]
        session_ttl: u64,
        /// Open sessions kept at most; when full, a new session replaces the oldest one that is
        /// only challenged (a session that is attesting or attested is never dropped for a
        /// newcomer, who is refused with 503 instead).
        #[arg(long, default_value_t = 100_000)]
        max_sessions: usize,
        /// Seconds a client gets to send a request's headers, and then its body (and that an
        /// idle kept-alive connection stays open).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600), value_name = "SECONDS")]
        request_timeout: u64,
        /// MiB of request bodies held at once over all connections; beyond it requests are
        /// answered 503 until others finish.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536), value_name = "MIB")]
        max_body_in_flight: u64,
        /// Open connections at most; more are closed at once.
        #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        max_connections: u64,
        /// Open connections at most from one peer address.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        max_connections_per_peer: u64,
        /// Seconds an attestation token stays valid (at most a day).
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400), value_name = "SECONDS")]
        token_ttl: u64,
        #[arg(long, env = "VOUCH_LOG", default_value = "info")]
        log_level: String,
    },
    /// Create an admin key pair: admin.key (private, 0600) and admin.pub.
    Keygen {
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Print an admin token signed with the admin private key.
    Token {
        #[arg(long)]
        admin_key: PathBuf,
        /// Validity in seconds (at most an hour, as the KBS accepts).
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=vouch_kbs::token::MAX_ADMIN_LIFETIME))]
        ttl: u64,
        /// The audience of the KBS the token is for (its --admin-audience).
        #[arg(long, default_value = vouch_kbs::token::DEFAULT_ADMIN_AUDIENCE, value_name = "NAME")]
        audience: String,
    },
    /// Store or delete resources.
    #[command(subcommand)]
    Resource(ResourceCmd),
    /// Set the release policy (Rego, package policy, rule allow) for one resource or the default.
    Policy {
        #[arg(long)]
        file: PathBuf,
        /// REPO/TYPE/TAG; omitted: the default policy.
        #[arg(long)]
        resource: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set the reference values document (JSON object, e.g. {"images": ["sha256:..."]}).
    Reference {
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::Args)]
struct TlsArgs {
    /// Serve TLS with this certificate chain (PEM, leaf first); clients use kbss:// URLs.
    /// Without it the KBS speaks plain HTTP: resources are still encrypted to the TEE's key,
    /// but admin tokens are not, so keep a plain KBS on loopback or a trusted network.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(clap::Args)]
struct AdminArgs {
    /// The KBS address: HOST:PORT, or https://HOST:PORT for a KBS serving TLS.
    #[arg(long, default_value = "127.0.0.1:8080")]
    kbs: String,
    /// Trust this CA (PEM) for the KBS's TLS certificate instead of the system's roots
    /// (implies TLS). Repeatable.
    #[arg(long, value_name = "FILE")]
    kbs_ca: Vec<PathBuf>,
    /// The admin private key.
    #[arg(long)]
    admin_key: PathBuf,
    /// The KBS's admin audience (its --admin-audience).
    #[arg(long, default_value = vouch_kbs::token::DEFAULT_ADMIN_AUDIENCE, value_name = "NAME")]
    audience: String,
}

impl AdminArgs {
    fn client(&self) -> Result<KbsClient> {
        vouch_cli_common::kbs_client(&self.kbs, &self.kbs_ca)
    }
}

#[derive(Subcommand)]
enum ResourceCmd {
    /// Store a resource from a file.
    Set {
        /// REPO/TYPE/TAG
        path: String,
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a resource.
    Delete {
        path: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

fn main() -> ExitCode {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = vouch_cli_common::error_line(&e);
            eprintln!("vouch-kbs: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn write_private(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

fn read_hex32(path: &Path, what: &str) -> Result<[u8; 32]> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out)
        .with_context(|| format!("{} is not a {what} (64 hex characters)", path.display()))?;
    Ok(out)
}

fn admin_token(key_path: &Path, ttl: u64, audience: &str) -> Result<String> {
    let seed = zeroize::Zeroizing::new(read_hex32(key_path, "admin private key")?);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let now = vouch_base::clock::unix_secs();
    Ok(token::sign_admin(
        &key,
        &json!({"iss": "vouch-kbs-admin", "aud": audience, "iat": now, "exp": now.saturating_add(ttl)}),
    ))
}

/// TLS for the KBS's listener from a PEM certificate chain and its PEM private key.
fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    let chain = vouch_kbs::tls::certificates(cert)
        .map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", cert.display()))?;
    vouch_kbs::tls::acceptor(chain, key)
        .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", key.display()))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Serve {
            listen,
            database,
            state_dir,
            admin_key,
            metrics_token_file,
            secret_file,
            measurement,
            image,
            allow_sim,
            sim_key,
            allow_sample,
            snp_chain,
            admin_audience,
            tls,
            tpm_ak,
            tpm_ak_ca,
            collateral,
            session_ttl,
            max_sessions,
            request_timeout,
            max_body_in_flight,
            max_connections,
            max_connections_per_peer,
            token_ttl,
            log_level,
        } => {
            for k in &sim_key {
                if k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("--sim-key {k:?} must be 64 hex characters (the sim TEE's public key, as `vouch tee info` shows it)");
                }
            }
            for fp in &tpm_ak {
                let ok = fp.len() == 71
                    && fp.starts_with("sha256:")
                    && fp[7..].bytes().all(|b| b.is_ascii_hexdigit());
                if !ok {
                    bail!("--tpm-ak {fp:?} must be sha256:HEX (64 hex digits), as `vouch tee info` shows it");
                }
            }
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_new(&log_level)
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let admin = match &admin_key {
                Some(path) => Some(
                    ed25519_dalek::VerifyingKey::from_bytes(&read_hex32(path, "admin public key")?)
                        .context("the admin public key is not a valid Ed25519 key")?,
                ),
                None => None,
            };
            let quick = match (secret_file, measurement, image) {
                (Some(secret_file), Some(m), Some(i)) => {
                    let m = m.to_ascii_lowercase();
                    if m.len() != 96 || !m.bytes().all(|b| b.is_ascii_hexdigit()) {
                        bail!("--measurement must be 96 hex characters (a SHA-384 register)");
                    }
                    let hex = i.strip_prefix("sha256:").unwrap_or(&i).to_ascii_lowercase();
                    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        bail!("--image must be sha256:<64 hex> or the 64 hex characters");
                    }
                    fs::metadata(&secret_file)
                        .with_context(|| format!("cannot read {}", secret_file.display()))?;
                    Some(vouch_kbs::QuickMode {
                        secret_file,
                        measurement: m,
                        image: format!("sha256:{hex}"),
                    })
                }
                _ => None,
            };
            if admin.is_none() && quick.is_none() {
                bail!("give --admin-key (to manage resources) or --secret-file with --measurement and --image (quick mode)");
            }
            fs::create_dir_all(&state_dir)
                .with_context(|| format!("cannot create {}", state_dir.display()))?;
            let key_path = state_dir.join("token.key");
            if !key_path.exists() {
                let k = vouch_kbs_client::jwe::generate_key()?;
                write_private(&key_path, hex::encode(k.to_bytes()).as_bytes(), 0o600)?;
            }
            let seed = zeroize::Zeroizing::new(read_hex32(&key_path, "token signing key")?);
            let signing = vouch_kbs::token::Es256::from_scalar(seed.as_slice())
                .context("token.key is not a P-256 key")?;
            let storage: Box<dyn vouch_kbs::store::Storage> = match &database {
                Some(url) => Box::new(vouch_kbs::store::PgStorage::connect(url)?),
                None => Box::new(RedbStorage::open(&state_dir.join("kbs.redb"))?),
            };
            if allow_sim {
                tracing::warn!("--allow-sim: evidence from the sim TEE (NOT hardware-backed) is accepted; development only");
            }
            if allow_sample {
                tracing::warn!("--allow-sample: Confidential Containers' UNSIGNED sample evidence is accepted; anyone can write it; development only");
            }
            let metrics_token = match &metrics_token_file {
                Some(path) => Some(read_metrics_token(path)?),
                None => None,
            };
            let cfg = KbsConfig {
                metrics_token,
                allow_sim,
                allow_sample,
                snp_chain: match &snp_chain {
                    Some(p) => Some(
                        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
                    ),
                    None => None,
                },
                session_ttl: Duration::from_secs(session_ttl),
                token_ttl: Duration::from_secs(token_ttl),
                max_sessions,
                admin_key: admin,
                quick,
                tpm_aks: tpm_ak.iter().map(|f| f.to_ascii_lowercase()).collect(),
                collateral: collateral.store()?,
                tpm_ak_cas: tpm_ak_cas(&tpm_ak, &tpm_ak_ca)?,
                admin_audience,
                sim_keys: sim_key.iter().map(|k| k.to_ascii_lowercase()).collect(),
                limits: vouch_kbs::server::ServeLimits {
                    request_timeout: Duration::from_secs(request_timeout),
                    max_body_in_flight: (max_body_in_flight as usize) << 20,
                    max_connections: max_connections as usize,
                    max_connections_per_peer: max_connections_per_peer as usize,
                    ..Default::default()
                },
            };
            let kbs = Arc::new(Kbs::new(cfg, storage, signing));
            let tls = match (&tls.tls_cert, &tls.tls_key) {
                (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
                _ => None,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
                let addr = listener.local_addr()?;
                tracing::info!(listen = %addr, "vouch-kbs ready");
                // One line on stdout for scripts (useful with --listen 127.0.0.1:0).
                println!("listening on {addr}");
                let shutdown = async {
                    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
                    }
                };
                if tls.is_none() && !addr.ip().is_loopback() {
                    tracing::warn!(listen = %addr, "serving plain HTTP beyond loopback: admin tokens travel in the clear (give --tls-cert and --tls-key)");
                }
                vouch_kbs::server::serve(listener, kbs, tls, shutdown).await;
                Ok::<(), anyhow::Error>(())
            })
        }
        Cmd::Keygen { out_dir } => {
            fs::create_dir_all(&out_dir)?;
            let mut seed = zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(seed.as_mut_slice())
                .context("cannot read the OS random number generator")?;
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            write_private(
                &out_dir.join("admin.key"),
                hex::encode(*seed).as_bytes(),
                0o600,
            )?;
            write_private(
                &out_dir.join("admin.pub"),
                hex::encode(key.verifying_key().as_bytes()).as_bytes(),
                0o644,
            )?;
            println!("{}", out_dir.join("admin.pub").display());
            Ok(())
        }
        Cmd::Token {
            admin_key,
            ttl,
            audience,
        } => {
            println!("{}", admin_token(&admin_key, ttl, &audience)?);
            Ok(())
        }
        Cmd::Resource(ResourceCmd::Set { path, file, admin }) => {
            let p = vouch_cli_common::resource_path(&path)?;
            let value = zeroize::Zeroizing::new(
                fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?,
            );
            let token = admin_token(&admin.admin_key, 60, &admin.audience)?;
            admin.client()?.admin(
                &token,
                "POST",
                &format!("/kbs/v0/resource/{p}"),
                Some(("application/octet-stream", &value)),
            )?;
            Ok(())
        }
        Cmd::Resource(ResourceCmd::Delete { path, admin }) => {
            let p = vouch_cli_common::resource_path(&path)?;
            let token = admin_token(&admin.admin_key, 60, &admin.audience)?;
            admin
                .client()?
                .admin(&token, "DELETE", &format!("/kbs/v0/resource/{p}"), None)?;
            Ok(())
        }
        Cmd::Policy {
            file,
            resource,
            admin,
        } => {
            use base64::Engine as _;
            let rego = fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let mut body =
                json!({"policy": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rego)});
            if let Some(r) = resource {
                body["resource"] = json!(vouch_cli_common::resource_path(&r)?.to_string());
            }
            let token = admin_token(&admin.admin_key, 60, &admin.audience)?;
            let body = body.to_string();
            admin.client()?.admin(
                &token,
                "POST",
                "/kbs/v0/resource-policy",
                Some(("application/json", body.as_bytes())),
            )?;
            Ok(())
        }
        Cmd::Reference { file, admin } => {
            let text = fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            if !serde_json::from_str::<serde_json::Value>(&text)
                .map(|v| v.is_object())
                .unwrap_or(false)
            {
                bail!("{} must hold a JSON object", file.display());
            }
            let token = admin_token(&admin.admin_key, 60, &admin.audience)?;
            admin.client()?.admin(
                &token,
                "POST",
                "/kbs/v0/reference-values",
                Some(("application/json", text.as_bytes())),
            )?;
            Ok(())
        }
    }
}

/// The CAs of `--tpm-ak-ca`; a build without TPM verification refuses TPM trust anchors.
#[cfg(feature = "tpm")]
fn tpm_ak_cas(_aks: &[String], cas: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    vouch_cli_common::ca_certificates(cas)
}

#[cfg(not(feature = "tpm"))]
fn tpm_ak_cas(aks: &[String], cas: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    if !aks.is_empty() || !cas.is_empty() {
        bail!("--tpm-ak and --tpm-ak-ca: this vouch-kbs is built without TPM verification (cargo feature tpm)");
    }
    Ok(Vec::new())
}

/// The metrics token: the file's first line, which must be long enough not to be guessed.
fn read_metrics_token(path: &Path) -> Result<zeroize::Zeroizing<String>> {
    let text = zeroize::Zeroizing::new(
        fs::read_to_string(path)
            .with_context(|| format!("--metrics-token-file {}", path.display()))?,
    );
    let token = text.lines().next().unwrap_or("").trim();
    if token.len() < 16 || token.bytes().any(|b| !b.is_ascii_graphic()) {
        bail!(
            "--metrics-token-file {}: the token must be one line of at least 16 printable characters, without spaces",
            path.display()
        );
    }
    Ok(zeroize::Zeroizing::new(token.to_string()))
}
