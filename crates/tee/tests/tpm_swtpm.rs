//! The TPM backend against a real TPM 2.0 simulator (swtpm): measurement into PCR 23 (both banks),
//! a persistent attestation key, quotes bound to the runtime data, complete verification, and the
//! failures: unpinned key, another nonce, a tampered log, a PCR changed behind vouch's back.

use std::sync::Arc;

use serde_json::json;
use vouch_tee::tpm::TpmAttester;
use vouch_tee::{verify_evidence, Attester, Journal, VerifyError, VerifyOptions, VOUCH_REGISTER};
use vouch_testkit::Swtpm;

fn opts(ak: &str) -> VerifyOptions {
    VerifyOptions {
        tpm_aks: vec![ak.to_string()],
        nonce: Some("n1".into()),
        ..Default::default()
    }
}

#[test]
fn measured_quoted_and_verified_against_swtpm() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let attester = Arc::new(TpmAttester::open(&tpm.tcti, 23).expect("open TPM"));
    let ak = attester.ak_fingerprint().to_string();
    let (mut journal, _) =
        Journal::open(&dir.path().join("log"), attester.clone(), VOUCH_REGISTER).expect("journal");
    journal
        .append("image.verified", json!({"image_digest": "sha256:aa"}))
        .expect("append");
    journal
        .append(
            "container.create",
            json!({"id": "c1", "image_digest": "sha256:aa", "config_digest": "sha384:bb"}),
        )
        .expect("append");
    let ev = journal.evidence(json!({"nonce": "n1"})).expect("evidence");
    let verdict = verify_evidence(&ev, &opts(&ak)).expect("verifies");
    assert!(verdict.hardware);
    assert_eq!(verdict.containers.len(), 1);
    assert_eq!(verdict.containers[0].image_digest, "sha256:aa");
    assert!(verdict.signer.contains(&ak), "{}", verdict.signer);

    // The same TPM gives the same persistent key on the next start.
    drop(journal);
    let again = TpmAttester::open(&tpm.tcti, 23).expect("reopen");
    assert_eq!(again.ak_fingerprint(), ak);

    // An attestation key nobody pinned.
    assert!(matches!(
        verify_evidence(
            &ev,
            &VerifyOptions {
                tpm_aks: vec![],
                ..opts(&ak)
            }
        ),
        Err(VerifyError::UntrustedAk { .. })
    ));
    // Another nonce.
    assert!(matches!(
        verify_evidence(
            &ev,
            &VerifyOptions {
                nonce: Some("n2".into()),
                ..opts(&ak)
            }
        ),
        Err(VerifyError::NonceMismatch { .. })
    ));
    // Runtime data other than what the quote binds.
    let mut other = ev.clone();
    other.runtime_data = json!({"nonce": "n1", "x": 1});
    assert!(matches!(
        verify_evidence(&other, &opts(&ak)),
        Err(VerifyError::ReportDataMismatch { .. })
    ));
    // A tampered log no longer replays to the quoted PCR.
    let mut tampered = ev.clone();
    tampered.event_log[1].content["image_digest"] = json!("sha256:ff");
    assert!(verify_evidence(&tampered, &opts(&ak)).is_err());
    let mut short = ev.clone();
    short.event_log.pop();
    // (its AAEL copy made to match, so that the replay is what refuses it)
    short.aa_eventlog = Some(vouch_measure::aael::to_text(&short.event_log).expect("aael"));
    assert!(matches!(
        verify_evidence(&short, &opts(&ak)),
        Err(VerifyError::ReplayMismatch { .. })
    ));
    // A PCR value in the envelope that is not what was quoted.
    let mut q: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &ev.quote)
            .expect("b64"),
    )
    .expect("quote json");
    q["pcrs"]["sha256"]["0"] = json!("11".repeat(32));
    let mut forged = ev.clone();
    forged.quote = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        serde_json::to_vec(&q).expect("json"),
    );
    assert!(matches!(
        verify_evidence(&forged, &opts(&ak)),
        Err(VerifyError::Rejected { .. })
    ));
}

#[test]
fn a_pcr_extended_behind_vouchs_back_is_detected() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let attester = Arc::new(TpmAttester::open(&tpm.tcti, 23).expect("open TPM"));
    {
        let (mut j, _) = Journal::open(&dir.path().join("log"), attester.clone(), VOUCH_REGISTER)
            .expect("journal");
        j.append("image.verified", json!({"image_digest": "sha256:aa"}))
            .expect("append");
    }
    attester
        .extend(VOUCH_REGISTER, &vouch_measure::sha384(b"not vouch"))
        .expect("extend");
    assert!(Journal::open(&dir.path().join("log"), attester, VOUCH_REGISTER).is_err());
}
