//! Offline verification of vouch evidence: quote signature, binding of the runtime data, nonce,
//! event-log replay against the quoted register, and the list of containers the log launched.

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;
use vouch_measure::{replay, validate_sequence, Digest384, RecordError};

use crate::evidence::{report_data_for, Evidence, EVIDENCE_VERSION, SIM_WARNING};
use crate::{TeeType, Verifier, VOUCH_REGISTER};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "unsupported evidence version {0} (this vouch understands version {EVIDENCE_VERSION})"
    )]
    Version(u32),
    #[error("evidence comes from the sim TEE, which is not hardware; it is accepted only where sim evidence is allowed, for development")]
    SimNotAllowed,
    #[error("evidence is Confidential Containers' sample evidence, which is unsigned (anyone can write it); it is accepted only where sample evidence is allowed, for development")]
    SampleNotAllowed,
    #[error("{tee} evidence is not in the form Confidential Containers' attester sends: {reason}")]
    CocoFormat { tee: TeeType, reason: String },
    #[error("the init-data is not what the TEE was launched with: its digest padded to {register} is {expected}, the quote's {register} is {found}")]
    InitDataMismatch {
        register: &'static str,
        expected: String,
        found: String,
    },
    #[error("runtime event {index} of the event log is not a valid AAEL event: {reason}")]
    AaelEvent { index: usize, reason: String },
    #[error("TDX evidence needs its collateral, and the verifier has none for this quote")]
    NoCollateral,
    #[error("verification of {0} evidence is not implemented in this build")]
    UnsupportedTee(TeeType),
    #[error("quote field is not valid base64")]
    QuoteEncoding,
    #[error("{tee} quote is malformed: {reason}")]
    MalformedQuote { tee: TeeType, reason: String },
    #[error("quote signature does not verify")]
    BadSignature,
    #[error("{tee} quote rejected: {reason}")]
    Rejected { tee: TeeType, reason: String },
    #[error("quote is signed by {signer}, which is not the trusted key")]
    UntrustedSigner { signer: String },
    #[error("evidence says tee {claimed} but the quote is from {actual}")]
    TeeMismatch { claimed: TeeType, actual: TeeType },
    #[error("runtime data does not match the quote: SHA-384 of it is {computed}, the quote binds {quoted}")]
    ReportDataMismatch { computed: String, quoted: String },
    #[error("runtime data cannot be canonicalized")]
    RuntimeData(#[source] vouch_measure::CanonicalError),
    #[error("nonce mismatch: expected {expected}, evidence is bound to {found}")]
    NonceMismatch { expected: String, found: String },
    #[error("event log is invalid")]
    Log(#[source] RecordError),
    #[error("firmware event log is invalid")]
    FirmwareLog(#[source] crate::tcg::TcgError),
    #[error(
        "firmware event log replays register {index} to {replayed}, but the quote has {quoted}"
    )]
    FirmwareReplay {
        index: usize,
        replayed: String,
        quoted: String,
    },
    #[error("the TPM attestation key {fingerprint} is not trusted: it is neither pinned nor certified by a trusted CA (pin it once you know it belongs to this machine's TPM)")]
    UntrustedAk { fingerprint: String },
    #[error("the evidence names its requester wrongly: {0}")]
    Requester(String),
    #[error("the evidence's aa_eventlog is not its event log in AAEL form: line {line} differs")]
    AaelMismatch { line: usize },
    #[error("event log ({records} records) replays to {replayed}, but the quoted register {index} is {quoted}")]
    ReplayMismatch {
        records: usize,
        replayed: String,
        index: usize,
        quoted: String,
    },
}

