//! `scripts/bench verify`: verification throughput on real evidence.
//! Usage: bench_verify VECTORS_DIR
//! - TDX quote verification with its collateral already parsed (target: under 1 ms per quote);
//! - TPM quote verification (GCE vTPM, RSA-2048 AK);
//! - SEV-SNP report + certificate chain verification;
//! - event-log replay throughput of vouch records and of TCG2 (CCEL) records
//!   (target: over 1 million records per second).

use std::time::{Duration, Instant};

use serde_json::json;
use vouch_measure::{replay, Record};
use vouch_tee::{dcap, snp, tcg, tpm};

fn time<F: FnMut()>(name: &str, min: Duration, mut f: F) -> f64 {
    // Warm up, then run for at least `min`.
    f();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < min {
        f();
        n += 1;
    }
    let per = start.elapsed().as_secs_f64() / n as f64;
    println!(
        "| {name} | {n} | {:.3} ms | {:.0}/s |",
        per * 1e3,
        1.0 / per
    );
    per
}

fn main() {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: bench_verify VECTORS_DIR"),
    );
    let read = |p: &str| std::fs::read(dir.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let min = Duration::from_secs(2);
    println!("| operation | runs | time per op | ops per second |");
    println!("|:---|---:|---:|---:|");

    let quote = read("tdx/tdx_quote");
    let col = dcap::load_collateral(&read("tdx/tdx_quote_collateral.json")).expect("collateral");
    time(
        "TDX quote verification (dcap-qvl, collateral parsed once)",
        min,
        || {
            dcap::verify_quote(&quote, &col, 1_750_400_000).expect("verify");
        },
    );

    let g = "tpm/gce-vtpm-nonce9009";
    let ak = tpm::parse_ak(&read(&format!("{g}/ak_pub.tpmt_public"))).expect("ak");
    let (attest, sig) = (
        read(&format!("{g}/quote_sha256.tpms_attest")),
        read(&format!("{g}/quote_sha256.tpmt_signature")),
    );
    time("TPM quote verification (RSA-2048, nonce)", min, || {
        tpm::verify_quote(&attest, &sig, &ak, &[0x90, 0x09], None).expect("verify");
    });

    let (report, vcek, chain) = (
        read("snp/attestation.bin"),
        read("snp/vcek.der"),
        read("snp/ask_ark_milan.pem"),
    );
    time("SEV-SNP report + VCEK/ASK/ARK chain", min, || {
        snp::verify_report(&report, &vcek, &chain, 1_750_400_000).expect("verify");
    });

    let records: Vec<Record> = (0..100_000u64)
        .map(|i| {
            Record::new(
                i,
                "container.start",
                json!({"id": format!("{i:064x}"), "pid": i}),
            )
        })
        .collect();
    let per = time("vouch event log replay, 100,000 records", min, || {
        replay(&records).expect("replay");
    });
    println!(
        "| -> vouch records per second | | | {:.0} |",
        100_000.0 / per
    );

    let ccel = tcg::parse(&read("ccel/ccel_data.dat")).expect("ccel");
    let n = ccel.events.len() as f64;
    let per = time("CCEL parse + RTMR replay (43 records)", min, || {
        tcg::parse(&read("ccel/ccel_data.dat"))
            .expect("parse")
            .rtmrs()
            .expect("replay");
    });
    println!(
        "| -> TCG2 records per second (parse + replay) | | | {:.0} |",
        n / per
    );
}
