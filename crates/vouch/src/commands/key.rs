//! `vouch key`: signing keys for images.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum KeyCmd {
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
pub(crate) fn key_password(from_stdin: bool) -> Result<zeroize::Zeroizing<String>> {
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

pub(crate) fn key(cmd: KeyCmd) -> Result<u8> {
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
