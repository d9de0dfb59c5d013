//! vouchd on a TPM (a real swtpm on loopback): containers measured into PCR 23, evidence that
//! `vouch verify` and `vouch-kbs` accept only with the attestation key pinned, and a secret
//! released to a container on that evidence.

use std::process::Command;

use vouch_testkit::Swtpm;
use vouch_testkit::*;

const SECRET: &[u8] = b"tpm-bound-s3cret";

#[test]
fn containers_on_a_tpm_are_attested_and_get_their_secret() {
    if !require_root("containers_on_a_tpm_are_attested_and_get_their_secret") {
        return;
    }
    let Some(tpm) = Swtpm::start() else { return };
    let env = TestEnv::new();
    let d = env.start_with(&["--tee", "tpm", "--tpm-tcti", &tpm.tcti]);
    let info = d.json(&["tee", "info", "--json"]);
    assert_eq!(info["tee"], "tpm");
    assert_eq!(info["hardware"], true);
    let ak = info["attestation_key"]
        .as_str()
        .expect("attestation key")
        .to_string();
    assert!(ak.starts_with("sha256:") && ak.len() == 71, "{ak}");
    assert!(d.ok(&["tee", "info"]).contains(&format!("--tpm-ak {ak}")));

    load_busybox(&env, &d, "bb");
    assert_eq!(
        d.ok(&["run", "--rm", "bb", "echo", "measured"]).trim(),
        "measured"
    );

    // Evidence verifies offline with the key pinned, and says why without it.
    let ev = env.path().join("ev.json");
    d.ok(&[
        "attest",
        "--nonce",
        "00112233445566778899aabbccddeeff",
        "-o",
        ev.to_str().expect("utf8"),
    ]);
    let ev_path = ev.to_str().expect("utf8");
    let ok = d.vouch(&["verify", ev_path, "--tpm-ak", &ak, "--json"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let verdict: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("json");
    assert_eq!(verdict["tee"], "tpm");
    assert!(
        verdict["containers"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{verdict}"
    );
    let refused = d.vouch(&["verify", ev_path]);
    assert!(!refused.status.success());
    // The library says why; the CLI adds what to do, in its own flags.
    assert!(
        stderr(&refused).contains("not trusted: it is neither pinned nor certified")
            && stderr(&refused).contains("(pin it with --tpm-ak, or trust the CA"),
        "{}",
        stderr(&refused)
    );

    // A KBS that pins the key releases the secret to the container.
    let admin = env.path().join("admin");
    assert!(Command::new(vouch_kbs())
        .args(["keygen", "--out-dir"])
        .arg(&admin)
        .status()
        .expect("keygen")
        .success());
    let args: Vec<std::ffi::OsString> = vec![
        "--state-dir".into(),
        env.path().join("kbs").into(),
        "--admin-key".into(),
        admin.join("admin.pub").into(),
        "--tpm-ak".into(),
        ak.clone().into(),
    ];
    let (mut kbs, addr) = spawn_kbs(&args, &env.path().join("kbs.log"));
    let secret_file = env.path().join("secret.bin");
    std::fs::write(&secret_file, SECRET).expect("write");
    let put = Command::new(vouch_kbs())
        .args(["resource", "set", "default/key/tpm", "--file"])
        .arg(&secret_file)
        .args(["--kbs", &addr, "--admin-key"])
        .arg(admin.join("admin.key"))
        .output()
        .expect("resource set");
    assert!(put.status.success(), "{}", stderr(&put));
    let url = format!("kbs://{addr}/default/key/tpm");
    let run = || {
        d.vouch(&[
            "run",
            "--rm",
            "--secret",
            &url,
            "bb",
            "cat",
            "/secret/default/key/tpm",
        ])
    };
    // Boot chain before workload: without reference values for PCRs 0-7 the default policy
    // refuses, naming what is missing.
    let refused = run();
    assert_eq!(refused.status.code(), Some(125), "{}", stdout(&refused));
    for pcr in 0..8 {
        assert!(
            stderr(&refused).contains(&format!(
                "no reference value for the tpm boot measurement pcr{pcr} "
            )),
            "{}",
            stderr(&refused)
        );
    }
    // The owner sets them from what the verifier reports (a known-good boot), and one wrong one
    // is refused by name.
    let platform = verdict["platform"].as_object().expect("platform").clone();
    assert_eq!(platform.len(), 8, "{verdict}");
    let set_refs = |refs: &serde_json::Value| {
        let file = env.path().join("refs.json");
        std::fs::write(&file, refs.to_string()).expect("write");
        let out = Command::new(vouch_kbs())
            .args(["reference", "--file"])
            .arg(&file)
            .args(["--kbs", &addr, "--admin-key"])
            .arg(admin.join("admin.key"))
            .output()
            .expect("reference");
        assert!(out.status.success(), "{}", stderr(&out));
    };
    let mut tpm_refs = serde_json::Map::new();
    for (k, v) in &platform {
        tpm_refs.insert(k.clone(), serde_json::json!([v]));
    }
    let mut wrong = tpm_refs.clone();
    wrong.insert("pcr7".into(), serde_json::json!(["ff".repeat(32)]));
    set_refs(&serde_json::json!({"tpm": wrong}));
    let refused = run();
    assert_eq!(refused.status.code(), Some(125));
    assert!(
        stderr(&refused).contains("the tpm boot measurement pcr7 is"),
        "{}",
        stderr(&refused)
    );
    set_refs(&serde_json::json!({"tpm": tpm_refs}));
    let out = run();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(kbs.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = kbs.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, SECRET);
}

/// The attestation key of TPM evidence as a PEM public key (for a CA to certify).
fn ak_public_pem(evidence: &serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let quote_json = b64
        .decode(evidence["quote"].as_str().expect("quote"))
        .expect("base64");
    let quote: serde_json::Value = serde_json::from_slice(&quote_json).expect("quote json");
    let ak = vouch_tee::tpm::parse_ak(&b64.decode(quote["ak"].as_str().expect("ak")).expect("ak"))
        .expect("parse ak");
    let spki = vouch_tee::tpm::ak_spki(&ak);
    let text = b64.encode(spki);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

/// A CA (root -> intermediate, both ECDSA) certifies the TPM's attestation key: vouchd carries
/// the certificate and the intermediate in its evidence, and verifiers that trust the root accept
/// the evidence without pinning the key; others refuse it, saying why. vouchd refuses a
/// certificate for another key.
#[test]
fn an_ak_certificate_lets_verifiers_trust_the_tpm_without_pinning() {
    if !require_root("an_ak_certificate_lets_verifiers_trust_the_tpm_without_pinning") {
        return;
    }
    let Some(tpm) = Swtpm::start() else { return };
    let env = TestEnv::new();
    let dir = env.path().join("pki");
    std::fs::create_dir(&dir).expect("mkdir");
    let nonce = "00112233445566778899aabbccddeeff";
    let attest = |d: &Daemon, name: &str| -> (String, serde_json::Value) {
        let path = env.path().join(name).to_string_lossy().into_owned();
        d.ok(&["attest", "--nonce", nonce, "-o", &path]);
        let ev = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        (path, ev)
    };
    let pem = {
        let d = env.start_with(&["--tee", "tpm", "--tpm-tcti", &tpm.tcti]);
        ak_public_pem(&attest(&d, "plain.json").1)
    };
    std::fs::write(dir.join("ak.pub"), pem).expect("write");
    std::fs::write(dir.join("ca.ext"), "basicConstraints=critical,CA:TRUE\n").expect("write");
    for (name, curve) in [("root", "P-256"), ("other", "P-256"), ("ica", "P-384")] {
        openssl(
            &dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                &format!("ec_paramgen_curve:{curve}"),
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN=vouch test {name}"),
            ],
        );
    }
    for root in ["root", "other"] {
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{root}.csr"),
                "-key",
                &format!("{root}.key"),
                "-days",
                "30",
                "-extfile",
                "ca.ext",
                "-out",
                &format!("{root}.pem"),
            ],
        );
    }
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "ica.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "ca.ext",
            "-out",
            "ica.pem",
        ],
    );
    openssl(
        &dir,
        &[
            "x509",
            "-new",
            "-subj",
            "/CN=vouch test AK",
            "-force_pubkey",
            "ak.pub",
            "-CA",
            "ica.pem",
            "-CAkey",
            "ica.key",
            "-days",
            "30",
            "-out",
            "ak.pem",
        ],
    );
    let bundle = [
        std::fs::read(dir.join("ak.pem")).expect("ak"),
        std::fs::read(dir.join("ica.pem")).expect("ica"),
    ]
    .concat();
    std::fs::write(dir.join("ak-chain.pem"), bundle).expect("write");
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();

    let d = env.start_with(&[
        "--tee",
        "tpm",
        "--tpm-tcti",
        &tpm.tcti,
        "--tpm-ak-cert",
        &p("ak-chain.pem"),
    ]);
    let (ev, _) = attest(&d, "certified.json");
    let ok = d.vouch(&["verify", &ev, "--tpm-ak-ca", &p("root.pem"), "--json"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let verdict: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("json");
    let signer = verdict["signer"].as_str().expect("signer");
    assert!(
        signer.contains("certified by") && signer.contains("vouch test root"),
        "{signer}"
    );
    let refused = d.vouch(&["verify", &ev]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("not trusted"),
        "{}",
        stderr(&refused)
    );
    let refused = d.vouch(&["verify", &ev, "--tpm-ak-ca", &p("other.pem")]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("does not chain to a trusted CA"),
        "{}",
        stderr(&refused)
    );
    drop(d);

    // The certificate where cloud vTPMs keep it, in an NV index (DER, with padding after it):
    // vouchd reads it from there.
    openssl(
        &dir,
        &["x509", "-in", "ak.pem", "-outform", "der", "-out", "ak.der"],
    );
    let der = std::fs::read(dir.join("ak.der")).expect("der");
    let padded = [der.clone(), vec![0xff; 64]].concat();
    std::fs::write(dir.join("ak.nv"), &padded).expect("write");
    let tpm2 = |args: &[&str]| {
        let out = Command::new(args[0])
            .args(&args[1..])
            .args(["-T", &tpm.tcti])
            .output()
            .expect("tpm2-tools");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    let size = padded.len().to_string();
    tpm2(&[
        "tpm2_nvdefine",
        "0x01C101D0",
        "-C",
        "o",
        "-s",
        &size,
        "-a",
        "ownerread|ownerwrite|authread|authwrite",
    ]);
    tpm2(&["tpm2_nvwrite", "0x01C101D0", "-C", "o", "-i", &p("ak.nv")]);
    let d = env.start_with(&[
        "--tee",
        "tpm",
        "--tpm-tcti",
        &tpm.tcti,
        "--tpm-ak-cert-nv",
        "0x01C101D0",
    ]);
    let (ev, _) = attest(&d, "from-nv.json");
    // Only the AK certificate is in NV: its issuer is the anchor here.
    let ok = d.vouch(&["verify", &ev, "--tpm-ak-ca", &p("ica.pem")]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    drop(d);

    // A certificate for some other key is refused when vouchd starts.
    openssl(&dir, &["genrsa", "-out", "stranger.key", "2048"]);
    openssl(
        &dir,
        &[
            "rsa",
            "-in",
            "stranger.key",
            "-pubout",
            "-out",
            "stranger.pub",
        ],
    );
    openssl(
        &dir,
        &[
            "x509",
            "-new",
            "-subj",
            "/CN=stranger",
            "-force_pubkey",
            "stranger.pub",
            "-CA",
            "ica.pem",
            "-CAkey",
            "ica.key",
            "-days",
            "30",
            "-out",
            "stranger.pem",
        ],
    );
    let out = run_bounded(
        Command::new(vouchd())
            .arg("--state-dir")
            .arg(env.path().join("state2"))
            .arg("--socket")
            .arg(env.path().join("s2.sock"))
            .args([
                "--tee",
                "tpm",
                "--tpm-tcti",
                &tpm.tcti,
                "--tpm-ak-cert",
                &p("stranger.pem"),
            ]),
        std::time::Duration::from_secs(30),
    )
    .expect("vouchd");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not fit this TPM"),
        "{}",
        stderr(&out)
    );
}
