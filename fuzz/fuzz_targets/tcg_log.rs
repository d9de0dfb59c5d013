//! TCG2 event logs (CCEL, binary_bios_measurements): parsing and replay in every bank.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vouch_tee::tcg;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = tcg::parse(data) {
        for alg in [tcg::ALG_SHA1, tcg::ALG_SHA256, tcg::ALG_SHA384, tcg::ALG_SHA512] {
            let _ = log.replay(alg);
        }
        let _ = log.rtmrs();
    }
});
