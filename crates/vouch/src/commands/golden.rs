//! `vouch golden`: signed golden values.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum GoldenCmd {
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

pub(crate) fn registry_opts(reference: &str, insecure: bool) -> vouch_image::registry::PullOptions {
    let registry = vouch_image::registry::registry_host(reference)
        .unwrap_or("docker.io")
        .to_string();
    vouch_image::registry::PullOptions {
        insecure_registries: if insecure { vec![registry] } else { Vec::new() },
        ..Default::default()
    }
}

pub(crate) fn write_out(output: Option<&PathBuf>, text: &str) -> Result<()> {
    match output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display())),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

pub(crate) fn golden(client: &Client, cmd: GoldenCmd) -> Result<u8> {
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
                        format::short_id(&c.id),
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
