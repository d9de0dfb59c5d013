//! The TCB status of a TDX quote that `dcap-qvl` verified and then refused for its TD
//! attributes alone.
//!
//! `dcap-qvl` ends its verification (signatures, certificate chains, CRLs, collateral dates, QE
//! identity, TCB level matching) with a check of the TD attributes that Intel's own QVL does not
//! make: a TD without `SEPT_VE_DISABLE`, or a migratable TD, is refused before any policy runs,
//! and its TCB status is not returned. Azure's TDX guests (TD attributes all zero, under a
//! paravisor) could then never verify. vouch follows Intel's QVL instead and leaves such bits to
//! its policy ([`super::dcap::DcapPolicy`]): when `dcap-qvl`'s only refusal is that final check,
//! every cryptographic step has passed, and the TCB status is computed here, from the same
//! signed collateral, by the rules `dcap-qvl` and Intel's QVL apply (the tests check that it
//! agrees with `dcap-qvl` on every real quote in the corpus).
//!
//! This relies on the attribute check being `dcap-qvl`'s last step: the dependency is pinned to
//! an exact version, and a test flips an attribute bit of a real quote (breaking its signature)
//! and requires the signature refusal, not the attribute one.

use dcap_qvl::quote::{Quote, Report};
use dcap_qvl::tcb_info::{TcbInfo, TcbLevel, TcbStatus, TcbStatusWithAdvisory};

use super::dcap::{DcapError, QuoteCollateralV3};

/// The message `dcap-qvl` refuses these TD attributes with, when it refuses them for nothing
/// vouch's policy would refuse too (reserved bits set are refused by both, with its message).
/// `None`: `dcap-qvl` has no attribute objection (its debug and service-TD checks are turned off
/// by vouch, which decides those in its policy).
pub(crate) fn qvl_attribute_objection(report: &Report) -> Option<&'static str> {
    let attributes = match report {
        Report::TD10(r) => r.td_attributes,
        Report::TD15(r) => r.base.td_attributes,
        Report::TD15Ex(r) => r.base.base.td_attributes,
        Report::SgxEnclave(_) => return None,
    };
    let bits = u64::from_le_bytes(attributes);
    if bits & super::dcap::TD_ATTRIBUTES_RESERVED != 0 {
        return None;
    }
    // dcap-qvl's order: migration before SEPT_VE_DISABLE.
    if bits & (1 << 29) != 0 {
        return Some("TD migration is enabled");
    }
    if bits & (1 << 28) == 0 {
        return Some("SEPT_VE_DISABLE is not enabled");
    }
    None
}

