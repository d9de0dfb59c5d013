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

#[cfg(feature = "verify")]
mod verify;
#[cfg(feature = "verify")]
pub use verify::{init_data_digest, verify_coco, CocoTee, InitDataDigest, InitDataError};

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
