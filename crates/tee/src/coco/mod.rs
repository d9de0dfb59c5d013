//! Confidential Containers (CoCo) evidence: the shapes guest-components' attesters send a KBS,
//! and CoCo's binding of the runtime data into them.
//!
//! A CoCo client binds the SHA-384 of the RFC 8785 JSON of `{"additional-evidence", "nonce",
//! "tee-pubkey"}` ([`runtime_data`]) into its TEE's report data: TDX, the first 48 of the 64
//! bytes (the rest zero); `sample`, the whole `report_data`. Its init-data (a TOML document the
//! host gives the guest) is bound by its digest in a register the host sets at launch (TDX:
//! MRCONFIGID). vouch's own evidence binds the same `{nonce, tee-pubkey}` without the
//! `additional-evidence` key.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[cfg(all(
    feature = "verify",
    feature = "tpm",
    any(feature = "snp", feature = "tdx")
))]
mod azure;
#[cfg(feature = "verify")]
mod verify;
#[cfg(feature = "verify")]
pub use verify::{init_data_digest, verify_coco, CocoTee, InitDataDigest, InitDataError};
#[cfg(all(feature = "verify", feature = "tdx"))]
pub use verify::{tdx_runtime_log, RuntimeLog};

/// The runtime data a CoCo client binds into its evidence, for this challenge's nonce, the
/// client's key (its JWK as the protocol carries it) and its additional (device) evidence.
pub fn runtime_data(nonce: &str, tee_pubkey: &Value, additional_evidence: &str) -> Value {
    json!({
        "additional-evidence": additional_evidence,
        "nonce": nonce,
        "tee-pubkey": tee_pubkey,
    })
}

/// CoCo `sample` evidence: a security version and the report data, in base64; nothing signs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleEvidence {
    pub svn: String,
    #[serde(default)]
    pub report_data: String,
}

/// CoCo `tdx` evidence as guest-components' TDX attester sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TdxEvidence {
    /// The TCG2 event log, base64: the CCEL (firmware, RTMR0..2), then the attestation agent's
    /// events (AAEL, RTMR3) as `EV_EVENT_TAG` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cc_eventlog: Option<String>,
    /// The TD quote, base64.
    pub quote: String,
    /// The AAEL as text, beside the CCEL (what earlier attesters sent, before the AAEL moved
    /// into the TCG2 log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aa_eventlog: Option<String>,
}

/// CoCo `tpm` evidence as guest-components' TPM attester sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TpmEvidence {
    pub tpm_quote: TpmQuoteForm,
    /// The attestation key: a DER SubjectPublicKeyInfo, base64.
    pub ak_public: String,
}

/// The quote of CoCo's TPM evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TpmQuoteForm {
    /// `TPMT_SIGNATURE`, marshalled, base64.
    pub signature: String,
    /// `TPMS_ATTEST`, marshalled, base64.
    pub message: String,
    /// The SHA-256 bank, PCR 0 first, hex.
    pub pcrs: Vec<String>,
}

/// The TCG2 event type of AAEL records (`EV_EVENT_TAG`).
pub const EV_EVENT_TAG: u32 = 0x6;
/// The tagged-event id of an AAEL record: ASCII `AAEL`, as a little-endian `u32`.
pub const AAEL_TAGGED_EVENT_ID: u32 = 0x4141_454c;

/// The event data of one AAEL record in a TCG2 log: the tag id, the text's length, the text.
pub fn aael_tagged_event(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + text.len());
    out.extend_from_slice(&AAEL_TAGGED_EVENT_ID.to_le_bytes());
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// The CCEL measurement-register index of RTMR3, the register vouch's log extends on TDX.
pub const RTMR3_MR_INDEX: u32 = 4;