/// The TCB status and advisories of a quote whose signatures and collateral `dcap-qvl` has
/// already verified.
pub(crate) fn tcb_status(
    quote: &Quote,
    collateral: &QuoteCollateralV3,
) -> Result<(String, Vec<String>), DcapError> {
    let verify = |what: &str, e: &dyn std::fmt::Display| DcapError::Verify(format!("{what}: {e}"));
    let mut info: TcbInfo = serde_json::from_str(&collateral.tcb_info)
        .map_err(|e| DcapError::Collateral(format!("TCB info: {e}")))?;
    let is_tdx = info.version >= 3 && info.id == "TDX";
    // Highest level first, as Intel's QVL orders them (and dcap-qvl after it).
    info.tcb_levels.sort_by(|a, b| {
        b.tcb
            .sgx_components
            .cmp(&a.tcb.sgx_components)
            .then_with(|| b.tcb.pce_svn.cmp(&a.tcb.pce_svn))
            .then_with(|| {
                if is_tdx {
                    b.tcb.tdx_components.cmp(&a.tcb.tdx_components)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
    });

    let chain = match &collateral.pck_certificate_chain {
        Some(pem) => crate::pem::certificates(pem.as_bytes()),
        None => dcap_qvl::intel::extract_cert_chain(quote)
            .map_err(|e| verify("PCK certificate chain", &e))?,
    };
    let leaf = chain
        .first()
        .ok_or_else(|| DcapError::Verify("the quote has no PCK certificate".into()))?;
    let pck = dcap_qvl::intel::parse_pck_extension(leaf)
        .map_err(|e| verify("PCK certificate extension", &e))?;

    let level = |tee_tcb_svn: Option<&[u8; 16]>| -> Result<TcbStatusWithAdvisory, DcapError> {
        let mut found: Option<&TcbLevel> = None;
        for l in &info.tcb_levels {
            let short = l
                .shortfalls(&pck.cpu_svn, pck.pce_svn, tee_tcb_svn)
                .map_err(|e| verify("TCB level", &e))?;
            if short.is_empty() {
                found = Some(l);
                break;
            }
        }
        let l = found.ok_or_else(|| DcapError::Verify("no matching TCB level".into()))?;
        let platform = TcbStatusWithAdvisory::new(l.tcb_status, l.advisory_ids.clone());
        let Some(svn) = tee_tcb_svn else {
            return Ok(platform);
        };
        let Some(identity) = info
            .tdx_module_identity(svn)
            .map_err(|e| verify("TDX module identity", &e))?
        else {
            return Ok(platform);
        };
        let module = identity
            .tcb_levels
            .iter()
            .find(|m| m.shortfall(svn).is_none())
            .ok_or_else(|| {
                DcapError::Verify(format!(
                    "TDX module ISVSVN {} is below every TDX module TCB level",
                    svn[0]
                ))
            })?;
        Ok(platform.merge(&TcbStatusWithAdvisory::new(
            module.tcb_status,
            module.advisory_ids.clone(),
        )))
    };
    let (launch, current) = match &quote.report {
        Report::SgxEnclave(_) => (level(None)?, None),
        Report::TD10(r) => (level(Some(&r.tee_tcb_svn))?, None),
        Report::TD15(r) => (
            level(Some(&r.base.tee_tcb_svn))?,
            Some(level(Some(&r.tee_tcb_svn2))?),
        ),
        Report::TD15Ex(r) => (
            level(Some(&r.base.base.tee_tcb_svn))?,
            Some(level(Some(&r.base.tee_tcb_svn2))?),
        ),
    };

    // The QE's level: the first (highest) whose ISVSVN the QE meets. ISVSVN is the u16 at offset
    // 258 of the 384-byte QE report.
    let qe_identity: dcap_qvl::qe_identity::QeIdentity =
        serde_json::from_str(&collateral.qe_identity)
            .map_err(|e| DcapError::Collateral(format!("QE identity: {e}")))?;
    let qe_report = quote.qe_report();
    let qe_svn = u16::from_le_bytes([qe_report[258], qe_report[259]]);
    let qe = qe_identity
        .tcb_levels
        .iter()
        .find(|l| qe_svn >= l.tcb.isvsvn)
        .ok_or_else(|| {
            DcapError::Verify(format!(
                "QE ISVSVN {qe_svn} is below every QE identity TCB level"
            ))
        })?;
    let qe = TcbStatusWithAdvisory::new(qe.tcb_status, qe.advisory_ids.clone());

    let mut status = launch.merge(&qe);
    let current = current.map(|c| c.merge(&qe).status);
    if status.status == TcbStatus::Revoked || current == Some(TcbStatus::Revoked) {
        return Err(DcapError::Verify("TCB status is invalid: Revoked".into()));
    }
    if let Some(current) = current {
        status.status = relaunch(status.status, current);
    }
    Ok((status.status.to_string(), status.advisory_ids))
}

/// A TD 1.5's launch and current statuses combined, as Intel's QVL `checkForRelaunch` does.
fn relaunch(launch: TcbStatus, current: TcbStatus) -> TcbStatus {
    use TcbStatus::*;
    let needs_configuration = |s| {
        matches!(
            s,
            ConfigurationNeeded
                | OutOfDateConfigurationNeeded
                | ConfigurationAndSWHardeningNeeded
                | TDRelaunchAdvisedConfigurationNeeded
        )
    };
    match (launch, current) {
        (
            OutOfDate | OutOfDateConfigurationNeeded,
            UpToDate | SWHardeningNeeded | ConfigurationNeeded | ConfigurationAndSWHardeningNeeded,
        ) => {
            if needs_configuration(launch) || needs_configuration(current) {
                TDRelaunchAdvisedConfigurationNeeded
            } else {
                TDRelaunchAdvised
            }
        }
        _ => launch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouch_testkit::corpus::vectors;

    const AT: u64 = 1_750_400_000;

    /// On every real quote of the corpus, the status computed here is dcap-qvl's.
    #[test]
    fn agrees_with_dcap_qvl_on_the_real_quotes() {
        let Some(v) = vectors() else { return };
        for kind in ["tdx", "sgx"] {
            let (raw, col) = super::super::dcap::tests::real_quote(&v, kind);
            let qvl = dcap_qvl::verify::verify(&raw, &col, AT).expect("dcap-qvl verifies it");
            let quote = Quote::parse(&raw).expect("parse");
            let ours = tcb_status(&quote, &col).expect("status");
            assert_eq!(ours, (qvl.status, qvl.advisory_ids), "{kind}");
        }
    }

    #[test]
    fn a_td_1_5_relaunch_is_advised_as_intel_does() {
        use TcbStatus::*;
        assert_eq!(relaunch(OutOfDate, UpToDate), TDRelaunchAdvised);
        assert_eq!(
            relaunch(OutOfDate, ConfigurationNeeded),
            TDRelaunchAdvisedConfigurationNeeded
        );
        assert_eq!(
            relaunch(OutOfDateConfigurationNeeded, UpToDate),
            TDRelaunchAdvisedConfigurationNeeded
        );
        assert_eq!(relaunch(OutOfDate, OutOfDate), OutOfDate);
        assert_eq!(relaunch(UpToDate, OutOfDate), UpToDate);
    }

    #[test]
    fn the_objection_is_predicted_from_the_attribute_bits() {
        let Some(v) = vectors() else { return };
        let raw = std::fs::read(v.join("tdx/tdx_quote")).expect("quote");
        let quote = Quote::parse(&raw).expect("parse");
        assert_eq!(qvl_attribute_objection(&quote.report), None);
        let with = |bits: u64| {
            let mut q = quote.clone();
            let Report::TD10(r) = &mut q.report else {
                panic!("a TD 1.0 quote")
            };
            r.td_attributes = bits.to_le_bytes();
            q.report
        };
        assert_eq!(
            qvl_attribute_objection(&with(0)),
            Some("SEPT_VE_DISABLE is not enabled")
        );
        assert_eq!(
            qvl_attribute_objection(&with((1 << 28) | (1 << 29))),
            Some("TD migration is enabled")
        );
        // Debug is vouch's policy's to refuse; reserved bits both refuse, with dcap-qvl's error.
        assert_eq!(qvl_attribute_objection(&with((1 << 28) | 1)), None);
        assert_eq!(qvl_attribute_objection(&with(1 << 40)), None);
    }
}
