//! TPM structures: TPMT_PUBLIC, and TPMS_ATTEST + TPMT_SIGNATURE (the input split in two) verified
//! with the real GCE attestation key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vouch_tee::tpm;

#[path = "common.rs"]
mod common;

static AK: std::sync::LazyLock<Option<tpm::AkPublic>> = std::sync::LazyLock::new(|| {
    common::vector("tpm/gce-vtpm-nonce9009/ak_pub.tpmt_public").and_then(|b| tpm::parse_ak(&b).ok())
});

fuzz_target!(|data: &[u8]| {
    let _ = tpm::parse_ak(data);
    if let (Some(ak), Some((&split, rest))) = (AK.as_ref(), data.split_first()) {
        let at = (split as usize).min(rest.len());
        let (attest, sig) = rest.split_at(at);
        let pcr = |_: u16, _: u32| Some(vec![0u8; 32]);
        let _ = tpm::verify_quote(attest, sig, ak, None, Some(&pcr));
    }
});
