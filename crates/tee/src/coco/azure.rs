//! Azure confidential VMs, as Confidential Containers' `az-snp-vtpm` and `az-tdx-vtpm`
//! attesters report them: a quote of the VM's vTPM, and the HCL report of Azure's paravisor.
//!
//! The paravisor (the HCL, at VMPL 0 of an SNP guest or in the TD of a TDX one) asks the
//! hardware for a report whose report data is the SHA-256 of a JSON document it writes: the
//! vTPM's attestation key (`HCLAkPub`), the VM's configuration and, in evidence version 2, the
//! caller's `user-data`. So the chain of trust is: AMD (the VCEK, under a pinned ARK) or Intel
//! (DCAP) signs the report; the report commits to that document; the document names the AK; the
//! AK signs the TPM quote, whose qualifying data is CoCo's binding. No AK pin is needed: the
//! hardware certifies the key.
//!
//! What the hardware measures is the paravisor, not the guest: the guest's boot is in the vTPM's
//! PCRs (claims `pcr0`..`pcr23`, those the quote covers), the init-data in PCR 8.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use sha2::Digest as _;
use vouch_measure::Digest384;

use super::verify::tpm::{check_init_data, check_quote, QuoteSignature, INIT_DATA_PCR};
use super::verify::{format_error, InitDataDigest};
use crate::verify::{EvidenceFormat, InitDataClaim, Verdict};
use crate::{TeeType, VerifyError, VerifyOptions};

/// The hardware report inside an HCL report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HwReport {
    Snp,
    Tdx,
}

impl HwReport {
    fn tee(self) -> TeeType {
        match self {
            HwReport::Snp => TeeType::Snp,
            HwReport::Tdx => TeeType::Tdx,
        }
    }

    fn name(self) -> &'static str {
        match self {
            HwReport::Snp => "az-snp-vtpm",
            HwReport::Tdx => "az-tdx-vtpm",
        }
    }
}

/// `HCLA`, little-endian: the HCL report's signature.
const HCL_SIGNATURE: u32 = 0x414c_4348;
/// The attestation header before the hardware report.
const HCL_HEADER_LEN: usize = 32;
/// Room for the hardware report: an SNP report (1184 bytes) or a TD report (1024), padded.
const HW_REPORT_LEN: usize = 1184;
/// The IGVM request data after it: size, version, report type, hash type, variable data size.
const IGVM_HEADER_LEN: usize = 20;
const REPORT_TYPE_SNP: u32 = 2;
const REPORT_TYPE_TDX: u32 = 4;
/// The hash of the variable data in the hardware report: SHA-256 (IGVM's hash type 1).
const HASH_TYPE_SHA256: u32 = 1;
/// An SNP report's length in the hardware report slot (all of it).
const SNP_REPORT_LEN: usize = HW_REPORT_LEN;
/// The TD report's length in the hardware report slot.
const TD_REPORT_LEN: usize = 1024;
/// The key id of the vTPM's attestation key in the variable data.
const AK_KEY_ID: &str = "HCLAkPub";

/// An HCL report, parsed.
#[derive(Debug)]
pub(crate) struct Hcl<'a> {
    pub(crate) kind: HwReport,
    /// The SNP report (1184 bytes) or the TD report (1024 bytes; its quote is what is
    /// verified).
    #[cfg_attr(not(feature = "snp"), allow(dead_code))]
    pub(crate) hw_report: &'a [u8],
    /// The JSON document whose SHA-256 the hardware report's report data starts with.
    pub(crate) var_data: &'a [u8],
}