/// What the verifier requires.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Accept evidence from the software `sim` TEE. Never the default.
    pub allow_sim: bool,
    /// Accept Confidential Containers' unsigned `sample` evidence. Never the default.
    pub allow_sample: bool,
    /// Require the runtime data to carry exactly this nonce (lower-case hex).
    pub nonce: Option<String>,
    /// Accept sim evidence only from these sim instances (their public keys, hex); empty: any.
    pub sim_keys: Vec<String>,
    #[cfg(feature = "tdx")]
    /// Collateral for TDX quotes (verification is offline: the verifier brings it).
    pub tdx_collateral: Option<dcap_qvl::QuoteCollateralV3>,
    #[cfg(feature = "tdx")]
    /// Where collateral for TDX quotes is found otherwise: a collateral directory and/or a PCCS.
    pub collateral: Option<std::sync::Arc<crate::tdx::collateral::CollateralStore>>,
    /// Verify as of this unix time (default: now).
    pub at: Option<u64>,
    #[cfg(feature = "tdx")]
    /// Which TDX TCB statuses and golden values are acceptable.
    pub dcap_policy: crate::tdx::dcap::DcapPolicy,
    #[cfg(feature = "tpm")]
    /// Trusted TPM attestation keys, by fingerprint (`sha256:HEX` of the AK's `TPMT_PUBLIC`).
    /// TPM evidence signed by any other key is refused, unless the key is certified:
    pub tpm_aks: Vec<String>,
    #[cfg(feature = "tpm")]
    /// CA certificates (DER) trusted to certify TPM attestation keys: an AK whose certificate in
    /// the evidence chains to one of them is trusted without being pinned.
    pub tpm_ak_cas: Vec<Vec<u8>>,
    #[cfg(feature = "snp")]
    /// The ASK and ARK (PEM, ASK first) for SEV-SNP reports whose certificate chain lacks them.
    pub snp_chain: Option<Vec<u8>>,
    #[cfg(feature = "snp")]
    /// Which SEV-SNP reports are acceptable (debug guests never, by default).
    pub snp_policy: crate::snp::SnpPolicy,
}

/// A container the event log says was launched.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LaunchedContainer {
    pub id: String,
    pub name: Option<String>,
    pub image: Option<String>,
    pub image_digest: String,
    pub config_digest: String,
    pub exit_code: Option<i64>,
    /// Sequence number of its `container.create` record.
    pub create_seq: u64,
    /// What the log says of it since: `running` (nothing yet), `exited` (its
    /// `container.exit`; `exit_code` is null when the status was lost), or `failed` (a launch
    /// that failed after its `container.create`: its `container.failed`).
    pub state: LaunchState,
    /// Why a failed launch failed, as its `container.failed` record says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The Kubernetes pod its `container.create` names (`namespace`, `name`, `uid`,
    /// `sandbox_id`, `container`), when containerd's CRI started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Value>,
    /// The processes exec'd into it after its start, in the log's order: each
    /// `container.exec` record's `exec_id`, `process_digest` and `seq`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub execs: Vec<Value>,
}

/// Where a launched container is, as far as the log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LaunchState {
    Running,
    Exited,
    Failed,
}

pub use crate::evidence::REQUESTER_KEY;

/// Who asked for evidence: the container it was fetched for, as the runtime data names it
/// (`{"id", "create_seq"}`, bound by the quote like the nonce), resolved against the log.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Requester {
    #[serde(flatten)]
    pub container: LaunchedContainer,
    /// Every record of the log that belongs to this container (its `image.verified`,
    /// `container.create`, `secret.fetched`, ...), in log order.
    pub records: Vec<vouch_measure::Record>,
}

/// The requester as the runtime data names it.
#[derive(Debug, Clone, serde::Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequesterRef {
    pub id: String,
    pub create_seq: u64,
}

/// Resolve the requester named in `runtime_data` (if any) against the verified log: the record
/// at `create_seq` must be the `container.create` of exactly that container id.
fn resolve_requester(
    runtime_data: &Value,
    log: &[vouch_measure::Record],
    containers: &[LaunchedContainer],
) -> Result<Option<Requester>, VerifyError> {
    let Some(named) = runtime_data.get(REQUESTER_KEY) else {
        return Ok(None);
    };
    let r: RequesterRef = serde_json::from_value(named.clone()).map_err(|e| {
        VerifyError::Requester(format!(
            "{REQUESTER_KEY} must be {{\"id\", \"create_seq\"}}: {e}"
        ))
    })?;
    let record = log
        .get(usize::try_from(r.create_seq).unwrap_or(usize::MAX))
        .ok_or_else(|| {
            VerifyError::Requester(format!(
                "record {} is not in the log ({} records)",
                r.create_seq,
                log.len()
            ))
        })?;
    let id_matches = record.content.get("id").and_then(Value::as_str) == Some(r.id.as_str());
    if record.op != "container.create" || !id_matches {
        return Err(VerifyError::Requester(format!(
            "record {} is not the container.create of container {}",
            r.create_seq, r.id
        )));
    }
    let container = containers
        .iter()
        .find(|c| c.create_seq == r.create_seq)
        .cloned()
        .ok_or_else(|| VerifyError::Requester(format!("container {} is not in the log", r.id)))?;
    let records = log
        .iter()
        .filter(|rec| rec.content.get("id").and_then(Value::as_str) == Some(r.id.as_str()))
        .cloned()
        .collect();
    Ok(Some(Requester { container, records }))
}

