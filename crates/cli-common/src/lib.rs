//! Shared pieces of the `vouch`, `vouch-kbs` and `vouch-kbs-bench` binaries: presentation and
//! argument handling only; the logic lives in the library crates.

/// An error and its causes on one line, each cause once. Untrusted text in it (what a KBS or a
/// registry answered, names from an image) cannot break the line or drive the terminal.
pub fn error_line(e: &anyhow::Error) -> String {
    let e: &(dyn std::error::Error + 'static) = e.as_ref();
    text::field(&vouch_base::error_chain(e)).into_owned()
}

/// Text for terminals: what came from outside (images, evidence, peers) is shown, never obeyed.
pub mod text {
    use std::borrow::Cow;
    use std::fmt::Write as _;

    /// Characters that move the cursor, recolour, erase, or reorder what is shown: C0 and C1
    /// controls, DEL, and Unicode's bidirectional controls (which can make a row read as
    /// another).
    fn hostile(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }

    fn escape(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
        if !s.chars().any(|c| hostile(c) && !keep(c)) {
            return Cow::Borrowed(s);
        }
        let mut out = String::with_capacity(s.len() + 8);
        for c in s.chars() {
            if hostile(c) && !keep(c) {
                // JSON's escape form: inside a JSON string it decodes to the same character.
                let _ = write!(out, "\\u{:04x}", c as u32);
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    }

    /// One value in a line or a table cell: every control character escaped, newlines too.
    pub fn field(s: &str) -> Cow<'_, str> {
        escape(s, |_| false)
    }

    /// Whole output: line breaks and tabs kept, every other control character escaped.
    pub fn output(s: &str) -> Cow<'_, str> {
        escape(s, |c| c == '\n' || c == '\t')
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn controls_are_shown_not_obeyed() {
            assert_eq!(field("plain name:1.0"), "plain name:1.0");
            assert!(matches!(field("plain"), Cow::Borrowed(_)));
            assert_eq!(field("a\x1b[2Kb"), "a\\u001b[2Kb");
            assert_eq!(field("row\nfake row"), "row\\u000afake row");
            assert_eq!(field("x\ry"), "x\\u000dy");
            assert_eq!(field("\u{202e}gnp.exe"), "\\u202egnp.exe");
            assert_eq!(field("\u{9b}31m"), "\\u009b31m");
            assert_eq!(output("a\nb\tc\x07"), "a\nb\tc\\u0007");
            // In JSON output the escape decodes to the very character.
            let json = output("{\"name\":\"\u{202e}x\"}").into_owned();
            let v: serde_json::Value = serde_json::from_str(&json).expect("json");
            assert_eq!(v["name"], "\u{202e}x");
        }
    }
}

/// Where TDX/SGX quote collateral comes from, as `vouch verify` and `vouch-kbs serve` take it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CollateralArgs {
    /// A collateral directory: JSON files in the layout of `--collateral`, found by the quote's
    /// FMSPC. With --pccs, what the PCCS sends is kept there, so later checks are offline.
    #[arg(long, value_name = "DIR")]
    pub collateral_dir: Option<std::path::PathBuf>,
    /// Fetch missing or outdated collateral from this PCCS (Intel's PCCS API v4, e.g.
    /// https://pccs.example:8081).
    #[arg(long, value_name = "URL")]
    pub pccs: Option<String>,
    /// Trust this CA certificate (PEM) for the PCCS's TLS certificate, besides the system's.
    #[arg(long, value_name = "FILE", requires = "pccs")]
    pub pccs_ca: Option<std::path::PathBuf>,
}

impl CollateralArgs {
    /// The collateral store these options describe, if any.
    pub fn store(
        &self,
    ) -> anyhow::Result<Option<std::sync::Arc<vouch_tee::tdx::collateral::CollateralStore>>> {
        use anyhow::Context;
        if self.collateral_dir.is_none() && self.pccs.is_none() {
            return Ok(None);
        }
        let pccs = match &self.pccs {
            Some(url) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    anyhow::bail!("--pccs {url}: give an http:// or https:// URL");
                }
                let ca = match &self.pccs_ca {
                    Some(p) => {
                        let pem = std::fs::read(p)
                            .with_context(|| format!("cannot read {}", p.display()))?;
                        Some(
                            reqwest::Certificate::from_pem(&pem)
                                .context("--pccs-ca is not a PEM certificate")?,
                        )
                    }
                    None => None,
                };
                Some(vouch_tee::tdx::collateral::Pccs::new(
                    url,
                    std::sync::Arc::new(move |u: &str| http_get(u, ca.clone())),
                ))
            }
            None => None,
        };
        Ok(Some(std::sync::Arc::new(
            vouch_tee::tdx::collateral::CollateralStore::new(self.collateral_dir.clone(), pccs)?,
        )))
    }
}

/// A blocking GET for collateral, on a thread of its own: callers may be inside an async
/// runtime, where a blocking HTTP client must not run.
fn http_get(
    url: &str,
    ca: Option<reqwest::Certificate>,
) -> Result<vouch_tee::tdx::collateral::HttpResponse, String> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::limited(5));
        if let Some(cert) = ca {
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| error_line(&e.into()))?;
        let resp = client
            .get(&url)
            .send()
            .map_err(|e| error_line(&e.without_url().into()))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        // Collateral documents are small; a larger answer is not one.
        const LIMIT: u64 = 16 << 20;
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(resp, LIMIT + 1), &mut body)
            .map_err(|e| e.to_string())?;
        if body.len() as u64 > LIMIT {
            return Err(format!("answer larger than {LIMIT} bytes"));
        }
        Ok(vouch_tee::tdx::collateral::HttpResponse {
            status,
            headers,
            body,
        })
    })
    .join()
    .map_err(|_| "the HTTP client panicked".to_string())?
}

/// CA certificates (DER) from PEM or DER files, for `--tpm-ak-ca`.
#[cfg(feature = "tpm")]
pub fn ca_certificates(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    use anyhow::Context;
    let mut out = Vec::new();
    for p in paths {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        out.extend(
            vouch_tee::tpm::akcert::parse_certs(&bytes)
                .with_context(|| format!("--tpm-ak-ca {}", p.display()))?,
        );
    }
    Ok(out)
}

/// A client for `--kbs` (HOST:PORT, or https://HOST:PORT) and `--kbs-ca` (which implies TLS).
pub fn kbs_client(
    kbs: &str,
    cas: &[std::path::PathBuf],
) -> anyhow::Result<vouch_kbs_client::KbsClient> {
    use vouch_kbs_client::{KbsClient, KbsTrust};
    let trust = || KbsTrust::from_ca_files(cas);
    match kbs.strip_prefix("https://") {
        Some(addr) => Ok(KbsClient::new_tls(addr.trim_end_matches('/'), &trust()?)?),
        None if !cas.is_empty() => Ok(KbsClient::new_tls(kbs, &trust()?)?),
        None if kbs.contains("://") => {
            anyhow::bail!("--kbs {kbs:?}: give HOST:PORT or https://HOST:PORT")
        }
        None => Ok(KbsClient::new(kbs)),
    }
}

/// A resource path given as REPO/TYPE/TAG.
pub fn resource_path(p: &str) -> anyhow::Result<vouch_kbs_client::ResourcePath> {
    use anyhow::Context as _;
    vouch_kbs_client::ResourcePath::parse(p)
        .with_context(|| format!("resource {p:?} must be REPO/TYPE/TAG"))
}