pub(crate) fn parse_hcl(bytes: &[u8]) -> Result<Hcl<'_>, String> {
    let u32_at = |at: usize| -> Result<u32, String> {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("the HCL report is {} bytes: truncated", bytes.len()))
    };
    if u32_at(0)? != HCL_SIGNATURE {
        return Err("the HCL report does not start with its signature HCLA".into());
    }
    let igvm = HCL_HEADER_LEN + HW_REPORT_LEN;
    let kind = match u32_at(igvm + 8)? {
        REPORT_TYPE_SNP => HwReport::Snp,
        REPORT_TYPE_TDX => HwReport::Tdx,
        other => {
            return Err(format!(
                "the HCL report's hardware report is of type {other}, neither SNP (2) nor TDX (4)"
            ))
        }
    };
    let hash_type = u32_at(igvm + 12)?;
    if hash_type != HASH_TYPE_SHA256 {
        return Err(format!(
            "the HCL report hashes its variable data with IGVM hash type {hash_type}; only SHA-256 (1) is supported"
        ));
    }
    let size = u32_at(igvm + 16)? as usize;
    let start = igvm + IGVM_HEADER_LEN;
    let var_data = start
        .checked_add(size)
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(|| {
            format!(
                "the HCL report says its variable data is {size} bytes, past its end ({} bytes)",
                bytes.len()
            )
        })?;
    let hw_len = match kind {
        HwReport::Snp => SNP_REPORT_LEN,
        HwReport::Tdx => TD_REPORT_LEN,
    };
    Ok(Hcl {
        kind,
        hw_report: &bytes[HCL_HEADER_LEN..HCL_HEADER_LEN + hw_len],
        var_data,
    })
}

/// The variable data's parts vouch reads.
#[derive(Debug)]
pub(crate) struct VarData {
    pub(crate) ak: crate::tpm::AkPublic,
    /// `user-data` (hex in the document), when present.
    pub(crate) user_data: Option<Vec<u8>>,
}

pub(crate) fn parse_var_data(var_data: &[u8]) -> Result<VarData, String> {
    #[derive(Deserialize)]
    struct Doc {
        keys: Vec<Value>,
        #[serde(rename = "user-data", default)]
        user_data: Option<String>,
    }
    let doc: Doc = serde_json::from_slice(var_data)
        .map_err(|e| format!("the HCL report's variable data is not its JSON document: {e}"))?;
    let mut aks = doc
        .keys
        .iter()
        .filter(|k| k.get("kid").and_then(Value::as_str) == Some(AK_KEY_ID));
    let jwk = aks
        .next()
        .ok_or("the HCL report's variable data names no attestation key (kid HCLAkPub)")?;
    if aks.next().is_some() {
        return Err(
            "the HCL report's variable data names two attestation keys (kid HCLAkPub)".into(),
        );
    }
    if jwk.get("kty").and_then(Value::as_str) != Some("RSA") {
        return Err("the vTPM attestation key (HCLAkPub) is not an RSA key".into());
    }
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let text = jwk
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the vTPM attestation key (HCLAkPub) has no {name:?}"))?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('=').as_bytes())
            .map_err(|_| format!("the vTPM attestation key's {name:?} is not base64url"))
    };
    let n = field("n")?;
    let e = field("e")?;
    let n = match n.split_first() {
        Some((0, tail)) => tail.to_vec(),
        _ => n,
    };
    let exponent = (e.len() <= 4)
        .then(|| e.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
        .filter(|e| *e > 1)
        .ok_or("the vTPM attestation key's exponent is not a small integer above 1")?;
    if !(2048..=4096).contains(&(n.len() * 8)) {
        return Err(format!(
            "the vTPM attestation key is {} bits, not 2048 to 4096",
            n.len() * 8
        ));
    }
    let user_data = doc
        .user_data
        .map(|h| hex::decode(&h).map_err(|_| "the variable data's user-data is not hex"))
        .transpose()?;
    Ok(VarData {
        ak: crate::tpm::AkPublic {
            modulus: n,
            exponent,
            scheme_hash: crate::tcg::ALG_SHA256,
        },
        user_data,
    })
}

/// The evidence, version 1 or 2 (version 2 also binds the caller's data into the HCL report).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Evidence {
    version: u32,
    tpm_quote: Quote,
    /// base64url.
    hcl_report: String,
    /// SNP: the VCEK, DER, base64url.
    #[serde(default)]
    #[cfg_attr(not(feature = "snp"), allow(dead_code))]
    vcek: Option<String>,
    /// TDX: the TD quote, base64url.
    #[serde(default)]
    #[cfg_attr(not(feature = "tdx"), allow(dead_code))]
    td_quote: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Quote {
    /// The bare RSASSA signature, hex.
    pub(crate) signature: String,
    /// `TPMS_ATTEST`, hex.
    pub(crate) message: String,
    /// The SHA-256 bank, PCR 0 first, hex.
    pub(crate) pcrs: Vec<String>,
}

fn base64url(tee: TeeType, what: &str, text: &str) -> Result<Vec<u8>, VerifyError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('=').as_bytes())
        .map_err(|_| format_error(tee, format!("{what} is not base64url")))
}

