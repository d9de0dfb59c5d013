//! Intel TDX and SGX quotes (DCAP), verified with `dcap-qvl`: the PCK chain up to Intel's root,
//! the CRLs, the TCB info and QE identity signatures, the TCB status and advisories, all at a
//! given time, from collateral at hand (offline). A [`DcapPolicy`] then decides which TCB statuses
//! are acceptable, refuses debug TDs and enclaves, can require or refuse TD attribute bits, and
//! can pin MRTD and RTMR golden values.
//!
//! TD attributes are claims, not a verification step: like Intel's QVL, vouch does not refuse a
//! TD without `SEPT_VE_DISABLE` or a migratable TD unless its policy says so (Azure's TDX guests,
//! under a paravisor, have TD attributes all zero). Only the bits the TDX ABI reserves, which a
//! verifier must refuse, are refused always. See [`super::dcap_tcb`] for how this is done on top
//! of `dcap-qvl`, which refuses those bits itself.

pub use dcap_qvl::QuoteCollateralV3;
use serde::Serialize;
use serde_json::Value;

use dcap_qvl::quote::Report;

#[derive(Debug, thiserror::Error)]
pub enum DcapError {
    #[error("collateral is malformed: {0}")]
    Collateral(String),
    #[error("quote is malformed: {0}")]
    Quote(String),
    #[error("quote verification failed: {0}")]
    Verify(String),
    #[error("policy refused the quote: {0}")]
    Policy(String),
}

