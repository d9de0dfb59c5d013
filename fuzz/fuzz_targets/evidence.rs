//! vouch evidence documents (JSON), verified with every backend's verifier (sim allowed, a TPM
//! key pinned), including the TPM quote envelope and the event-log replay.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vouch_tee::{verify_evidence, Evidence, VerifyOptions};

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = Evidence::from_json(data) {
        let opts = VerifyOptions {
            allow_sim: true,
            #[cfg(feature = "tpm")]
            tpm_aks: vec![format!("sha256:{}", "0".repeat(64))],
            ..Default::default()
        };
        let _ = verify_evidence(&ev, &opts);
    }
});