/// Verify Azure vTPM evidence whose hardware report is `kind`, bound to `expected` (CoCo's
/// runtime-data digest, or any report data a caller binds).
pub(crate) fn verify_azure(
    kind: HwReport,
    evidence: &Value,
    expected: &[u8],
    runtime_data: &Value,
    init_data: Option<&InitDataDigest>,
    opts: &VerifyOptions,
) -> Result<Verdict, VerifyError> {
    let tee = kind.tee();
    let bad = |reason: String| format_error(tee, format!("{}: {reason}", kind.name()));
    if evidence.get("version").is_none() && evidence.is_object() {
        return Err(bad(
            "evidence without a version (the first, bincode form) is not supported: send version 1 or 2 (guest-components' attesters send 2)".into(),
        ));
    }
    let ev: Evidence = serde_json::from_value(evidence.clone()).map_err(|e| bad(e.to_string()))?;
    if !(1..=2).contains(&ev.version) {
        return Err(bad(format!(
            "evidence version {} is not supported (1 and 2 are)",
            ev.version
        )));
    }
    let hcl_bytes = base64url(tee, "hcl_report", &ev.hcl_report)?;
    let hcl = parse_hcl(&hcl_bytes).map_err(bad)?;
    if hcl.kind != kind {
        return Err(bad(format!(
            "the HCL report holds a {:?} report",
            hcl.kind.tee()
        )));
    }
    // The variable data must name an attestation key (read first: it is cheap to refuse).
    let var = parse_var_data(hcl.var_data).map_err(bad)?;
    // 1. The hardware report: genuine, and committing to the variable data.
    let var_data_digest = sha2::Sha256::digest(hcl.var_data);
    let (platform, registers, signer) = match kind {
        HwReport::Snp => snp_report(&ev, &hcl, &var_data_digest, opts)?,
        HwReport::Tdx => tdx_quote(&ev, &var_data_digest, opts)?,
    };
    // 2. The AK it names signs the quote, whose qualifying data is the binding.
    let vtpm = check_vtpm(kind, var, &ev.tpm_quote, ev.version, expected, init_data)?;
    let mut platform = platform;
    for (i, v) in &vtpm.pcrs {
        platform.insert(format!("pcr{i}"), hex::encode(v));
    }
    platform.insert("paravisor".into(), "azure-hcl".into());
    platform.insert("evidence_version".into(), ev.version.to_string());
    Ok(Verdict {
        tee,
        format: EvidenceFormat::Coco,
        nonce_required: false,
        nonce_checked: false,
        hardware: true,
        signer: format!(
            "{signer}, through Azure's vTPM attestation key {}",
            vtpm.ak_fingerprint
        ),
        registers,
        records: 0,
        runtime_data: runtime_data.clone(),
        platform,
        containers: Vec::new(),
        requester: None,
        events: Vec::new(),
        init_data: init_data.map(|d| InitDataClaim::of(d, true)),
        warnings: Vec::new(),
        firmware_log_events: None,
    })
}

/// What the vTPM part of the evidence says.
#[derive(Debug)]
pub(crate) struct Vtpm {
    /// The AK's fingerprint as CoCo's `tpm` form pins it (SHA-256 of its SPKI).
    pub(crate) ak_fingerprint: String,
    /// The SHA-256 PCRs the quote covers, by index.
    pub(crate) pcrs: std::collections::BTreeMap<usize, Vec<u8>>,
}

