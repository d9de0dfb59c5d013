//! `scripts/bench verify`: verification throughput on real evidence.
//! Usage: bench_verify VECTORS_DIR
//! - TDX quote verification with its collateral already parsed (target: under 1 ms per quote);
//! - TPM quote verification (GCE vTPM, RSA-2048 AK);
//! - SEV-SNP report + certificate chain verification;
//! - TPM round trip against a real swtpm: extend PCR 23 (two banks), quote, verify the evidence;
//!   and the same quote taken with tpm2-tools (`tpm2_quote`) as the peer;
//! - event-log replay throughput of vouch records and of TCG2 (CCEL) records
//!   (target: over 1 million records per second).

use std::time::{Duration, Instant};

use serde_json::json;
use vouch_measure::{replay, Record};
use vouch_tee::tdx::dcap;
use vouch_tee::{snp, tcg, tpm};

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
        tpm::verify_quote(&attest, &sig, &ak, Some(&[0x90, 0x09]), None).expect("verify");
    });

    if let Some(tpm_sim) = vouch_testkit::Swtpm::start() {
        let attester =
            std::sync::Arc::new(vouch_tee::tpm::TpmAttester::open(&tpm_sim.tcti, 23).expect("TPM"));
        let opts = vouch_tee::VerifyOptions {
            tpm_aks: vec![attester.ak_fingerprint().to_string()],
            ..Default::default()
        };
        let state = std::env::temp_dir().join(format!("vouch-bench-tpm-{}", std::process::id()));
        let _ = std::fs::remove_file(&state);
        let (mut journal, _) =
            vouch_tee::Journal::open(&state, attester, vouch_tee::VOUCH_REGISTER).expect("journal");
        let mut i = 0u64;
        time(
            "TPM round trip on swtpm: extend + quote + verify evidence",
            min,
            || {
                i += 1;
                journal
                    .append("container.start", json!({"id": "bench", "pid": i}))
                    .expect("extend");
                let ev = journal
                    .evidence(json!({"nonce": i.to_string()}))
                    .expect("quote");
                vouch_tee::verify_evidence(&ev, &opts).expect("verify");
            },
        );
        drop(journal);
        let _ = std::fs::remove_file(&state);
        // The peer: the same quote (same persistent AK, same PCRs), taken with tpm2-tools.
        let tcti = tpm_sim.tcti.clone();
        let handle = format!("{:#x}", vouch_tee::tpm::AK_HANDLE);
        time(
            "peer: tpm2_quote (tpm2-tools, same AK and PCRs; quote only, no verification)",
            min,
            || {
                let ok = std::process::Command::new("tpm2_quote")
                    .args(["-T", &tcti, "-c", &handle])
                    .args([
                        "-l",
                        "sha256:0,1,2,3,4,5,6,7,23+sha384:23",
                        "-q",
                        "00112233",
                    ])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "tpm2_quote failed");
            },
        );
    }

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
