//! `vouch attest` + `vouch verify` against a real vouchd, and every kind of tampering refused
//! with its reason.

use base64::Engine as _;
use serde_json::Value;
use vouch_testkit::*;

const NONCE: &str = "aabbccddeeff00112233445566778899";

fn evidence(env: &TestEnv) -> (Daemon, Value) {
    let d = env.start();
    let digest = load_busybox(env, &d, "bb");
    d.ok(&["run", "--name", "measured", "bb", "echo", "hi"]);
    let ev = env.path().join("ev.json");
    d.ok(&["attest", "--nonce", NONCE, "-o", ev.to_str().expect("utf8")]);
    let v: Value = serde_json::from_slice(&std::fs::read(&ev).expect("read")).expect("json");
    assert!(v["event_log"].to_string().contains(&digest));
    (d, v)
}

fn verify(env: &TestEnv, ev: &Value, extra: &[&str]) -> std::process::Output {
    let path = env.path().join("check.json");
    std::fs::write(&path, serde_json::to_vec(ev).expect("ser")).expect("write");
    let mut args = vec!["verify", path.to_str().expect("utf8")];
    args.extend_from_slice(extra);
    vouch_with(&env.socket(), &args, &[])
}

#[test]
fn good_evidence_verifies_and_lists_the_container() {
    if !require_root("good_evidence_verifies_and_lists_the_container") {
        return;
    }
    let env = TestEnv::new();
    let (_d, ev) = evidence(&env);
    let out = verify(&env, &ev, &["--nonce", NONCE, "--allow-sim"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Evidence VERIFIED"), "{text}");
    assert!(text.contains("NOT hardware"), "sim must be flagged: {text}");
    assert!(text.contains("measured"), "{text}");
    let out = verify(&env, &ev, &["--nonce", NONCE, "--allow-sim", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["verified"], true);
    assert_eq!(v["containers"][0]["exit_code"], 0);
    let ops: Vec<&str> = ev["event_log"]
        .as_array()
        .expect("log")
        .iter()
        .map(|r| r["op"].as_str().expect("op"))
        .collect();
    assert_eq!(
        ops,
        [
            "image.verified",
            "container.create",
            "container.start",
            "container.exit"
        ]
    );
    // The same log as AAEL text, in the evidence and from `vouch attest --format aael`: it
    // replays by AAEL's own rules (INIT line, then each line) to the quoted register 3, and reads
    // back as the evidence's records.
    let register = v["registers"][3].as_str().expect("register 3").to_string();
    let in_evidence = ev["aa_eventlog"].as_str().expect("aa_eventlog");
    let out = vouch_with(
        &env.socket(),
        &["attest", "--nonce", NONCE, "--format", "aael"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = stdout(&out);
    for text in [in_evidence, exported.as_str()] {
        assert!(
            text.starts_with(&format!("INIT sha384/{}\n", "0".repeat(96))),
            "{text}"
        );
        assert_eq!(
            vouch_measure::aael::replay_text(text)
                .expect("replay")
                .to_hex(),
            register
        );
        let records = vouch_measure::aael::parse_text(text).expect("parse");
        assert_eq!(
            serde_json::to_value(&records).expect("ser"),
            ev["event_log"]
        );
    }
    assert!(
        in_evidence
            .lines()
            .nth(2)
            .expect("create")
            .starts_with("vouch container.create {"),
        "{in_evidence}"
    );
}

#[test]
fn tampered_evidence_fails_with_the_reason() {
    if !require_root("tampered_evidence_fails_with_the_reason") {
        return;
    }
    let env = TestEnv::new();
    let (_d, ev) = evidence(&env);
    let expect_fail = |ev: &Value, extra: &[&str], reason: &str, what: &str| {
        let out = verify(&env, ev, extra);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: tampered evidence accepted"
        );
        assert!(
            stderr(&out).contains(reason),
            "{what}: expected {reason:?} in {}",
            stderr(&out)
        );
    };
    let strict = ["--nonce", NONCE, "--allow-sim"];
    // Sim evidence without --allow-sim.
    expect_fail(
        &ev,
        &["--nonce", NONCE],
        "pass --allow-sim",
        "sim without opt-in",
    );
    // A wrong nonce.
    expect_fail(
        &ev,
        &["--nonce", "ffbbccddeeff00112233445566778899", "--allow-sim"],
        "nonce mismatch",
        "wrong nonce",
    );
    // Runtime data rebound to the verifier's nonce.
    let mut rebound = ev.clone();
    rebound["runtime_data"]["nonce"] = Value::String("ffbbccddeeff00112233445566778899".into());
    expect_fail(
        &rebound,
        &["--nonce", "ffbbccddeeff00112233445566778899", "--allow-sim"],
        "runtime data does not match",
        "rebound",
    );
    // Any byte of the quote: every 7th byte, and the first and last.
    let quote = base64::engine::general_purpose::STANDARD
        .decode(ev["quote"].as_str().expect("quote"))
        .expect("b64");
    let mut positions: Vec<usize> = (0..quote.len()).step_by(7).collect();
    positions.push(quote.len() - 1);
    for i in positions {
        let mut q = quote.clone();
        q[i] ^= 0x01;
        let mut t = ev.clone();
        t["quote"] = Value::String(base64::engine::general_purpose::STANDARD.encode(&q));
        let out = verify(&env, &t, &strict);
        assert_eq!(
            out.status.code(),
            Some(1),
            "quote byte {i} flipped and still accepted"
        );
        assert!(stderr(&out).contains("quote"), "byte {i}: {}", stderr(&out));
    }
    // The AAEL copy edited alone.
    let mut t = ev.clone();
    t["aa_eventlog"] = Value::String(ev["aa_eventlog"].as_str().expect("aael").replacen(
        "container.start",
        "container.stopped",
        1,
    ));
    expect_fail(
        &t,
        &strict,
        "aa_eventlog is not its event log in AAEL form: line 4 differs",
        "aa_eventlog",
    );
    // Any record of the event log (without the AAEL copy, which would be refused first).
    for i in 0..ev["event_log"].as_array().expect("log").len() {
        let mut t = ev.clone();
        t.as_object_mut().expect("object").remove("aa_eventlog");
        let rec = &mut t["event_log"][i]["content"];
        if let Some(obj) = rec.as_object_mut() {
            obj.insert("tampered".into(), Value::Bool(true));
        }
        expect_fail(&t, &strict, "replays to", &format!("record {i}"));
    }
    // A record dropped from the end.
    let mut dropped = ev.clone();
    dropped
        .as_object_mut()
        .expect("object")
        .remove("aa_eventlog");
    dropped["event_log"].as_array_mut().expect("log").pop();
    expect_fail(&dropped, &strict, "replays to", "dropped record");
    // Garbage.
    let path = env.path().join("garbage.json");
    std::fs::write(&path, b"{\"not\": \"evidence\"}").expect("write");
    let out = vouch_with(
        &env.socket(),
        &["verify", path.to_str().expect("utf8"), "--allow-sim"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not vouch evidence"),
        "{}",
        stderr(&out)
    );
}

/// Real evidence of a container that exited with 139, re-encoded so that its digest stays the
/// same (the exit code as 139.0 or 1.39e2; a key twice, the last one saying 0): `vouch verify`
/// refuses each, saying why, instead of showing another exit code.
#[test]
fn re_encoded_evidence_is_refused() {
    if !require_root("re_encoded_evidence_is_refused") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    d.vouch(&["run", "--name", "segv", "bb", "sh", "-c", "exit 139"]);
    let path = env.path().join("ev.json");
    d.ok(&[
        "attest",
        "--nonce",
        NONCE,
        "-o",
        path.to_str().expect("utf8"),
    ]);
    let text = std::fs::read_to_string(&path).expect("read");
    let compact = serde_json::to_string(&serde_json::from_str::<Value>(&text).expect("json"))
        .expect("compact");
    assert!(compact.contains(r#""exit_code":139"#), "{compact}");
    let check = |doc: &str| {
        let p = env.path().join("re.json");
        std::fs::write(&p, doc).expect("write");
        d.vouch(&[
            "verify",
            p.to_str().expect("utf8"),
            "--nonce",
            NONCE,
            "--allow-sim",
        ])
    };
    let out = check(&compact);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("139"), "{}", stdout(&out));
    for (spelt, says) in [
        (r#""exit_code":139.0"#, "cannot be canonicalized"),
        (r#""exit_code":1.39e2"#, "cannot be canonicalized"),
        (r#""exit_code":0,"exit_code":139"#, "appears twice"),
        (r#""exit_code":139,"exit_code":0"#, "appears twice"),
    ] {
        let doc = compact.replace(r#""exit_code":139"#, spelt);
        let out = check(&doc);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{spelt} verified: {}",
            stdout(&out)
        );
        assert!(stderr(&out).contains(says), "{spelt}: {}", stderr(&out));
        assert!(!stdout(&out).contains("VERIFIED"), "{spelt}");
    }
}

#[test]
fn verify_raw_intel_quotes_from_real_hardware() {
    let Some(v) = vectors("verify_raw_intel_quotes_from_real_hardware") else {
        return;
    };
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(vouch());
        cmd.args(args);
        run_bounded(&mut cmd, std::time::Duration::from_secs(60)).expect("vouch")
    };
    let q = |p: &str| v.join(p).to_string_lossy().into_owned();
    let tdx = [
        "verify",
        "--quote",
        &q("tdx/tdx_quote"),
        "--collateral",
        &q("tdx/tdx_quote_collateral.json"),
    ];
    let out = run(&[&tdx[..], &["--at", "1750400000", "--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let v2: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (v2["verified"].clone(), v2["tcb_status"].clone()),
        (Value::Bool(true), Value::from("UpToDate"))
    );
    // Outside the collateral window.
    let out = run(&[&tdx[..], &["--at", "1790000000"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("verification FAILED"),
        "{}",
        stderr(&out)
    );
    // SGX: not UpToDate, so only accepted when its status is allowed explicitly.
    let sgx = [
        "verify",
        "--quote",
        &q("sgx/sgx_quote"),
        "--collateral",
        &q("sgx/sgx_quote_collateral.json"),
        "--at",
        "1750400000",
    ];
    let out = run(&sgx);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("INTEL-SA-00615"), "{}", stderr(&out));
    let out = run(&[
        &sgx[..],
        &["--accept-tcb", "ConfigurationAndSWHardeningNeeded"],
    ]
    .concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb")
    );
}

/// Collateral from a PCCS (played by tests/data/pccs.py with real captured collateral) is kept
/// in the collateral directory; the next verification is offline; collateral past its
/// `nextUpdate` is fetched again; a directory alone finds collateral by FMSPC, whatever the file
/// is called; what is missing or refused is said.
#[test]
fn collateral_from_a_pccs_and_a_collateral_directory() {
    let Some(v) = vectors("collateral_from_a_pccs_and_a_collateral_directory") else {
        return;
    };
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(vouch());
        cmd.args(args);
        run_bounded(&mut cmd, std::time::Duration::from_secs(60)).expect("vouch")
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let quote = s(&v.join("tdx/tdx_quote"));
    let log = tmp.path().join("pccs.log");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pccs.py");
    let pccs = WebServer::script(
        &script,
        &[
            log.as_os_str(),
            v.join("tdx/tdx_quote_collateral.json").as_os_str(),
        ],
    );
    let url = format!("http://127.0.0.1:{}", pccs.port);
    let dir = tmp.path().join("collateral");
    let requests = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let verify = |extra: &[&str]| {
        run(&[
            &["verify", "--quote", &quote, "--at", "1750400000", "--json"],
            extra,
        ]
        .concat())
    };

    let out = verify(&["--pccs", &url, "--collateral-dir", &s(&dir)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got["tcb_status"], "UpToDate");
    assert_eq!(requests(), 4, "pckcrl, tcb, qe/identity, rootcacrl");
    let kept: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].starts_with("tdx-B0C06F000000-"), "{kept:?}");

    // Offline: the directory alone, and the PCCS not asked again while the collateral is current.
    let out = verify(&["--collateral-dir", &s(&dir)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = verify(&["--pccs", &url, "--collateral-dir", &s(&dir)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(requests(), 4);

    // Past its nextUpdate, the collateral is fetched again (and the quote, dated, still fails).
    let out = run(&[
        "verify",
        "--quote",
        &quote,
        "--at",
        "1790000000",
        "--pccs",
        &url,
        "--collateral-dir",
        &s(&dir),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(requests(), 8);

    // A directory holding collateral under any name finds it by the quote's FMSPC.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::write(other.join("notes.json"), b"{\"not\": \"collateral\"}").expect("write");
    std::fs::copy(
        v.join("tdx/tdx_quote_collateral.json"),
        other.join("from-my-pccs.json"),
    )
    .expect("copy");
    let out = verify(&["--collateral-dir", &s(&other)]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Tampered collateral in the directory: refused, with what failed.
    let kept_path = dir.join(&kept[0]);
    let mut doc: Value =
        serde_json::from_slice(&std::fs::read(&kept_path).expect("read")).expect("json");
    let sig = doc["tcb_info_signature"].as_str().expect("sig").to_string();
    let flipped = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    doc["tcb_info_signature"] = Value::from(flipped);
    std::fs::write(&kept_path, serde_json::to_vec(&doc).expect("ser")).expect("write");
    let out = run(&[
        "verify",
        "--quote",
        &quote,
        "--at",
        "1750400000",
        "--collateral-dir",
        &s(&dir),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("tcb"),
        "{}",
        stderr(&out)
    );

    // Nothing for this FMSPC: an empty directory says so; a PCCS without it says so too.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let out = verify(&["--collateral-dir", &s(&empty)]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("no collateral for TDX FMSPC B0C06F000000"),
        "{}",
        stderr(&out)
    );
    let sgx = s(&v.join("sgx/sgx_quote"));
    let out = run(&[
        "verify",
        "--quote",
        &sgx,
        "--at",
        "1750400000",
        "--pccs",
        &url,
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains(&url) && stderr(&out).contains("HTTP 404"),
        "{}",
        stderr(&out)
    );
    // No collateral source at all.
    let out = run(&["verify", "--quote", &quote]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("--pccs URL"), "{}", stderr(&out));
}

#[test]
fn verify_a_real_cloud_vtpm_quote_and_its_event_log() {
    let Some(v) = vectors("verify_a_real_cloud_vtpm_quote_and_its_event_log") else {
        return;
    };
    let g = v.join("tpm/gce-vtpm-nonce9009");
    let p = |n: &str| g.join(n).to_string_lossy().into_owned();
    for bank in ["sha1", "sha256", "sha384"] {
        let (quote, sig, pcrs) = (
            p(&format!("quote_{bank}.tpms_attest")),
            p(&format!("quote_{bank}.tpmt_signature")),
            p(&format!("quote_{bank}.pcrs.json")),
        );
        let base = [
            "verify",
            "--tpm-quote",
            &quote,
            "--tpm-sig",
            &sig,
            "--ak",
            &p("ak_pub.tpmt_public"),
        ];
        let run = |extra: &[&str]| {
            let mut cmd = std::process::Command::new(vouch());
            cmd.args(base).args(extra);
            run_bounded(&mut cmd, std::time::Duration::from_secs(60)).expect("vouch")
        };
        let out = run(&[
            "--nonce",
            "9009",
            "--pcrs",
            &pcrs,
            "--eventlog",
            &p("event_log.binary_bios_measurements"),
            "--json",
        ]);
        assert!(out.status.success(), "{bank}: {}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["verified"], true);
        assert_eq!(
            v["eventlog_replayed_pcrs"],
            serde_json::json!([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        );
        let out = run(&["--nonce", "9008"]);
        assert_eq!(out.status.code(), Some(1), "{bank}: another nonce accepted");
        assert!(stderr(&out).contains("nonce mismatch"), "{}", stderr(&out));
    }
    // Google's certificate for that AK: it fits the AK (here pinned as its own anchor), and
    // without Google's CA among the trusted ones it does not chain.
    let certified = |ca: &str| {
        let mut cmd = std::process::Command::new(vouch());
        cmd.args([
            "verify",
            "--tpm-quote",
            &p("quote_sha256.tpms_attest"),
            "--tpm-sig",
            &p("quote_sha256.tpmt_signature"),
            "--ak",
            &p("ak_pub.tpmt_public"),
            "--nonce",
            "9009",
            "--ak-cert",
            &p("ak_cert.der"),
            "--tpm-ak-ca",
            ca,
            "--at",
            "1750000000",
        ]);
        run_bounded(&mut cmd, std::time::Duration::from_secs(60)).expect("vouch")
    };
    let out = certified(&p("ak_cert.der"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("AK certificate:"), "{}", stdout(&out));
    let out = certified(&v.join("roots/Intel_SGX_Root_CA.pem").to_string_lossy());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("does not chain to a trusted CA")
            && stderr(&out).contains("tpm_ek_v1_cloud_host-signer"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_a_real_sev_snp_report_against_its_certificate_chain() {
    let Some(v) = vectors("verify_a_real_sev_snp_report_against_its_certificate_chain") else {
        return;
    };
    let p = |n: &str| v.join("snp").join(n).to_string_lossy().into_owned();
    let base = [
        "verify",
        "--snp-report",
        &p("attestation.bin"),
        "--vcek",
        &p("vcek.der"),
        "--chain",
        &p("ask_ark_milan.pem"),
    ];
    let run = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(vouch());
        cmd.args(base).args(extra);
        run_bounded(&mut cmd, std::time::Duration::from_secs(60)).expect("vouch")
    };
    // This guest's policy allows debugging: refused by default, accepted only when asked.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("allows debugging"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--allow-debug", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["reported_tcb"],
        serde_json::json!({"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68})
    );
    assert_eq!(v["platform"]["measurement"], v["measurement"]);
    assert_eq!(v["platform"]["signing_key"], "vcek");
    assert_eq!(v["platform"]["tcb_snp"], "5");
    // Before the VCEK was issued.
    let out = run(&["--allow-debug", "--at", "1600000000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not valid at"), "{}", stderr(&out));
}

#[test]
fn golden_values_and_minimum_tcb_from_the_command_line() {
    let Some(v) = vectors("golden_values_and_minimum_tcb_from_the_command_line") else {
        return;
    };
    let p = |n: &str| v.join(n).to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(vouch());
        cmd.args(args);
        run_bounded(&mut cmd, std::time::Duration::from_secs(60)).expect("vouch")
    };
    let tdx = [
        "verify",
        "--quote",
        &p("tdx/tdx_quote"),
        "--collateral",
        &p("tdx/tdx_quote_collateral.json"),
        "--at",
        "1750400000",
    ];
    let mrtd = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";
    assert!(run(&[&tdx[..], &["--mrtd", mrtd]].concat())
        .status
        .success());
    let out = run(&[&tdx[..], &["--mrtd", &"0".repeat(96)]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("golden value"), "{}", stderr(&out));
    let out = run(&[&tdx[..], &["--rtmr", &format!("1={}", "0".repeat(96))]].concat());
    assert!(stderr(&out).contains("RTMR1"), "{}", stderr(&out));
    // TD attributes: claims by default, shown; required or refused by flag, by name.
    let out = run(&tdx);
    assert!(
        stdout(&out).contains("TD attributes: 0000001000000000 (sept_ve_disable)"),
        "{}",
        stdout(&out)
    );
    assert!(run(&[&tdx[..], &["--require-sept-ve-disable"]].concat())
        .status
        .success());
    let out = run(&[&tdx[..], &["--require-td-attribute", "pks"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the TD attribute pks is required and not set"),
        "{}",
        stderr(&out)
    );
    let out = run(&[&tdx[..], &["--refuse-td-attribute", "sept_ve_disable"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the policy refuses it"),
        "{}",
        stderr(&out)
    );
    let out = run(&[&tdx[..], &["--refuse-td-attribute", "bogus"]].concat());
    assert!(
        stderr(&out).contains("--refuse-td-attribute: unknown TD attribute \"bogus\""),
        "{}",
        stderr(&out)
    );
    // --json: the claims, and `platform` under the names a KBS policy reads them by.
    let out = run(&[&tdx[..], &["--json"]].concat());
    let j: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(j["td_attribute_bits"]["sept_ve_disable"], Value::Bool(true));
    assert_eq!(j["platform"]["sept_ve_disable"], "true");
    assert_eq!(j["platform"]["migratable"], "false");
    assert_eq!(j["platform"]["tcb_status"], "UpToDate");
    assert_eq!(j["platform"]["mrtd"], mrtd);
    let snp = [
        "verify",
        "--snp-report",
        &p("snp/attestation.bin"),
        "--vcek",
        &p("snp/vcek.der"),
        "--chain",
        &p("snp/ask_ark_milan.pem"),
        "--allow-debug",
    ];
    assert!(run(&[&snp[..], &["--min-tcb", "2,0,5,68"]].concat())
        .status
        .success());
    let out = run(&[&snp[..], &["--min-tcb", "2,0,6,68"]].concat());
    assert!(
        stderr(&out).contains("below the minimum"),
        "{}",
        stderr(&out)
    );
}