/// Whose evidence format a verdict was given on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceFormat {
    /// vouch's own ([`Evidence`]).
    Vouch,
    /// What Confidential Containers' attesters send ([`crate::coco`]).
    Coco,
}

/// An event of a runtime log (AAEL) that is not one of vouch's records, e.g. Confidential
/// Containers' `github.com/confidential-containers PullImage {...}`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AaelEvent {
    pub domain: String,
    pub operation: String,
    pub content: String,
}

/// The init-data a client sent, and whether the TEE's evidence binds it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InitDataClaim {
    pub algorithm: String,
    /// Lower-case hex.
    pub digest: String,
    /// Whether a register of the quote holds it (TDX: MRCONFIGID); sample evidence binds none.
    pub bound: bool,
    /// What the document says (its `data` table, as Trustee's `init_data_claims`), only when
    /// it is bound: null otherwise, so that a policy cannot read claims nothing attests.
    pub claims: serde_json::Value,
}

impl InitDataClaim {
    pub(crate) fn of(d: &crate::coco::InitDataDigest, bound: bool) -> Self {
        InitDataClaim {
            algorithm: d.algorithm.to_string(),
            digest: hex::encode(&d.digest),
            bound,
            claims: if bound {
                d.claims.clone()
            } else {
                serde_json::Value::Null
            },
        }
    }
}

/// The result of a successful verification.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub tee: TeeType,
    pub format: EvidenceFormat,
    /// Whether the verifier required a nonce; when it did, the evidence carries exactly that
    /// one (a verdict is only given then), so `nonce_checked` is the same.
    pub nonce_required: bool,
    pub nonce_checked: bool,
    pub hardware: bool,
    pub signer: String,
    pub registers: Vec<Digest384>,
    pub records: usize,
    pub runtime_data: Value,
    /// The platform's boot measurements the quote covers (see [`crate::QuoteClaims::platform`]).
    pub platform: std::collections::BTreeMap<String, String>,
    pub containers: Vec<LaunchedContainer>,
    /// The container this evidence was fetched for, when the runtime data names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requester: Option<Requester>,
    /// Runtime-log events of other writers than vouch (CoCo evidence's AAEL).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<AaelEvent>,
    /// The init-data the client sent (CoCo evidence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_data: Option<InitDataClaim>,
    pub warnings: Vec<String>,
    /// Firmware log events replayed against the platform registers, when the evidence had a log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_log_events: Option<usize>,
}

/// The verifier of this build for evidence from `tee` (each backend is a cargo feature).
#[cfg_attr(
    not(any(feature = "sim", feature = "tdx", feature = "tpm")),
    allow(unreachable_code)
)]
pub(crate) fn verifier_for<'a>(
    tee: TeeType,
    opts: &'a VerifyOptions,
) -> Result<Box<dyn Verifier + 'a>, VerifyError> {
    Ok(match tee {
        #[cfg(feature = "sim")]
        TeeType::Sim => Box::new(crate::sim::SimVerifier {
            pinned_keys: opts.sim_keys.clone(),
        }),
        #[cfg(feature = "tdx")]
        TeeType::Tdx => Box::new(crate::tdx::TdxVerifier { opts }),
        #[cfg(feature = "tpm")]
        TeeType::Tpm => Box::new(crate::tpm::TpmVerifier { opts }),
        other => {
            let _ = opts;
            return Err(VerifyError::UnsupportedTee(other));
        }
    })
}

