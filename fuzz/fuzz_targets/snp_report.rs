//! SEV-SNP reports: parsing, and verification against the real VCEK and ASK/ARK chain.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vouch_tee::snp;

#[path = "common.rs"]
mod common;

static CERTS: std::sync::LazyLock<Option<(Vec<u8>, Vec<u8>)>> = std::sync::LazyLock::new(|| {
    Some((common::vector("snp/vcek.der")?, common::vector("snp/ask_ark_milan.pem")?))
});

fuzz_target!(|data: &[u8]| {
    let _ = snp::parse_report(data);
    if let Some((vcek, chain)) = CERTS.as_ref() {
        let _ = snp::verify_report(data, vcek, chain, 1_750_400_000);
    }
});
