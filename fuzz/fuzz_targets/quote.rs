//! TDX/SGX quotes: parsing, extent, and full DCAP verification with the real collateral.
#![no_main]
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vouch_tee::tdx::dcap;

#[path = "common.rs"]
mod common;

static COLLATERAL: LazyLock<Option<dcap::QuoteCollateralV3>> = LazyLock::new(|| {
    common::vector("tdx/tdx_quote_collateral.json").and_then(|c| dcap::load_collateral(&c).ok())
});

fuzz_target!(|data: &[u8]| {
    let _ = dcap::parse_quote(data);
    let _ = dcap::quote_extent(data);
    if let Some(col) = COLLATERAL.as_ref() {
        let _ = dcap::verify_quote(data, col, 1_750_400_000);
    }
});