/// The containers a verified log launched, with what it says of each since.
pub(crate) fn containers_of(log: &[vouch_measure::Record]) -> Vec<LaunchedContainer> {
    let mut containers: Vec<LaunchedContainer> = Vec::new();
    for record in log {
        let c = &record.content;
        let text = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
        match record.op.as_str() {
            "container.create" => containers.push(LaunchedContainer {
                id: text("id").unwrap_or_default(),
                name: text("name"),
                image: text("image"),
                image_digest: text("image_digest").unwrap_or_default(),
                config_digest: text("config_digest").unwrap_or_default(),
                exit_code: None,
                create_seq: record.seq,
                state: LaunchState::Running,
                failure: None,
                pod: c.get("pod").filter(|p| p.is_object()).cloned(),
                execs: Vec::new(),
            }),
            "container.exec" => {
                if let Some(id) = text("id") {
                    if let Some(found) = containers.iter_mut().rev().find(|x| x.id == id) {
                        found.execs.push(serde_json::json!({
                            "exec_id": text("exec_id"),
                            "process_digest": text("process_digest"),
                            "seq": record.seq,
                        }));
                    }
                }
            }
            "container.exit" => {
                if let Some(id) = text("id") {
                    if let Some(found) = containers.iter_mut().rev().find(|x| x.id == id) {
                        found.exit_code = c.get("exit_code").and_then(Value::as_i64);
                        found.state = LaunchState::Exited;
                    }
                }
            }
            "container.failed" => {
                if let Some(id) = text("id") {
                    if let Some(found) = containers.iter_mut().rev().find(|x| x.id == id) {
                        found.state = LaunchState::Failed;
                        found.failure = text("reason");
                    }
                }
            }
            _ => {}
        }
    }
    containers
}