/// Load collateral in the JSON layout of the vectors and of Intel's PCCS answers put together:
/// PEM chains and JSON documents as strings, CRLs and signatures as hex.
pub fn load_collateral(json: &[u8]) -> Result<QuoteCollateralV3, DcapError> {
    let v: Value =
        serde_json::from_slice(json).map_err(|e| DcapError::Collateral(e.to_string()))?;
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| DcapError::Collateral(format!("missing {k}")))
    };
    let hexf = |k: &str| -> Result<Vec<u8>, DcapError> {
        hex::decode(text(k)?.trim()).map_err(|_| DcapError::Collateral(format!("{k} is not hex")))
    };
    Ok(QuoteCollateralV3 {
        pck_crl_issuer_chain: text("pck_crl_issuer_chain")?,
        root_ca_crl: hexf("root_ca_crl")?,
        pck_crl: hexf("pck_crl")?,
        tcb_info_issuer_chain: text("tcb_info_issuer_chain")?,
        tcb_info: text("tcb_info")?,
        tcb_info_signature: hexf("tcb_info_signature")?,
        qe_identity_issuer_chain: text("qe_identity_issuer_chain")?,
        qe_identity: text("qe_identity")?,
        qe_identity_signature: hexf("qe_identity_signature")?,
        pck_certificate_chain: v
            .get("pck_certificate_chain")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// The named TD attribute bits (TDX Module ABI, `TDATTRIBUTES`), under the names vouch reports
/// them as claims and a policy requires or refuses them by.
pub(crate) const TD_ATTRIBUTES: &[(&str, u32)] = &[
    ("debug", 0),
    ("icssd", 16),
    ("servtd_ext", 17),
    ("lass", 27),
    ("sept_ve_disable", 28),
    ("migratable", 29),
    ("pks", 30),
    ("kl", 31),
    ("tpa", 62),
    ("perfmon", 63),
];

const fn bits(from: u32, to: u32) -> u64 {
    (u64::MAX << from) & (u64::MAX >> (63 - to))
}

/// The TD-under-debug bits (7:0): any of them set means the host can read the TD.
pub(crate) const TD_ATTRIBUTES_TUD: u64 = bits(0, 7);

/// The bits the TDX 1.5 ABI reserves (must be zero) and requires a verifier to refuse.
pub(crate) const TD_ATTRIBUTES_RESERVED: u64 =
    bits(1, 3) | bits(7, 15) | bits(23, 26) | bits(32, 61);

/// The bit of a named TD attribute, or an error listing the names.
pub fn td_attribute(name: &str) -> Result<u32, String> {
    TD_ATTRIBUTES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, bit)| *bit)
        .ok_or_else(|| {
            format!(
                "unknown TD attribute {name:?}: one of {}",
                TD_ATTRIBUTES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// What a verified quote says.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DcapClaims {
    /// `tdx` or `sgx`.
    pub kind: String,
    pub tcb_status: String,
    pub advisories: Vec<String>,
    pub debug: bool,
    pub report_data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mrtd: Option<String>,
    /// RTMR0..3.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rtmrs: Vec<String>,
    /// TDATTRIBUTES as in the report (8 bytes, little-endian, hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub td_attributes: Option<String>,
    /// Each named TD attribute bit, set or not.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub td_attribute_bits: std::collections::BTreeMap<String, bool>,
    /// MRCONFIGID (48 bytes, hex): what the host configured the TD with, e.g. the digest of
    /// Confidential Containers' init-data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr_config_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr_enclave: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr_signer: Option<String>,
}

fn claims_of(report: &Report) -> DcapClaims {
    let r = match report {
        Report::TD10(r) => *r,
        Report::TD15(r) => r.base,
        Report::TD15Ex(r) => r.base.base,
        Report::SgxEnclave(e) => {
            return DcapClaims {
                kind: "sgx".into(),
                tcb_status: String::new(),
                advisories: Vec::new(),
                // ATTRIBUTES.FLAGS bit 1 is DEBUG.
                debug: e.attributes[0] & 0x02 != 0,
                report_data: hex::encode(e.report_data),
                mrtd: None,
                rtmrs: Vec::new(),
                td_attributes: None,
                td_attribute_bits: Default::default(),
                mr_config_id: None,
                mr_enclave: Some(hex::encode(e.mr_enclave)),
                mr_signer: Some(hex::encode(e.mr_signer)),
            };
        }
    };
    DcapClaims {
        kind: "tdx".into(),
        tcb_status: String::new(),
        advisories: Vec::new(),
        // Any TD-under-debug bit (TDATTRIBUTES 7:0; bit 0 is DEBUG) opens the TD to the host.
        debug: u64::from_le_bytes(r.td_attributes) & TD_ATTRIBUTES_TUD != 0,
        report_data: hex::encode(r.report_data),
        mrtd: Some(hex::encode(r.mr_td)),
        rtmrs: [r.rt_mr0, r.rt_mr1, r.rt_mr2, r.rt_mr3]
            .iter()
            .map(hex::encode)
            .collect(),
        td_attributes: Some(hex::encode(r.td_attributes)),
        td_attribute_bits: TD_ATTRIBUTES
            .iter()
            .map(|(name, bit)| {
                let set = u64::from_le_bytes(r.td_attributes) & (1 << bit) != 0;
                (name.to_string(), set)
            })
            .collect(),
        mr_config_id: Some(hex::encode(r.mr_config_id)),
        mr_enclave: None,
        mr_signer: None,
    }
}

impl DcapClaims {
    /// The claims a KBS policy reads (`input.tee.platform`), under the same names as in
    /// `vouch verify --json`: `mrtd`, `rtmr0`..`rtmr2` (RTMR3 is vouch's own, checked by replay),
    /// `td_attributes` (hex), every named TD attribute bit as `"true"`/`"false"`, `mrconfigid`,
    /// `tcb_status` and `advisories` (comma-separated).
    pub fn platform_claims(&self) -> std::collections::BTreeMap<String, String> {
        let mut claims = std::collections::BTreeMap::new();
        if let Some(m) = &self.mrtd {
            claims.insert("mrtd".to_string(), m.to_ascii_lowercase());
        }
        for (i, r) in self.rtmrs.iter().take(3).enumerate() {
            claims.insert(format!("rtmr{i}"), r.to_ascii_lowercase());
        }
        if let Some(a) = &self.td_attributes {
            claims.insert("td_attributes".to_string(), a.to_ascii_lowercase());
        }
        if let Some(m) = &self.mr_config_id {
            claims.insert("mrconfigid".to_string(), m.to_ascii_lowercase());
        }
        for (name, set) in &self.td_attribute_bits {
            claims.insert(name.clone(), set.to_string());
        }
        claims.insert("tcb_status".to_string(), self.tcb_status.clone());
        claims.insert("advisories".to_string(), self.advisories.join(","));
        claims
    }

    fn td_attribute_value(&self) -> Option<u64> {
        let bytes: [u8; 8] = hex::decode(self.td_attributes.as_deref()?)
            .ok()?
            .try_into()
            .ok()?;
        Some(u64::from_le_bytes(bytes))
    }
}

/// Parse a quote without verifying it (to read its registers next to an event log).
pub fn parse_quote(quote: &[u8]) -> Result<DcapClaims, DcapError> {
    let q = dcap_qvl::quote::Quote::parse(quote).map_err(|e| DcapError::Quote(format!("{e:#}")))?;
    Ok(claims_of(&q.report))
}

/// SHA-256 of the DER of Intel's SGX Root CA, the one root every DCAP chain must end in.
pub(crate) const INTEL_SGX_ROOT_CA_SHA256: &str =
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";

/// A chain carried in the quote must end in exactly the pinned Intel root, byte for byte.
fn check_pinned_root(quote: &[u8]) -> Result<(), DcapError> {
    use sha2::Digest as _;
    let certs = crate::pem::certificates(quote);
    // Within the quote, nothing but line breaks and the terminating NUL may follow the chain.
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let extent = quote_extent(quote).unwrap_or(quote.len());
    if let Some(last_end) = quote[..extent].windows(END.len()).rposition(|w| w == END) {
        if quote[last_end + END.len()..extent]
            .iter()
            .any(|b| !matches!(b, b'\n' | b'\r' | 0))
        {
            return Err(DcapError::Quote(
                "unexpected bytes after the certificate chain".into(),
            ));
        }
    }
    if let Some(root) = certs.last() {
        let got = hex::encode(sha2::Sha256::digest(root));
        if got != INTEL_SGX_ROOT_CA_SHA256 {
            return Err(DcapError::Verify(format!(
                "the quote's certificate chain ends in {got}, not the pinned Intel SGX Root CA"
            )));
        }
    }
    Ok(())
}

/// Length of the quote proper: header, report body, signature-data length and signature data.
/// Bytes after it are padding some platforms append, and are not part of the quote.
pub fn quote_extent(quote: &[u8]) -> Option<usize> {
    let version = u16::from_le_bytes([*quote.first()?, *quote.get(1)?]);
    let tee_type = u32::from_le_bytes(quote.get(4..8)?.try_into().ok()?);
    let body = match (version, tee_type) {
        (3, 0) | (4, 0) => 384,
        (4, 0x81) => 584,
        (5, _) => {
            // v5: a body descriptor (type u16, size u32) precedes the body.
            let size = u32::from_le_bytes(quote.get(50..54)?.try_into().ok()?) as usize;
            6 + size
        }
        _ => return None,
    };
    let at = 48 + body;
    let sig_len = u32::from_le_bytes(quote.get(at..at + 4)?.try_into().ok()?) as usize;
    let end = at.checked_add(4)?.checked_add(sig_len)?;
    (end <= quote.len()).then_some(end)
}

/// Verify a quote against collateral at `now` (unix seconds).
pub fn verify_quote(
    quote: &[u8],
    collateral: &QuoteCollateralV3,
    now: u64,
) -> Result<DcapClaims, DcapError> {
    check_pinned_root(quote)?;
    // Debug and service-TD bindings are the policy's to decide (they are claims).
    let verifier = dcap_qvl::verify::QuoteVerifier::new_prod()
        .allow_debug(true)
        .allow_service_td(true);
    match verifier.verify(quote, collateral, now) {
        Ok(verified) => {
            let mut claims = claims_of(&verified.report);
            claims.tcb_status = verified.status;
            claims.advisories = verified.advisory_ids;
            Ok(claims)
        }
        Err(e) => {
            let refusal = format!("{e:#}");
            let parsed = dcap_qvl::quote::Quote::parse(quote)
                .map_err(|_| DcapError::Verify(refusal.clone()))?;
            // dcap-qvl's final TD attribute check, and nothing else, refused it: every
            // signature and the collateral have been verified; the TCB status is computed from
            // the same collateral, and the attributes go to the policy.
            if super::dcap_tcb::qvl_attribute_objection(&parsed.report) == Some(refusal.as_str()) {
                let (status, advisories) = super::dcap_tcb::tcb_status(&parsed, collateral)?;
                let mut claims = claims_of(&parsed.report);
                claims.tcb_status = status;
                claims.advisories = advisories;
                return Ok(claims);
            }
            Err(DcapError::Verify(refusal))
        }
    }
}

/// Which verified quotes are acceptable.
#[derive(Debug, Clone)]
pub struct DcapPolicy {
    pub accepted_tcb: Vec<String>,
    pub allow_debug: bool,
    /// TD attributes (names of [`TD_ATTRIBUTES`]) that must be set, e.g. `sept_ve_disable`.
    pub required_attributes: Vec<String>,
    /// TD attributes that must not be set, e.g. `migratable`.
    pub refused_attributes: Vec<String>,
    pub mrtd: Option<String>,
    /// Golden values for RTMR0..2 (RTMR3 is vouch's own, checked by replay).
    pub rtmrs: [Option<String>; 3],
}

impl Default for DcapPolicy {
    fn default() -> Self {
        DcapPolicy {
            accepted_tcb: vec!["UpToDate".into()],
            allow_debug: false,
            required_attributes: Vec::new(),
            refused_attributes: Vec::new(),
            mrtd: None,
            rtmrs: [None, None, None],
        }
    }
}

impl DcapPolicy {
    pub fn check(&self, c: &DcapClaims) -> Result<(), DcapError> {
        if !self.accepted_tcb.iter().any(|s| s == &c.tcb_status) {
            return Err(DcapError::Policy(format!(
                "TCB status {} (advisories: {}) is not one of {}",
                c.tcb_status,
                if c.advisories.is_empty() {
                    "none".to_string()
                } else {
                    c.advisories.join(", ")
                },
                self.accepted_tcb.join(", ")
            )));
        }
        if c.debug && !self.allow_debug {
            return Err(DcapError::Policy(match &c.td_attributes {
                Some(a) => format!("the TD is in debug mode (TD attributes {a})"),
                None => "the enclave is in debug mode".to_string(),
            }));
        }
        self.check_td_attributes(c)?;
        if let (Some(want), Some(got)) = (&self.mrtd, &c.mrtd) {
            if !want.eq_ignore_ascii_case(got) {
                return Err(DcapError::Policy(format!(
                    "MRTD is {got}, the golden value is {want}"
                )));
            }
        }
        for (i, want) in self.rtmrs.iter().enumerate() {
            if let (Some(want), Some(got)) = (want, c.rtmrs.get(i)) {
                if !want.eq_ignore_ascii_case(got) {
                    return Err(DcapError::Policy(format!(
                        "RTMR{i} is {got}, the golden value is {want}"
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_td_attributes(&self, c: &DcapClaims) -> Result<(), DcapError> {
        let Some(value) = c.td_attribute_value() else {
            if let Some(name) = self.required_attributes.first() {
                return Err(DcapError::Policy(format!(
                    "the TD attribute {name} is required, and a {} quote has no TD attributes",
                    c.kind
                )));
            }
            return Ok(());
        };
        let hex = c.td_attributes.as_deref().unwrap_or_default();
        let reserved = value & TD_ATTRIBUTES_RESERVED;
        if reserved != 0 {
            return Err(DcapError::Policy(format!(
                "TD attributes {hex} set reserved bits {reserved:#x}, which the TDX ABI requires \
                 a verifier to refuse"
            )));
        }
        let set = |name: &str| -> Result<bool, DcapError> {
            let bit = td_attribute(name).map_err(DcapError::Policy)?;
            Ok(value & (1 << bit) != 0)
        };
        for name in &self.required_attributes {
            if !set(name)? {
                return Err(DcapError::Policy(format!(
                    "the TD attribute {name} is required and not set (TD attributes {hex})"
                )));
            }
        }
        for name in &self.refused_attributes {
            if set(name)? {
                return Err(DcapError::Policy(format!(
                    "the TD attribute {name} is set, and the policy refuses it (TD attributes \
                     {hex})"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use vouch_testkit::corpus::vectors;

    const AT: u64 = 1_750_400_000;

    /// A real quote of the corpus (`tdx` or `sgx`) and its collateral.
    pub(crate) fn real_quote(v: &std::path::Path, kind: &str) -> (Vec<u8>, QuoteCollateralV3) {
        let quote = std::fs::read(v.join(format!("{kind}/{kind}_quote"))).expect("quote");
        let col = std::fs::read(v.join(format!("{kind}/{kind}_quote_collateral.json")))
            .expect("collateral file");
        (quote, load_collateral(&col).expect("collateral"))
    }

    #[test]
    fn tdx_quote_verifies_up_to_date_within_its_collateral_window_only() {
        let Some(v) = vectors() else { return };
        let (quote, col) = real_quote(&v, "tdx");
        let c = verify_quote(&quote, &col, AT).expect("verify");
        assert_eq!(c.kind, "tdx");
        assert_eq!(c.tcb_status, "UpToDate");
        assert!(c.advisories.is_empty());
        assert_eq!(c.mrtd.as_deref(), Some("91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"));
        assert_eq!(c.rtmrs[3], "0".repeat(96));
        assert_eq!(c.td_attributes.as_deref(), Some("0000001000000000"));
        assert!(!c.debug);
        DcapPolicy::default()
            .check(&c)
            .expect("default policy accepts it");
        // Outside the collateral window: before and after.
        assert!(verify_quote(&quote, &col, 1_750_000_000).is_err());
        assert!(verify_quote(&quote, &col, 1_760_000_000).is_err());
        // Golden values.
        let pinned = DcapPolicy {
            mrtd: Some("00".repeat(48)),
            ..Default::default()
        };
        assert!(pinned
            .check(&c)
            .expect_err("wrong MRTD")
            .to_string()
            .contains("MRTD"));
    }

    /// TD attributes are claims a policy judges: the real quote (SEPT_VE_DISABLE set) passes the
    /// default policy, and a policy can require or refuse any named bit; debug and reserved bits
    /// are refused by default, with the bits named.
    #[test]
    fn td_attributes_are_claims_a_policy_requires_or_refuses() {
        let Some(v) = vectors() else { return };
        let (quote, col) = real_quote(&v, "tdx");
        let c = verify_quote(&quote, &col, AT).expect("verify");
        assert!(c.td_attribute_bits["sept_ve_disable"]);
        assert_eq!(c.td_attribute_bits.len(), TD_ATTRIBUTES.len());
        assert!(c
            .td_attribute_bits
            .iter()
            .all(|(name, set)| *set == (name == "sept_ve_disable")));
        let require = |names: &[&str]| DcapPolicy {
            required_attributes: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        };
        require(&["sept_ve_disable"]).check(&c).expect("it is set");
        let err = require(&["pks"]).check(&c).expect_err("pks is not set");
        assert_eq!(
            err.to_string(),
            "policy refused the quote: the TD attribute pks is required and not set \
             (TD attributes 0000001000000000)"
        );
        let refuse = DcapPolicy {
            refused_attributes: vec!["sept_ve_disable".into()],
            ..Default::default()
        };
        assert!(refuse
            .check(&c)
            .expect_err("refused")
            .to_string()
            .contains("the TD attribute sept_ve_disable is set, and the policy refuses it"));

        // Claims as an Azure TD shows them (all zero) pass the default policy and fail one
        // that requires SEPT_VE_DISABLE; debug and reserved bits are refused by default.
        let with = |bits: u64| {
            let mut c = c.clone();
            c.td_attributes = Some(hex::encode(bits.to_le_bytes()));
            c.debug = bits & TD_ATTRIBUTES_TUD != 0;
            c
        };
        DcapPolicy::default()
            .check(&with(0))
            .expect("all-zero attributes");
        assert!(require(&["sept_ve_disable"])
            .check(&with(0))
            .expect_err("required")
            .to_string()
            .contains("sept_ve_disable is required and not set"));
        DcapPolicy::default()
            .check(&with((1 << 29) | (1 << 28)))
            .expect("migratable is a claim by default");
        let err = DcapPolicy::default()
            .check(&with((1 << 28) | 1))
            .expect_err("debug");
        assert!(
            err.to_string()
                .contains("the TD is in debug mode (TD attributes 0100001000000000)"),
            "{err}"
        );
        let err = DcapPolicy::default()
            .check(&with((1 << 28) | (1 << 40)))
            .expect_err("reserved");
        assert!(
            err.to_string().contains("set reserved bits 0x10000000000"),
            "{err}"
        );
        // Profiling bits (TUD 6:4) open the TD like DEBUG does.
        assert!(DcapPolicy::default()
            .check(&with((1 << 28) | (1 << 4)))
            .is_err());
        assert!(td_attribute("SEPT_VE_DISABLE").is_ok());
        assert!(td_attribute("nosuch")
            .expect_err("unknown")
            .starts_with("unknown TD attribute \"nosuch\": one of debug, icssd,"));
    }

    /// The TD attribute bits are covered by the quote's signature: a quote whose SEPT_VE_DISABLE
    /// bit is cleared is refused for its signature, before (and never by way of) the attribute
    /// path that computes the TCB status itself.
    #[test]
    fn a_cleared_attribute_bit_is_refused_for_the_signature() {
        let Some(v) = vectors() else { return };
        let (mut quote, col) = real_quote(&v, "tdx");
        // TD 1.0 body at 48: TEE_TCB_SVN 16, MRSEAM 48, MRSIGNERSEAM 48, SEAMATTRIBUTES 8, then
        // TDATTRIBUTES; bit 28 is in its byte 3.
        let at = 48 + 16 + 48 + 48 + 8 + 3;
        assert_eq!(quote[at], 0x10);
        quote[at] = 0;
        let err = verify_quote(&quote, &col, AT).expect_err("signature broken");
        assert_eq!(
            err.to_string(),
            "quote verification failed: ISV enclave report signature is invalid"
        );
        // And with collateral out of date as well, the collateral is what is refused first.
        let err = verify_quote(&quote, &col, 1_760_000_000).expect_err("expired");
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn sgx_quote_reports_its_status_and_advisories() {
        let Some(v) = vectors() else { return };
        let (quote, col) = real_quote(&v, "sgx");
        let c = verify_quote(&quote, &col, AT).expect("verify");
        assert_eq!(c.kind, "sgx");
        assert_eq!(c.tcb_status, "ConfigurationAndSWHardeningNeeded");
        assert_eq!(c.advisories, ["INTEL-SA-00289", "INTEL-SA-00615"]);
        assert_eq!(
            c.mr_enclave.as_deref(),
            Some("33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb")
        );
        let err = DcapPolicy::default().check(&c).expect_err("not UpToDate");
        assert!(err.to_string().contains("INTEL-SA-00615"), "{err}");
    }

    #[test]
    fn flipped_quote_and_collateral_bytes_fail() {
        let Some(v) = vectors() else { return };
        let (quote, col) = real_quote(&v, "tdx");
        // Every byte of the quote proper (its trailing zero padding is not part of it).
        let extent = quote_extent(&quote).expect("extent");
        assert_eq!(extent, 4936);
        for i in (0..extent).step_by(41).chain([extent - 1]) {
            let mut q = quote.clone();
            q[i] ^= 0x01;
            assert!(
                verify_quote(&q, &col, AT).is_err(),
                "quote byte {i} flipped and accepted"
            );
        }
        // A flipped byte in the signed TCB info or in a signature.
        let mut c = col.clone();
        c.tcb_info = c.tcb_info.replacen("UpToDate", "UpToDatf", 1);
        assert!(verify_quote(&quote, &c, AT).is_err());
        let mut c = col.clone();
        c.qe_identity_signature[5] ^= 1;
        assert!(verify_quote(&quote, &c, AT).is_err());
        assert!(matches!(
            load_collateral(b"{}"),
            Err(DcapError::Collateral(_))
        ));
    }

    #[test]
    fn pinned_root_is_intels() {
        let Some(v) = vectors() else { return };
        let pem = std::fs::read(v.join("roots/Intel_SGX_Root_CA.pem")).expect("root");
        let certs = crate::pem::certificates(&pem);
        use sha2::Digest as _;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&certs[0])),
            INTEL_SGX_ROOT_CA_SHA256
        );
    }

    #[test]
    fn cos_ccel_replays_to_the_rtmrs_of_its_quote() {
        let Some(v) = vectors() else { return };
        let claims =
            parse_quote(&std::fs::read(v.join("ccel/cos-113-tdx-quote.dat")).expect("quote"))
                .expect("parse");
        let log = crate::tcg::parse(&std::fs::read(v.join("ccel/ccel_data.dat")).expect("ccel"))
            .expect("ccel");
        let replayed: Vec<String> = log
            .rtmrs()
            .expect("replay")
            .iter()
            .map(|d| d.to_hex())
            .collect();
        assert_eq!(replayed, claims.rtmrs);
    }
}
