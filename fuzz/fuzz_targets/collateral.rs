//! TDX/SGX collateral documents (the collateral directory's JSON layout), then used to verify the
//! real TDX quote.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vouch_tee::tdx::dcap;

#[path = "common.rs"]
mod common;

static QUOTE: std::sync::LazyLock<Option<Vec<u8>>> =
    std::sync::LazyLock::new(|| common::vector("tdx/tdx_quote"));

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = dcap::load_collateral(data) {
        let _ = vouch_tee::tdx::collateral::collateral_json(&c);
        if let Some(q) = QUOTE.as_ref() {
            let _ = dcap::verify_quote(q, &c, 1_750_400_000);
        }
    }
});