/// A TDX TCG2 event log as CoCo's attester sends it: the firmware's CCEL (cut where its events
/// end) and, on RTMR3, vouch's log as AAEL records (the INIT line, then one per record), each
/// with the SHA-384 of its line: what vouch extended, so the log replays to the register.
#[cfg(feature = "attest")]
pub fn cc_eventlog(
    ccel: Option<&[u8]>,
    records: &[vouch_measure::Record],
) -> Result<Vec<u8>, crate::JournalError> {
    use crate::tcg::{ALG_SHA384, EV_NO_ACTION};
    let mut out = match ccel {
        Some(bytes) => {
            let log = crate::tcg::parse(bytes).map_err(crate::JournalError::FirmwareLog)?;
            if !log.algorithms.iter().any(|(a, _)| *a == ALG_SHA384) {
                return Err(crate::JournalError::FirmwareLog(
                    crate::tcg::TcgError::NoSuchAlgorithm(ALG_SHA384),
                ));
            }
            bytes[..log.end].to_vec()
        }
        None => {
            // A Spec ID header of its own, declaring SHA-384.
            let mut spec = b"Spec ID Event03\0".to_vec();
            spec.extend_from_slice(&0u32.to_le_bytes()); // platform class
            spec.extend_from_slice(&[0, 2, 0, 2]); // version 2.0, errata 0, uintn 8 bytes
            spec.extend_from_slice(&1u32.to_le_bytes());
            spec.extend_from_slice(&ALG_SHA384.to_le_bytes());
            spec.extend_from_slice(&48u16.to_le_bytes());
            spec.push(0);
            let mut h = Vec::new();
            h.extend_from_slice(&0u32.to_le_bytes());
            h.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
            h.extend_from_slice(&[0u8; 20]);
            h.extend_from_slice(&(spec.len() as u32).to_le_bytes());
            h.extend_from_slice(&spec);
            h
        }
    };
    let text = vouch_measure::aael::to_text(records).map_err(crate::JournalError::Record)?;
    for line in text.lines() {
        let data = aael_tagged_event(line);
        out.extend_from_slice(&RTMR3_MR_INDEX.to_le_bytes());
        out.extend_from_slice(&EV_EVENT_TAG.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&ALG_SHA384.to_le_bytes());
        out.extend_from_slice(vouch_measure::sha384(line.as_bytes()).as_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
    }
    out.extend_from_slice(&[0xff; 8]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouch_measure::{canonicalize, sha384};
    use vouch_testkit::corpus::vectors;

    use base64::Engine as _;

    /// The binding CoCo's own client computed, checked against what it sent.
    #[test]
    fn cocos_client_binds_the_runtime_data_as_computed_here() {
        let Some(v) = vectors() else {
            return;
        };
        let attest: Value = serde_json::from_slice(
            &std::fs::read(v.join("coco/kbs-client-sample-attest.json")).expect("vector"),
        )
        .expect("json");
        let nonce: String = serde_json::from_slice(
            &std::fs::read(v.join("coco/kbs-client-sample-nonce.json")).expect("vector"),
        )
        .expect("json");
        let rd = &attest["runtime-data"];
        assert_eq!(rd["nonce"], nonce.as_str());
        let bound = base64::engine::general_purpose::STANDARD
            .decode(
                attest["tee-evidence"]["primary_evidence"]["report_data"]
                    .as_str()
                    .expect("report_data"),
            )
            .expect("base64");
        let additional = attest["tee-evidence"]["additional_evidence"]
            .as_str()
            .expect("additional");
        let ours = sha384(
            &canonicalize(&runtime_data(&nonce, &rd["tee-pubkey"], additional)).expect("canon"),
        );
        assert_eq!(bound, ours.as_bytes());
        // The JWK as kbs-types re-encodes it binds the same bytes (what a KBS that parses the
        // attestation with kbs-types sees).
        let typed: kbs_types::TeePubKey =
            serde_json::from_value(rd["tee-pubkey"].clone()).expect("jwk");
        let retyped = serde_json::to_value(&typed).expect("jwk");
        let again = sha384(&canonicalize(&runtime_data(&nonce, &retyped, additional)).expect("c"));
        assert_eq!(again, ours);
    }
}
