//! The verifier of vouch evidence from a TDX guest: the DCAP quote (with its collateral and the
//! TD policy), the binding in its report data, and the CCEL firmware log against RTMR0..2.

use vouch_measure::Digest384;

use crate::verify::{VerifyError, VerifyOptions};
use crate::{QuoteClaims, TeeType, Verifier};

/// TDX evidence: a DCAP quote whose RTMRs are the registers and whose 64-byte report data is the
/// SHA-384 binding followed by zeros.
pub(crate) struct TdxVerifier<'a> {
    pub(crate) opts: &'a VerifyOptions,
}

impl TdxVerifier<'_> {
    /// The quote through DCAP (with the options' collateral) and the TD policy: the claims of a
    /// genuine TD quote, its report data not yet looked at.
    pub(crate) fn dcap(&self, quote: &[u8]) -> Result<super::dcap::DcapClaims, VerifyError> {
        let rejected = |reason: String| VerifyError::Rejected {
            tee: TeeType::Tdx,
            reason,
        };
        let now = self.opts.at.unwrap_or_else(vouch_base::clock::unix_secs);
        let fetched;
        let collateral = match (&self.opts.tdx_collateral, &self.opts.collateral) {
            (Some(c), _) => c,
            (None, Some(store)) => {
                fetched = store
                    .for_quote(quote, now)
                    .map_err(|e| rejected(e.to_string()))?;
                &fetched
            }
            (None, None) => return Err(VerifyError::NoCollateral),
        };
        let claims = super::dcap::verify_quote(quote, collateral, now)
            .map_err(|e| rejected(e.to_string()))?;
        if claims.kind != "tdx" {
            return Err(rejected(format!("the quote is {}, not TDX", claims.kind)));
        }
        self.opts
            .dcap_policy
            .check(&claims)
            .map_err(|e| rejected(e.to_string()))?;
        Ok(claims)
    }
}

impl Verifier for TdxVerifier<'_> {
    fn tee(&self) -> TeeType {
        TeeType::Tdx
    }

    fn verify_quote(&self, quote: &[u8]) -> Result<QuoteClaims, VerifyError> {
        let rejected = |reason: String| VerifyError::Rejected {
            tee: TeeType::Tdx,
            reason,
        };
        let claims = self.dcap(quote)?;
        let digest = |h: &str| -> Result<Digest384, VerifyError> {
            h.parse().map_err(|_| rejected(format!("bad register {h}")))
        };
        let registers = claims
            .rtmrs
            .iter()
            .map(|r| digest(r))
            .collect::<Result<Vec<_>, _>>()?;
        let rd = hex::decode(&claims.report_data).map_err(|_| rejected("report data".into()))?;
        if rd.len() != 64 || rd[48..].iter().any(|b| *b != 0) {
            return Err(rejected(
                "report data is not a SHA-384 binding followed by zeros".into(),
            ));
        }
        let mut bind = [0u8; 48];
        bind.copy_from_slice(&rd[..48]);
        Ok(QuoteClaims {
            tee: TeeType::Tdx,
            platform: claims.platform_claims(),
            registers,
            report_data: Digest384(bind),
            signer: format!(
                "Intel TDX (TCB {}, MRTD {})",
                claims.tcb_status,
                claims.mrtd.unwrap_or_default()
            ),
            tpm_sha256_pcrs: Default::default(),
            tpm_app_pcr: None,
        })
    }

    /// The CCEL must replay to the quoted RTMR0..2.
    fn check_firmware_log(
        &self,
        log: &[u8],
        claims: &QuoteClaims,
    ) -> Result<Option<usize>, VerifyError> {
        check_firmware_log(log, &claims.registers).map(Some)
    }
}

/// Check a TCG2 firmware log against the quoted platform registers (TDX: RTMR0..2).
pub fn check_firmware_log(log: &[u8], registers: &[Digest384]) -> Result<usize, VerifyError> {
    let parsed = crate::tcg::parse(log).map_err(VerifyError::FirmwareLog)?;
    let rtmrs = parsed.rtmrs().map_err(VerifyError::FirmwareLog)?;
    for (index, (replayed, quoted)) in rtmrs.iter().zip(registers).take(3).enumerate() {
        if replayed != quoted {
            return Err(VerifyError::FirmwareReplay {
                index,
                replayed: replayed.to_hex(),
                quoted: quoted.to_hex(),
            });
        }
    }
    Ok(parsed.events.len())
}
