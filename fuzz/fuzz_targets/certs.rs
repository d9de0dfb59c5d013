//! AK certificates (X.509, PEM or DER), checked against the real Google Cloud AK certificate as a
//! trust anchor and the real AK: chain building, signatures, key match, validity.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vouch_tee::tpm::{self, akcert};

#[path = "common.rs"]
mod common;

static GCE: std::sync::LazyLock<Option<(Vec<u8>, tpm::AkPublic)>> = std::sync::LazyLock::new(|| {
    let cert = common::vector("tpm/gce-vtpm-nonce9009/ak_cert.der")?;
    let ak = tpm::parse_ak(&common::vector("tpm/gce-vtpm-nonce9009/ak_pub.tpmt_public")?).ok()?;
    Some((cert, ak))
});

fuzz_target!(|data: &[u8]| {
    let parsed = akcert::parse_certs(data);
    if let Some((anchor, ak)) = GCE.as_ref() {
        let _ = akcert::certifies(data, ak);
        let _ = akcert::verify_ak_cert(data, &[], std::slice::from_ref(anchor), ak, 1_750_000_000);
        if let Ok(certs) = parsed {
            // The input's certificates as intermediates, and as anchors.
            let _ = akcert::verify_ak_cert(anchor, &certs, &certs, ak, 1_750_000_000);
        }
    }
});
