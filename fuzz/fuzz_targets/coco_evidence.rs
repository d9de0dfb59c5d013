//! Confidential Containers' evidence forms as a KBS receives them: init-data TOML (before the
//! first NUL byte), then the primary evidence JSON, through the sample, TDX, TPM (a key pinned),
//! SNP and Azure vTPM (SNP, TDX; the HCL report and its variable data) verifiers, and the TDX
//! logs (CCEL, AAEL in the TCG2 log or as text) replayed against registers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use vouch_measure::Digest384;
use vouch_tee::coco::{
    init_data_digest, runtime_data, tdx_runtime_log, verify_coco, CocoTee, TdxEvidence,
};
use vouch_tee::VerifyOptions;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|b| *b == 0) else {
        return;
    };
    let init = std::str::from_utf8(&data[..split])
        .ok()
        .and_then(|body| init_data_digest("toml", body).ok());
    let Ok(evidence) = serde_json::from_slice::<Value>(&data[split + 1..]) else {
        return;
    };
    let runtime = runtime_data("bm9uY2U=", &json!({"kty": "EC"}), "");
    let opts = VerifyOptions {
        allow_sample: true,
        ..Default::default()
    };
    let _ = verify_coco(CocoTee::Sample, &evidence, &runtime, init.as_ref(), &opts);
    let _ = verify_coco(CocoTee::Tdx, &evidence, &runtime, init.as_ref(), &opts);
    let _ = verify_coco(CocoTee::Snp, &evidence, &runtime, init.as_ref(), &opts);
    #[cfg(feature = "tpm")]
    {
        let pinned = VerifyOptions {
            tpm_aks: vec![format!("sha256:{}", "0".repeat(64))],
            ..Default::default()
        };
        let _ = verify_coco(CocoTee::Tpm, &evidence, &runtime, init.as_ref(), &pinned);
        let _ = verify_coco(CocoTee::AzSnpVtpm, &evidence, &runtime, init.as_ref(), &opts);
        let _ = verify_coco(CocoTee::AzTdxVtpm, &evidence, &runtime, init.as_ref(), &opts);
    }
    if let Ok(tdx) = serde_json::from_value::<TdxEvidence>(evidence) {
        let _ = tdx_runtime_log(&tdx, &[Digest384::ZERO; 4]);
    }
});