/// Verify evidence completely, offline.
pub fn verify_evidence(evidence: &Evidence, opts: &VerifyOptions) -> Result<Verdict, VerifyError> {
    if evidence.version != EVIDENCE_VERSION {
        return Err(VerifyError::Version(evidence.version));
    }
    if evidence.tee == TeeType::Sim && !opts.allow_sim {
        return Err(VerifyError::SimNotAllowed);
    }
    let quote = base64::engine::general_purpose::STANDARD
        .decode(evidence.quote.as_bytes())
        .map_err(|_| VerifyError::QuoteEncoding)?;
    let verifier = verifier_for(evidence.tee, opts)?;
    let claims = verifier.verify_quote(&quote)?;
    if claims.tee != evidence.tee {
        return Err(VerifyError::TeeMismatch {
            claimed: evidence.tee,
            actual: claims.tee,
        });
    }
    let computed = report_data_for(&evidence.runtime_data).map_err(VerifyError::RuntimeData)?;
    if computed != claims.report_data {
        return Err(VerifyError::ReportDataMismatch {
            computed: computed.to_hex(),
            quoted: claims.report_data.to_hex(),
        });
    }
    if let Some(expected) = &opts.nonce {
        let found = evidence
            .runtime_data
            .get("nonce")
            .and_then(Value::as_str)
            .unwrap_or("<none>");
        if found != expected.to_ascii_lowercase() {
            return Err(VerifyError::NonceMismatch {
                expected: expected.clone(),
                found: found.to_string(),
            });
        }
    }
    // The firmware's log, when present, must replay to the quoted platform registers.
    let firmware_log_events = match &evidence.firmware_log {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| VerifyError::QuoteEncoding)?;
            verifier.check_firmware_log(&bytes, &claims)?
        }
        None => None,
    };
    validate_sequence(&evidence.event_log).map_err(VerifyError::Log)?;
    if let Some(text) = &evidence.aa_eventlog {
        // The AAEL copy is for AAEL readers; it must say exactly what the log says.
        if let Some(line) = vouch_measure::aael::first_difference(&evidence.event_log, text)
            .map_err(VerifyError::Log)?
        {
            return Err(VerifyError::AaelMismatch { line });
        }
    }
    verifier.check_event_log(&evidence.event_log, &claims)?;
    let replayed = replay(&evidence.event_log).map_err(VerifyError::Log)?;
    let quoted = claims
        .registers
        .get(VOUCH_REGISTER)
        .copied()
        .ok_or_else(|| VerifyError::MalformedQuote {
            tee: claims.tee,
            reason: format!("no register {VOUCH_REGISTER}"),
        })?;
    if replayed != quoted {
        return Err(VerifyError::ReplayMismatch {
            records: evidence.event_log.len(),
            replayed: replayed.to_hex(),
            index: VOUCH_REGISTER,
            quoted: quoted.to_hex(),
        });
    }
    let containers = containers_of(&evidence.event_log);
    let requester = resolve_requester(&evidence.runtime_data, &evidence.event_log, &containers)?;
    let hardware = claims.tee != TeeType::Sim;
    let warnings = if hardware {
        Vec::new()
    } else {
        vec![SIM_WARNING.to_string()]
    };
    Ok(Verdict {
        tee: claims.tee,
        format: EvidenceFormat::Vouch,
        nonce_required: opts.nonce.is_some(),
        nonce_checked: opts.nonce.is_some(),
        hardware,
        signer: claims.signer,
        registers: claims.registers,
        records: evidence.event_log.len(),
        runtime_data: evidence.runtime_data.clone(),
        platform: claims.platform,
        containers,
        requester,
        events: Vec::new(),
        init_data: None,
        warnings,
        firmware_log_events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Journal;
    use crate::sim::SimAttester;
    use crate::tdx::check_firmware_log;
    use crate::tpm::{check_tpm_event_log, check_tpm_firmware_log};
    use serde_json::json;
    use std::sync::Arc;

    fn evidence(nonce: &str) -> (tempfile::TempDir, Evidence) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = Arc::new(SimAttester::open(&dir.path().join("sim")).expect("sim"));
        let (mut j, _) =
            Journal::open(&dir.path().join("log"), sim, VOUCH_REGISTER).expect("journal");
        j.append("image.verified", json!({"image_digest": "sha256:ab"}))
            .expect("append");
        j.append(
            "container.create",
            json!({"id": "c1", "image_digest": "sha256:ab", "config_digest": "sha384:cd"}),
        )
        .expect("append");
        j.append("container.exit", json!({"id": "c1", "exit_code": 3}))
            .expect("append");
        let ev = j.evidence(json!({"nonce": nonce})).expect("evidence");
        (dir, ev)
    }

    fn allow(nonce: &str) -> VerifyOptions {
        VerifyOptions {
            allow_sim: true,
            nonce: Some(nonce.into()),
            ..Default::default()
        }
    }

    #[test]
    fn good_evidence_verifies_and_lists_containers() {
        let (_d, ev) = evidence("abcd");
        let v = verify_evidence(&ev, &allow("abcd")).expect("verify");
        assert_eq!(v.containers.len(), 1);
        assert_eq!(v.containers[0].exit_code, Some(3));
        assert!(!v.hardware);
        assert_eq!(v.records, 3);
    }

    #[test]
    fn sim_refused_without_allow() {
        let (_d, ev) = evidence("abcd");
        let opts = VerifyOptions {
            allow_sim: false,
            ..allow("abcd")
        };
        assert!(matches!(
            verify_evidence(&ev, &opts),
            Err(VerifyError::SimNotAllowed)
        ));
    }

    #[test]
    fn wrong_nonce_fails() {
        let (_d, ev) = evidence("abcd");
        assert!(matches!(
            verify_evidence(&ev, &allow("abce")),
            Err(VerifyError::NonceMismatch { .. })
        ));
    }

    #[test]
    fn rebinding_runtime_data_fails() {
        let (_d, mut ev) = evidence("abcd");
        ev.runtime_data = json!({"nonce": "ffff"});
        assert!(matches!(
            verify_evidence(&ev, &allow("ffff")),
            Err(VerifyError::ReportDataMismatch { .. })
        ));
    }

    #[test]
    fn every_quote_byte_and_log_edit_is_detected() {
        let (_d, ev) = evidence("abcd");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&ev.quote)
            .expect("b64");
        for i in 0..raw.len() {
            let mut t = raw.clone();
            t[i] ^= 0x01;
            let mut bad = ev.clone();
            bad.quote = base64::engine::general_purpose::STANDARD.encode(&t);
            assert!(
                verify_evidence(&bad, &allow("abcd")).is_err(),
                "quote byte {i} flip accepted"
            );
        }
        for i in 0..ev.event_log.len() {
            let mut bad = ev.clone();
            bad.event_log[i].content = json!({"edited": true});
            // With its AAEL copy left as it was, the copy no longer matches (record i is line
            // i + 2, after the INIT line); with the copy made to match, the replay does not.
            let err = verify_evidence(&bad, &allow("abcd")).expect_err("edit accepted");
            assert!(
                matches!(err, VerifyError::AaelMismatch { line } if line == i + 2),
                "{err}"
            );
            bad.aa_eventlog = Some(vouch_measure::aael::to_text(&bad.event_log).expect("aael"));
            let err = verify_evidence(&bad, &allow("abcd")).expect_err("edit accepted");
            assert!(matches!(err, VerifyError::ReplayMismatch { .. }), "{err}");
        }
        let mut dropped = ev.clone();
        dropped.event_log.pop();
        assert!(matches!(
            verify_evidence(&dropped, &allow("abcd")),
            Err(VerifyError::AaelMismatch { .. })
        ));
        dropped.aa_eventlog = None;
        assert!(matches!(
            verify_evidence(&dropped, &allow("abcd")),
            Err(VerifyError::ReplayMismatch { .. })
        ));
    }

    /// Evidence for a log where container a was created, then b: a requester named in the
    /// runtime data is that container, with its own records, whatever came after it.
    fn two_containers(runtime_data: Value) -> (tempfile::TempDir, Evidence) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = Arc::new(SimAttester::open(&dir.path().join("sim")).expect("sim"));
        let (mut j, _) =
            Journal::open(&dir.path().join("log"), sim, VOUCH_REGISTER).expect("journal");
        for (id, image) in [("a", "sha256:aa"), ("b", "sha256:bb")] {
            j.append("image.verified", json!({"id": id, "image_digest": image}))
                .expect("append");
            j.append(
                "container.create",
                json!({"id": id, "image_digest": image, "config_digest": "sha384:cd"}),
            )
            .expect("append");
        }
        j.append("secret.fetched", json!({"id": "a", "resources": ["x"]}))
            .expect("append");
        let ev = j.evidence(runtime_data).expect("evidence");
        (dir, ev)
    }

    #[test]
    fn the_requester_is_the_container_the_runtime_data_names() {
        let (_d, ev) =
            two_containers(json!({"nonce": "abcd", "requester": {"id": "a", "create_seq": 1}}));
        let v = verify_evidence(&ev, &allow("abcd")).expect("verify");
        let r = v.requester.expect("requester");
        assert_eq!(r.container.id, "a");
        assert_eq!(r.container.image_digest, "sha256:aa");
        assert_eq!(r.container.create_seq, 1);
        let ops: Vec<&str> = r.records.iter().map(|x| x.op.as_str()).collect();
        assert_eq!(
            ops,
            ["image.verified", "container.create", "secret.fetched"]
        );
        // No requester named: none is made up (not the last container either).
        let (_d, ev) = two_containers(json!({"nonce": "abcd"}));
        assert_eq!(
            verify_evidence(&ev, &allow("abcd"))
                .expect("verify")
                .requester,
            None
        );
    }

    #[test]
    fn a_wrongly_named_requester_is_refused() {
        for (requester, reason) in [
            (
                json!({"id": "a", "create_seq": 3}),
                "record 3 is not the container.create of container a",
            ),
            (
                json!({"id": "b", "create_seq": 1}),
                "record 1 is not the container.create of container b",
            ),
            (
                json!({"id": "a", "create_seq": 0}),
                "record 0 is not the container.create of container a",
            ),
            (
                json!({"id": "a", "create_seq": 99}),
                "record 99 is not in the log",
            ),
            (json!({"id": "a"}), "must be"),
            (json!({"id": "a", "create_seq": 1, "extra": 1}), "must be"),
            (json!("a"), "must be"),
        ] {
            let (_d, ev) = two_containers(json!({"nonce": "abcd", "requester": requester}));
            let err = verify_evidence(&ev, &allow("abcd")).expect_err("accepted");
            assert!(
                matches!(&err, VerifyError::Requester(m) if m.contains(reason)),
                "{requester}: {err}"
            );
        }
    }

    /// Evidence re-encoded without changing its digest is refused: an integer of the log spelt
    /// as a double (the exit code 3 as 3.0), and an object with a key twice (last one wins in
    /// some readers, first in others).
    #[test]
    fn only_one_encoding_of_the_evidence_verifies() {
        let (_d, ev) = evidence("abcd");
        let text = serde_json::to_string(&ev).expect("json");
        assert!(text.contains(r#""exit_code":3"#));
        let good = Evidence::from_json(text.as_bytes()).expect("parse");
        verify_evidence(&good, &allow("abcd")).expect("verify");
        for spelt in ["3.0", "3e0", "0.3e1"] {
            let re = text.replace(r#""exit_code":3"#, &format!(r#""exit_code":{spelt}"#));
            let ev = Evidence::from_json(re.as_bytes()).expect("still JSON");
            let err = verify_evidence(&ev, &allow("abcd")).expect_err(spelt);
            assert!(
                matches!(
                    &err,
                    VerifyError::Log(RecordError::Canonical { seq: 2, .. })
                ),
                "{spelt}: {err}"
            );
        }
        for (from, to) in [
            (r#""exit_code":3"#, r#""exit_code":0,"exit_code":3"#),
            (r#""version":1"#, r#""version":1,"version":1"#),
            (r#""nonce":"abcd""#, r#""nonce":"abcd","nonce":"abcd""#),
        ] {
            let re = text.replacen(from, to, 1);
            assert_ne!(re, text);
            let err = Evidence::from_json(re.as_bytes()).expect_err("duplicate key accepted");
            assert!(
                matches!(err, crate::evidence::EvidenceParseError::Ambiguous(_)),
                "{err}"
            );
        }
    }

    /// A real TDX quote: its boot measurements (MRTD, RTMR0-2; RTMR3 is vouch's register, not
    /// part of the boot chain), TD attributes and TCB status become the platform claims that
    /// policies judge.
    #[test]
    fn a_real_tdx_quote_reports_its_boot_measurements() {
        let Some(v) = vouch_testkit::corpus::vectors() else {
            return;
        };
        let quote = std::fs::read(v.join("tdx/tdx_quote")).expect("quote");
        let col = crate::tdx::dcap::load_collateral(
            &std::fs::read(v.join("tdx/tdx_quote_collateral.json")).expect("col"),
        )
        .expect("collateral");
        let claims = crate::tdx::dcap::verify_quote(&quote, &col, 1_750_400_000).expect("verify");
        let platform = claims.platform_claims();
        let keys: Vec<&str> = platform.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "advisories",
                "debug",
                "icssd",
                "kl",
                "lass",
                "migratable",
                "mrconfigid",
                "mrtd",
                "perfmon",
                "pks",
                "rtmr0",
                "rtmr1",
                "rtmr2",
                "sept_ve_disable",
                "servtd_ext",
                "tcb_status",
                "td_attributes",
                "tpa"
            ]
        );
        assert_eq!(platform["td_attributes"], "0000001000000000");
        assert_eq!(platform["sept_ve_disable"], "true");
        assert_eq!(platform["migratable"], "false");
        assert_eq!(platform["debug"], "false");
        assert_eq!(platform["mrconfigid"], "0".repeat(96));
        assert_eq!(platform["tcb_status"], "UpToDate");
        assert_eq!(platform["advisories"], "");
        assert_eq!(platform["mrtd"], "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7");
        for i in 0..3 {
            assert_eq!(
                platform[&format!("rtmr{i}")],
                claims.rtmrs[i].to_ascii_lowercase()
            );
        }
    }

    /// A real vTPM's event log replays, bank by bank, to the PCRs its quotes carry; a PCR
    /// value that is not what the log gives is refused, naming the PCR.
    #[test]
    fn a_tpm_event_log_replays_to_the_quoted_pcrs_in_every_bank() {
        let Some(v) = vouch_testkit::corpus::vectors() else {
            return;
        };
        let dir = v.join("tpm/gce-vtpm-nonce9009");
        let log = std::fs::read(dir.join("event_log.binary_bios_measurements")).expect("log");
        for bank in ["sha1", "sha256", "sha384"] {
            let json: std::collections::BTreeMap<String, String> = serde_json::from_slice(
                &std::fs::read(dir.join(format!("quote_{bank}.pcrs.json"))).expect("pcrs"),
            )
            .expect("pcrs json");
            let mut pcrs: std::collections::BTreeMap<u32, Vec<u8>> = json
                .iter()
                .map(|(k, v)| (k.parse().expect("index"), hex::decode(v).expect("hex")))
                .collect();
            let alg = crate::tcg::bank_algorithm(bank).expect("bank");
            let replayed = check_tpm_event_log(&log, alg, &pcrs).expect(bank);
            assert!(
                replayed.starts_with(&[0, 1, 2, 3, 4, 5, 6, 7]),
                "{bank}: {replayed:?}"
            );
            pcrs.get_mut(&4).expect("pcr4")[0] ^= 1;
            assert!(matches!(
                check_tpm_event_log(&log, alg, &pcrs),
                Err(VerifyError::FirmwareReplay { index: 4, .. })
            ));
        }
        assert_eq!(crate::tcg::bank_algorithm("md5"), None);
    }

    #[test]
    fn firmware_log_must_replay_to_the_quoted_rtmrs() {
        let Some(v) = vouch_testkit::corpus::vectors() else {
            return;
        };
        let quote = crate::tdx::dcap::parse_quote(
            &std::fs::read(v.join("ccel/cos-113-tdx-quote.dat")).expect("quote"),
        )
        .expect("parse");
        let regs: Vec<Digest384> = quote
            .rtmrs
            .iter()
            .map(|h| h.parse().expect("rtmr"))
            .collect();
        let good = std::fs::read(v.join("ccel/ccel_data.dat")).expect("ccel");
        assert_eq!(check_firmware_log(&good, &regs).expect("replays"), 43);
        let other = std::fs::read(v.join("ccel/CCEL_data_ovmf")).expect("ccel");
        let err = check_firmware_log(&other, &regs).expect_err("another boot");
        assert!(
            matches!(err, VerifyError::FirmwareReplay { index: 0, .. }),
            "{err}"
        );
        assert!(matches!(
            check_firmware_log(&good[..100], &regs),
            Err(VerifyError::FirmwareLog(_))
        ));
    }

    #[test]
    fn tpm_firmware_log_replays_to_the_quoted_sha256_pcrs() {
        let Some(v) = vouch_testkit::corpus::vectors() else {
            return;
        };
        let dir = v.join("tpm/gce-vtpm-nonce9009");
        let log = std::fs::read(dir.join("event_log.binary_bios_measurements")).expect("log");
        let pcrs: std::collections::BTreeMap<String, String> = serde_json::from_slice(
            &std::fs::read(dir.join("quote_sha256.pcrs.json")).expect("pcrs"),
        )
        .expect("json");
        let quoted: std::collections::BTreeMap<u32, Vec<u8>> = pcrs
            .iter()
            .map(|(i, h)| (i.parse().expect("index"), hex::decode(h).expect("hex")))
            .collect();
        let events = check_tpm_firmware_log(&log, &quoted).expect("replays");
        assert!(events > 10);
        // A PCR the log extends but whose quoted value differs.
        let mut wrong = quoted.clone();
        wrong.get_mut(&7).expect("pcr 7")[0] ^= 1;
        assert!(matches!(
            check_tpm_firmware_log(&log, &wrong),
            Err(VerifyError::FirmwareReplay { index: 7, .. })
        ));
        // A PCR the log extends but the quote does not cover.
        let mut missing = quoted;
        missing.remove(&0);
        assert!(matches!(
            check_tpm_firmware_log(&log, &missing),
            Err(VerifyError::FirmwareReplay { index: 0, .. })
        ));
    }
}
