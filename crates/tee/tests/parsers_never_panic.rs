//! Every parser of untrusted evidence bytes returns an error, never a panic, on arbitrary input
//! and on mutations of real evidence (when the vector corpus is present).

use proptest::prelude::*;
use vouch_tee::tdx::dcap;
use vouch_tee::{snp, tcg, tpm};

fn corpus(file: &str) -> Option<Vec<u8>> {
    vouch_testkit::corpus::vectors().and_then(|dir| std::fs::read(dir.join(file)).ok())
}

fn all_parsers(bytes: &[u8]) {
    let _ = tcg::parse(bytes).map(|l| l.replay(tcg::ALG_SHA384));
    let _ = tpm::parse_ak(bytes);
    let _ = snp::parse_report(bytes);
    let _ = dcap::parse_quote(bytes);
    let _ = dcap::quote_extent(bytes);
    let _ = dcap::load_collateral(bytes);
    let _ = serde_json::from_slice::<vouch_tee::Evidence>(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        all_parsers(&bytes);
    }

    #[test]
    fn mutated_real_evidence(
        which in 0usize..6,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let files = [
            "ccel/ccel_data.dat",
            "tdx/tdx_quote",
            "sgx/sgx_quote",
            "snp/attestation.bin",
            "tpm/gce-vtpm-nonce9009/ak_pub.tpmt_public",
            "tpm/gce-vtpm-nonce9009/event_log.binary_bios_measurements",
        ];
        let Some(mut bytes) = corpus(files[which]) else { return Ok(()) };
        for (at, value) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        all_parsers(&bytes);
        let n = cut.index(bytes.len() + 1);
        all_parsers(&bytes[..n]);
        // The verification paths too, with the real collateral and certificates.
        if which == 1 {
            if let Some(col) = corpus("tdx/tdx_quote_collateral.json").and_then(|c| dcap::load_collateral(&c).ok()) {
                let _ = dcap::verify_quote(&bytes, &col, 1_750_400_000);
            }
        }
        if which == 3 {
            if let (Some(vcek), Some(chain)) = (corpus("snp/vcek.der"), corpus("snp/ask_ark_milan.pem")) {
                let _ = snp::verify_report(&bytes, &vcek, &chain, 1_750_400_000);
            }
        }
    }
}