/// The vTPM part, once the hardware report has certified the variable data: the AK it names signs the
/// quote, whose qualifying data is `expected`; version 2's `user-data` starts with `expected`
/// too; the init-data is in PCR 8.
pub(crate) fn check_vtpm(
    kind: HwReport,
    var: VarData,
    quote: &Quote,
    version: u32,
    expected: &[u8],
    init_data: Option<&InitDataDigest>,
) -> Result<Vtpm, VerifyError> {
    let bad = |reason: String| format_error(kind.tee(), format!("{}: {reason}", kind.name()));
    let pcrs = quote
        .pcrs
        .iter()
        .enumerate()
        .map(|(i, h)| {
            hex::decode(h)
                .ok()
                .filter(|v| v.len() == 32)
                .ok_or_else(|| bad(format!("PCR {i} is not 32 bytes of hex")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let hexfield = |what: &str, text: &str| {
        hex::decode(text).map_err(|_| bad(format!("tpm_quote.{what} is not hex")))
    };
    let message = hexfield("message", &quote.message)?;
    let signature = hexfield("signature", &quote.signature)?;
    let quoted = check_quote(
        &message,
        QuoteSignature::RsassaSha256(&signature),
        &var.ak,
        expected,
        &pcrs,
    )?;
    if version >= 2 {
        let user = var.user_data.unwrap_or_default();
        if user.get(..expected.len()) != Some(expected) {
            return Err(VerifyError::ReportDataMismatch {
                computed: hex::encode(expected),
                quoted: hex::encode(&user),
            });
        }
    }
    // Only the values the quote covers count.
    let pcrs: std::collections::BTreeMap<usize, Vec<u8>> = pcrs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| quoted.contains(&(*i as u32)))
        .collect();
    if let Some(d) = init_data {
        check_init_data(d, pcrs.get(&INIT_DATA_PCR))?;
    }
    Ok(Vtpm {
        ak_fingerprint: crate::tpm::spki_fingerprint(&crate::tpm::ak_spki(&var.ak)),
        pcrs,
    })
}

type Hardware = (
    std::collections::BTreeMap<String, String>,
    Vec<Digest384>,
    String,
);

/// The report data a paravisor asks for: the variable data's SHA-256, then zeros.
fn commits_to(report_data: &[u8], digest: &[u8]) -> bool {
    report_data.len() >= 32 && report_data[..32] == *digest
}

#[cfg(feature = "snp")]
fn snp_report(
    ev: &Evidence,
    hcl: &Hcl<'_>,
    digest: &[u8],
    opts: &VerifyOptions,
) -> Result<Hardware, VerifyError> {
    let tee = TeeType::Snp;
    let vcek = ev
        .vcek
        .as_deref()
        .ok_or_else(|| format_error(tee, "az-snp-vtpm: the evidence has no vcek"))?;
    let vcek = base64url(tee, "vcek", vcek)?;
    let chain = opts.snp_chain.as_deref().unwrap_or_default();
    if chain.is_empty() {
        return Err(VerifyError::Rejected {
            tee,
            reason: "Azure's SNP evidence carries the VCEK alone: give the verifier AMD's ASK and ARK (vouch-kbs --snp-chain FILE, from AMD's KDS /vcek/v1/Milan/cert_chain)".into(),
        });
    }
    let claims = super::verify::snp::check_signed_report(hcl.hw_report, &vcek, chain, opts)?;
    // The paravisor's report: it runs at VMPL 0, the guest above it.
    if claims.vmpl != 0 {
        return Err(VerifyError::Rejected {
            tee,
            reason: format!(
                "the HCL report's SNP report was made at VMPL {}, not the paravisor's VMPL 0",
                claims.vmpl
            ),
        });
    }
    let rd = hex::decode(&claims.report_data).unwrap_or_default();
    if !commits_to(&rd, digest) {
        return Err(VerifyError::Rejected {
            tee,
            reason: format!(
                "the SNP report's report data {} does not start with the SHA-256 {} of the HCL report's variable data",
                claims.report_data,
                hex::encode(digest)
            ),
        });
    }
    Ok((
        claims.platform_claims(),
        Vec::new(),
        format!(
            "AMD SEV-SNP {} (reported TCB {})",
            claims.signing_key.to_uppercase(),
            claims.reported_tcb
        ),
    ))
}

#[cfg(not(feature = "snp"))]
fn snp_report(
    _: &Evidence,
    _: &Hcl<'_>,
    _: &[u8],
    _: &VerifyOptions,
) -> Result<Hardware, VerifyError> {
    Err(VerifyError::UnsupportedTee(TeeType::Snp))
}

#[cfg(feature = "tdx")]
fn tdx_quote(ev: &Evidence, digest: &[u8], opts: &VerifyOptions) -> Result<Hardware, VerifyError> {
    let tee = TeeType::Tdx;
    let quote = ev
        .td_quote
        .as_deref()
        .ok_or_else(|| format_error(tee, "az-tdx-vtpm: the evidence has no td_quote"))?;
    let quote = base64url(tee, "td_quote", quote)?;
    let claims = crate::tdx::TdxVerifier { opts }.dcap(&quote)?;
    let rd = hex::decode(&claims.report_data).unwrap_or_default();
    if !commits_to(&rd, digest) {
        return Err(VerifyError::Rejected {
            tee,
            reason: format!(
                "the TD quote's report data {} does not start with the SHA-256 {} of the HCL report's variable data",
                claims.report_data,
                hex::encode(digest)
            ),
        });
    }
    let registers = claims
        .rtmrs
        .iter()
        .map(|r| r.parse())
        .collect::<Result<Vec<Digest384>, _>>()
        .map_err(|_| VerifyError::Rejected {
            tee,
            reason: "the TD quote's RTMRs are not 48 bytes each".into(),
        })?;
    Ok((
        claims.platform_claims(),
        registers,
        format!(
            "Intel TDX (TCB {}, MRTD {})",
            claims.tcb_status,
            claims.mrtd.clone().unwrap_or_default()
        ),
    ))
}

#[cfg(not(feature = "tdx"))]
fn tdx_quote(_: &Evidence, _: &[u8], _: &VerifyOptions) -> Result<Hardware, VerifyError> {
    Err(VerifyError::UnsupportedTee(TeeType::Tdx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vouch_testkit::corpus::vectors;

    fn read(v: &std::path::Path, name: &str) -> Vec<u8> {
        std::fs::read(v.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn b64url(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    /// An HCL report in the paravisor's layout around `hw` and `var`.
    fn hcl(report_type: u32, hw: &[u8], var: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [HCL_SIGNATURE, 2, 0, 2, 0, 0, 0, 0] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        let mut slot = hw.to_vec();
        slot.resize(HW_REPORT_LEN, 0);
        b.extend_from_slice(&slot);
        let size = (IGVM_HEADER_LEN + var.len()) as u32;
        for w in [size, 1, report_type, HASH_TYPE_SHA256, var.len() as u32] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(var);
        b
    }

    fn jwk(ak: &crate::tpm::AkPublic, kid: &str) -> Value {
        json!({
            "kid": kid,
            "key_ops": ["sign"],
            "kty": "RSA",
            "e": b64url(&ak.exponent.to_be_bytes()[1..]),
            "n": b64url(&ak.modulus),
        })
    }

    /// A real vTPM's quote (Google Cloud's, nonce 9009) in Azure's form: the bare signature,
    /// hex; the AK it was made with; its SHA-256 PCRs.
    fn gce_quote(v: &std::path::Path) -> (crate::tpm::AkPublic, Quote) {
        let dir = "tpm/gce-vtpm-nonce9009";
        let ak = crate::tpm::parse_ak(&read(v, &format!("{dir}/ak_pub.tpmt_public"))).expect("ak");
        let tpmt = read(v, &format!("{dir}/quote_sha256.tpmt_signature"));
        // TPMT_SIGNATURE: algorithm, hash, size, then the signature itself.
        let raw = tpmt[6..].to_vec();
        assert_eq!(raw.len(), ak.modulus.len());
        let by_index: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(&read(v, &format!("{dir}/quote_sha256.pcrs.json")))
                .expect("pcrs");
        let quote = Quote {
            signature: hex::encode(raw),
            message: hex::encode(read(v, &format!("{dir}/quote_sha256.tpms_attest"))),
            pcrs: (0..24).map(|i| by_index[&i.to_string()].clone()).collect(),
        };
        (ak, quote)
    }

    fn quote_copy(q: &Quote) -> Quote {
        Quote {
            signature: q.signature.clone(),
            message: q.message.clone(),
            pcrs: q.pcrs.clone(),
        }
    }

    /// The vTPM part: the AK the (certified) variable data names must sign the quote, the
    /// quote must carry the binding, version 2's user-data must start with it, the init-data
    /// must be in PCR 8; each refusal by name.
    #[test]
    fn the_vtpm_quote_verifies_by_the_key_the_variable_data_names() {
        let Some(v) = vectors() else { return };
        let (ak, quote) = gce_quote(&v);
        let nonce = [0x90u8, 0x09];
        let var = |user: Option<&str>| {
            let mut doc =
                json!({"keys": [jwk(&ak, AK_KEY_ID)], "vm-configuration": {"secure-boot": true}});
            if let Some(u) = user {
                doc["user-data"] = json!(u);
            }
            serde_json::to_vec(&doc).expect("json")
        };
        let kind = HwReport::Snp;
        let vd = |doc: &[u8]| parse_var_data(doc).expect("variable data");
        let got = check_vtpm(kind, vd(&var(None)), &quote, 1, &nonce, None).expect("verifies");
        assert_eq!(got.pcrs.len(), 24);
        assert_eq!(
            got.ak_fingerprint,
            crate::tpm::spki_fingerprint(&crate::tpm::ak_spki(&ak))
        );
        // Another binding.
        assert!(matches!(
            check_vtpm(kind, vd(&var(None)), &quote, 1, &[0x90, 0x0a], None),
            Err(VerifyError::ReportDataMismatch { .. })
        ));
        // Another key in the variable data (the paravisor's report certifies only its own).
        let mut other = ak.clone();
        other.modulus[100] ^= 1;
        let doc = serde_json::to_vec(&json!({"keys": [jwk(&other, AK_KEY_ID)]})).expect("json");
        assert!(matches!(
            check_vtpm(kind, vd(&doc), &quote, 1, &nonce, None),
            Err(VerifyError::BadSignature)
        ));
        // A changed signature byte, a changed message byte.
        let mut q = quote_copy(&quote);
        q.signature.replace_range(
            0..2,
            if &quote.signature[..2] == "00" {
                "01"
            } else {
                "00"
            },
        );
        assert!(matches!(
            check_vtpm(kind, vd(&var(None)), &q, 1, &nonce, None),
            Err(VerifyError::BadSignature)
        ));
        let mut q = quote_copy(&quote);
        let last = q.message.len() - 2;
        let flipped = if &q.message[last..] == "00" {
            "01"
        } else {
            "00"
        };
        q.message.replace_range(last.., flipped);
        assert!(matches!(
            check_vtpm(kind, vd(&var(None)), &q, 1, &nonce, None),
            Err(VerifyError::BadSignature)
        ));
        // A PCR value that is not what was quoted.
        let mut q = quote_copy(&quote);
        q.pcrs[4] = "00".repeat(32);
        let err = check_vtpm(kind, vd(&var(None)), &q, 1, &nonce, None).expect_err("pcr");
        assert!(err.to_string().contains("PCR digest"), "{err}");
        // Version 2: the user-data starts with the binding (the rest of its 64 bytes zero).
        let user = format!("9009{}", "00".repeat(62));
        check_vtpm(kind, vd(&var(Some(&user))), &quote, 2, &nonce, None).expect("v2 verifies");
        let wrong = format!("900a{}", "00".repeat(62));
        for doc in [var(Some(&wrong)), var(Some("90")), var(None)] {
            assert!(matches!(
                check_vtpm(kind, vd(&doc), &quote, 2, &nonce, None),
                Err(VerifyError::ReportDataMismatch { .. })
            ));
        }
        // Init-data the vTPM's PCR 8 does not hold.
        let init =
            super::super::init_data_digest("toml", "algorithm = \"sha256\"\n").expect("digest");
        assert!(matches!(
            check_vtpm(kind, vd(&var(None)), &quote, 1, &nonce, Some(&init)),
            Err(VerifyError::InitDataMismatch {
                register: "PCR8",
                ..
            })
        ));
    }

    #[test]
    fn hcl_reports_and_their_variable_data_are_read_strictly() {
        let var = br#"{"keys":[]}"#;
        let good = hcl(REPORT_TYPE_SNP, &[7u8; 1184], var);
        let h = parse_hcl(&good).expect("parses");
        assert_eq!(h.kind, HwReport::Snp);
        assert_eq!(h.hw_report, &[7u8; 1184][..]);
        assert_eq!(h.var_data, var);
        let t = hcl(REPORT_TYPE_TDX, &[7u8; 1024], var);
        assert_eq!(parse_hcl(&t).expect("tdx").hw_report.len(), TD_REPORT_LEN);
        let err = |b: &[u8]| parse_hcl(b).expect_err("refused");
        let mut b = good.clone();
        b[0] = b'X';
        assert!(err(&b).contains("signature HCLA"));
        assert!(err(&hcl(3, &[], var)).contains("type 3"));
        let mut b = good.clone();
        b[HCL_HEADER_LEN + HW_REPORT_LEN + 12] = 2;
        assert!(err(&b).contains("hash type 2"));
        let mut b = good.clone();
        b[HCL_HEADER_LEN + HW_REPORT_LEN + 16..][..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(err(&b).contains("past its end"));
        assert!(err(&good[..100]).contains("truncated"));
        assert!(err(&good[..good.len() - 1]).contains("past its end"));

        let key = |kty: &str, n: &[u8]| json!({"kid": AK_KEY_ID, "kty": kty, "e": "AQAB", "n": b64url(n)});
        let doc = |keys: Vec<Value>| serde_json::to_vec(&json!({"keys": keys})).expect("json");
        let n = vec![0xc5u8; 256];
        let ok = parse_var_data(&doc(vec![key("RSA", &n)])).expect("a key");
        assert_eq!((ok.ak.modulus.len(), ok.ak.exponent), (256, 65537));
        let refused = |d: &[u8]| parse_var_data(d).expect_err("refused");
        assert!(refused(&doc(vec![])).contains("no attestation key"));
        assert!(
            refused(&doc(vec![key("RSA", &n), key("RSA", &n)])).contains("two attestation keys")
        );
        assert!(refused(&doc(vec![key("EC", &n)])).contains("not an RSA key"));
        assert!(refused(&doc(vec![key("RSA", &n[..128])])).contains("1024 bits"));
        assert!(refused(b"{\"keys\": 3}").contains("not its JSON document"));
        // Another key id is not the AK.
        let other = json!({"kid": "HCLEkPub", "kty": "RSA", "e": "AQAB", "n": b64url(&n)});
        assert!(refused(&doc(vec![other])).contains("no attestation key"));
    }

    /// A real SNP report (its VMPL 0, its signature good) in an HCL report: it is checked against
    /// the VCEK and the pinned chain before its report data, which must be the SHA-256 of the
    /// variable data; it is not, so the evidence is refused by that; without the ASK/ARK, by
    /// that; a changed byte of the report, by its signature.
    #[cfg(feature = "snp")]
    #[test]
    fn the_paravisors_snp_report_must_commit_to_the_variable_data() {
        let Some(v) = vectors() else { return };
        let (ak, quote) = gce_quote(&v);
        let report = read(&v, "snp/attestation.bin");
        let var = serde_json::to_vec(&json!({"keys": [jwk(&ak, AK_KEY_ID)]})).expect("json");
        let evidence = |report: &[u8]| {
            json!({
                "version": 1,
                "tpm_quote": {"signature": quote.signature, "message": quote.message, "pcrs": quote.pcrs},
                "hcl_report": b64url(&hcl(REPORT_TYPE_SNP, report, &var)),
                "vcek": b64url(&read(&v, "snp/vcek.der")),
            })
        };
        let strict = VerifyOptions {
            snp_chain: Some(read(&v, "snp/ask_ark_milan.pem")),
            ..Default::default()
        };
        let check = |ev: &Value, opts: &VerifyOptions| {
            verify_azure(HwReport::Snp, ev, &[0x90, 0x09], &Value::Null, None, opts)
                .expect_err("refused")
                .to_string()
        };
        // The vector is a debug guest's: refused by the default policy, after its signature.
        let err = check(&evidence(&report), &strict);
        assert!(err.contains("allows debugging"), "{err}");
        let opts = VerifyOptions {
            snp_policy: crate::snp::SnpPolicy {
                allow_debug: true,
                ..Default::default()
            },
            ..strict
        };
        let err = check(&evidence(&report), &opts);
        assert!(
            err.contains("does not start with the SHA-256")
                && err.contains(&hex::encode(sha2::Sha256::digest(&var))),
            "{err}"
        );
        let err = check(&evidence(&report), &VerifyOptions::default());
        assert!(err.contains("carries the VCEK alone"), "{err}");
        let mut changed = report.clone();
        changed[0x90] ^= 1;
        let err = check(&evidence(&changed), &opts);
        assert!(err.contains("signature does not verify"), "{err}");
        // A TDX HCL report in an az-snp-vtpm session, and the forms vouch does not read.
        let mut ev = evidence(&report);
        ev["hcl_report"] = json!(b64url(&hcl(REPORT_TYPE_TDX, &report[..1024], &var)));
        assert!(check(&ev, &opts).contains("holds a Tdx report"));
        assert!(
            check(&json!({"quote": {}, "report": [], "vcek": ""}), &opts)
                .contains("without a version")
        );
        let mut ev = evidence(&report);
        ev["version"] = json!(3);
        assert!(check(&ev, &opts).contains("version 3 is not supported"));
        let mut ev = evidence(&report);
        ev.as_object_mut().expect("object").remove("vcek");
        assert!(check(&ev, &opts).contains("has no vcek"));
    }
}
