//! The verifier of vouch evidence from a TPM: the quote by a pinned or certified attestation key,
//! both banks of the application PCR, and the firmware's TCG2 log against PCRs 0-7.

use base64::Engine as _;
use vouch_measure::Digest384;

use crate::verify::{VerifyError, VerifyOptions};
use crate::{QuoteClaims, TeeType, Verifier, VOUCH_REGISTER};

/// TPM evidence: a quote by a pinned attestation key over the platform PCRs (SHA-256 bank) and
/// the application PCR (both banks); the application PCR's SHA-384 bank is register 3.
pub(crate) struct TpmVerifier<'a> {
    pub(crate) opts: &'a VerifyOptions,
}

impl Verifier for TpmVerifier<'_> {
    fn tee(&self) -> TeeType {
        TeeType::Tpm
    }

    fn verify_quote(&self, quote: &[u8]) -> Result<QuoteClaims, VerifyError> {
        use crate::tcg::{ALG_SHA256, ALG_SHA384};
        let malformed = |reason: String| VerifyError::MalformedQuote {
            tee: TeeType::Tpm,
            reason,
        };
        let rejected = |reason: String| VerifyError::Rejected {
            tee: TeeType::Tpm,
            reason,
        };
        vouch_measure::check_unique_keys(quote).map_err(|e| malformed(e.to_string()))?;
        let q: super::TpmQuote =
            serde_json::from_slice(quote).map_err(|e| malformed(e.to_string()))?;
        let b64 = |s: &str, what: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| malformed(format!("{what} is not base64")))
        };
        let ak_bytes = b64(&q.ak, "ak")?;
        let fingerprint = super::ak_fingerprint(&ak_bytes);
        let ak = super::parse_ak(&ak_bytes).map_err(|e| malformed(e.to_string()))?;
        let pinned = self
            .opts
            .tpm_aks
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&fingerprint));
        let mut signer = format!("TPM attestation key {fingerprint}");
        if !pinned {
            // Trusted through its certificate, or not at all.
            let (Some(cert), false) = (&q.ak_cert, self.opts.tpm_ak_cas.is_empty()) else {
                return Err(VerifyError::UntrustedAk { fingerprint });
            };
            let cert = b64(cert, "ak_cert")?;
            let chain = q
                .ak_chain
                .iter()
                .map(|c| b64(c, "ak_chain"))
                .collect::<Result<Vec<_>, _>>()?;
            let now = self.opts.at.unwrap_or_else(vouch_base::clock::unix_secs);
            let path =
                super::akcert::verify_ak_cert(&cert, &chain, &self.opts.tpm_ak_cas, &ak, now)
                    .map_err(|e| rejected(e.to_string()))?;
            signer.push_str(&format!(", certified by {}", path.join(" <- ")));
        }
        let mut banks: std::collections::BTreeMap<u16, std::collections::BTreeMap<u32, Vec<u8>>> =
            Default::default();
        for (bank, values) in &q.pcrs {
            let alg = match bank.as_str() {
                "sha256" => ALG_SHA256,
                "sha384" => ALG_SHA384,
                other => return Err(malformed(format!("PCR bank {other:?}"))),
            };
            for (i, v) in values {
                let v = hex::decode(v).map_err(|_| malformed(format!("PCR {i} is not hex")))?;
                banks.entry(alg).or_default().insert(*i, v);
            }
        }
        let lookup = |alg: u16, i: u32| banks.get(&alg).and_then(|b| b.get(&i)).cloned();
        let claims = super::verify_quote(
            &b64(&q.attest, "attest")?,
            &b64(&q.signature, "signature")?,
            &ak,
            None,
            Some(&lookup),
        )
        .map_err(|e| rejected(e.to_string()))?;
        // Only values the quote covers count.
        let quoted = |bank: &str, i: u32| {
            claims
                .selection
                .iter()
                .any(|(b, idx)| b == bank && idx.contains(&i))
        };
        let pcr = u32::from(q.pcr);
        if !quoted("sha384", pcr) || !quoted("sha256", pcr) {
            return Err(rejected(format!(
                "the quote does not cover PCR {pcr} in both the SHA-256 and SHA-384 banks"
            )));
        }
        let app = lookup(ALG_SHA384, pcr)
            .and_then(|v| <[u8; 48]>::try_from(v.as_slice()).ok())
            .ok_or_else(|| malformed(format!("PCR {pcr} SHA-384 value")))?;
        let nonce = hex::decode(&claims.nonce).unwrap_or_default();
        let report_data = <[u8; 48]>::try_from(nonce.as_slice())
            .map_err(|_| rejected("the qualifying data is not a SHA-384 binding".into()))?;
        let tpm_sha256_pcrs: std::collections::BTreeMap<u32, Vec<u8>> = banks
            .remove(&ALG_SHA256)
            .unwrap_or_default()
            .into_iter()
            .filter(|(i, _)| quoted("sha256", *i))
            .collect();
        let mut registers = vec![Digest384::ZERO; VOUCH_REGISTER];
        registers.push(Digest384(app));
        let platform = (0..8u32)
            .filter_map(|i| {
                tpm_sha256_pcrs
                    .get(&i)
                    .map(|v| (format!("pcr{i}"), hex::encode(v)))
            })
            .collect();
        Ok(QuoteClaims {
            tee: TeeType::Tpm,
            platform,
            registers,
            report_data: Digest384(report_data),
            signer,
            tpm_sha256_pcrs,
            tpm_app_pcr: Some(pcr),
        })
    }

    /// The firmware's TCG2 log must replay to the quoted SHA-256 PCRs 0-7.
    fn check_firmware_log(
        &self,
        log: &[u8],
        claims: &QuoteClaims,
    ) -> Result<Option<usize>, VerifyError> {
        check_tpm_firmware_log(log, &claims.tpm_sha256_pcrs).map(Some)
    }

    /// The application PCR's SHA-256 bank must replay the log too.
    fn check_event_log(
        &self,
        log: &[vouch_measure::Record],
        claims: &QuoteClaims,
    ) -> Result<(), VerifyError> {
        check_tpm_sha256_bank(log, claims)
    }
}

