//! `vouch image` and `vouch pull`: images into vouchd.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum ImageCmd {
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

#[derive(ClapArgs)]
pub(crate) struct PullArgs {
    /// [REGISTRY/]REPOSITORY[:TAG|@DIGEST]
    pub(crate) reference: String,
    /// Reach the registry over plain HTTP (a loopback or trusted-network registry).
    #[arg(long)]
    pub(crate) insecure_registry: bool,
    /// Registry user name (the password is read from VOUCH_REGISTRY_PASSWORD or stdin).
    #[arg(short, long)]
    pub(crate) username: Option<String>,
    /// Read the registry password from stdin.
    #[arg(long, requires = "username")]
    pub(crate) password_stdin: bool,
    #[arg(short, long)]
    pub(crate) quiet: bool,
    #[arg(long)]
    pub(crate) json: bool,
    /// Report on stderr (when `vouch run` pulls, stdout is the container's).
    #[arg(skip)]
    pub(crate) report_on_stderr: bool,
}

pub(crate) fn pull(client: &Client, args: PullArgs) -> Result<u8> {
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

/// Send an OCI layout directory (as a tar made on the fly), an archive file, or stdin to vouchd.
pub(crate) fn upload_images(
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

pub(crate) fn image(client: &Client, cmd: ImageCmd) -> Result<u8> {
    match cmd {
        ImageCmd::Ls { quiet, json } => {
            let list: Vec<ImageSummary> = client.call("GET", "/v1/images", None::<&()>)?;
            print_list(
                &list,
                Listing { json, quiet },
                |i| &i.id,
                format::image_table,
            )
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
