//! Shared pieces of the vouch binaries (`vouch`, `vouchd`, `vouch-kbs`): presentation only; the
//! logic lives in the library crates.

/// An error and its causes on one line, each cause once.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
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
    ) -> anyhow::Result<Option<std::sync::Arc<vouch_tee::collateral::CollateralStore>>> {
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
                Some(vouch_tee::collateral::Pccs::new(
                    url,
                    std::sync::Arc::new(move |u: &str| http_get(u, ca.clone())),
                ))
            }
            None => None,
        };
        Ok(Some(std::sync::Arc::new(
            vouch_tee::collateral::CollateralStore::new(self.collateral_dir.clone(), pccs)?,
        )))
    }
}

/// A blocking GET for collateral, on a thread of its own: callers may be inside an async
/// runtime, where a blocking HTTP client must not run.
fn http_get(
    url: &str,
    ca: Option<reqwest::Certificate>,
) -> Result<vouch_tee::collateral::HttpResponse, String> {
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
        Ok(vouch_tee::collateral::HttpResponse {
            status,
            headers,
            body,
        })
    })
    .join()
    .map_err(|_| "the HTTP client panicked".to_string())?
}

/// CA certificates (DER) from PEM or DER files, for `--tpm-ak-ca`.
pub fn ca_certificates(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    use anyhow::Context;
    let mut out = Vec::new();
    for p in paths {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        out.extend(
            vouch_tee::akcert::parse_certs(&bytes)
                .with_context(|| format!("--tpm-ak-ca {}", p.display()))?,
        );
    }
    Ok(out)
}