/// The SHA-256 bank of the application PCR must replay too: the AAEL INIT line and then each
/// record extend it with SHA-256 of their SHA-384 digest.
fn check_tpm_sha256_bank(
    log: &[vouch_measure::Record],
    claims: &QuoteClaims,
) -> Result<(), VerifyError> {
    use sha2::{Digest as _, Sha256};
    let pcr = claims.tpm_app_pcr.unwrap_or(23);
    let mut value = [0u8; 32];
    let digests = log.iter().map(|r| r.digest().map_err(VerifyError::Log));
    for d in std::iter::once(Ok(vouch_measure::init_digest())).chain(digests) {
        let bank = super::sha256_bank_digest(&d?);
        value = Sha256::new()
            .chain_update(value)
            .chain_update(bank)
            .finalize()
            .into();
    }
    let quoted = claims
        .tpm_sha256_pcrs
        .get(&pcr)
        .cloned()
        .unwrap_or_default();
    if quoted != value {
        return Err(VerifyError::ReplayMismatch {
            records: log.len(),
            replayed: hex::encode(value),
            index: pcr as usize,
            quoted: hex::encode(quoted),
        });
    }
    Ok(())
}

/// Check a TCG2 firmware log against the quoted SHA-256 platform PCRs of a TPM.
pub fn check_tpm_firmware_log(
    log: &[u8],
    pcrs: &std::collections::BTreeMap<u32, Vec<u8>>,
) -> Result<usize, VerifyError> {
    let parsed = crate::tcg::parse(log).map_err(VerifyError::FirmwareLog)?;
    check_tpm_replay(&parsed, crate::tcg::ALG_SHA256, pcrs)?;
    Ok(parsed.events.len())
}

/// Replay a TCG2 event log in the bank of algorithm `alg` and check every PCR it extends
/// against `pcrs` (that bank's quoted values); the PCRs replayed, in order.
pub fn check_tpm_event_log(
    log: &[u8],
    alg: u16,
    pcrs: &std::collections::BTreeMap<u32, Vec<u8>>,
) -> Result<Vec<u32>, VerifyError> {
    let parsed = crate::tcg::parse(log).map_err(VerifyError::FirmwareLog)?;
    check_tpm_replay(&parsed, alg, pcrs)
}

fn check_tpm_replay(
    parsed: &crate::tcg::TcgLog,
    alg: u16,
    pcrs: &std::collections::BTreeMap<u32, Vec<u8>>,
) -> Result<Vec<u32>, VerifyError> {
    let replayed = parsed.replay(alg).map_err(VerifyError::FirmwareLog)?;
    for (index, value) in &replayed {
        let quoted = pcrs.get(index).ok_or(VerifyError::FirmwareReplay {
            index: *index as usize,
            replayed: hex::encode(value),
            quoted: "(not quoted)".into(),
        })?;
        if quoted != value {
            return Err(VerifyError::FirmwareReplay {
                index: *index as usize,
                replayed: hex::encode(value),
                quoted: hex::encode(quoted),
            });
        }
    }
    Ok(replayed.keys().copied().collect())
}
