//! Golden values: a signed reference document attached to an image in a real registry, checked by
//! vouchd before launch ("NOT verified: <what differs>") and measured when it matches.

use vouch_testkit::*;

const PW: &str = "golden-pw";

fn launch_fails_with(d: &Daemon, args: &[&str], want: &str) {
    let out = d.vouch(args);
    assert!(!out.status.success(), "{args:?} ran");
    assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
}

#[test]
fn launches_must_match_their_signed_golden_value() {
    if !require_root("launches_must_match_their_signed_golden_value") {
        return;
    }
    let env = TestEnv::new();
    let Some(reg) = Registry::start(env.path()) else {
        return;
    };
    let (layout, _) = busybox_layout(&env);
    reg.push(&layout, "bb", "app/bb:1");
    reg.push(&layout, "bb", "app/plain:1");
    let other = env.path().join("other");
    write_layout(
        &other,
        "o",
        &[busybox_layer()],
        &["/bin/true"],
        &["PATH=/bin"],
    );
    reg.push(&other, "o", "app/other:1");
    let image = format!("{}/app/bb:1", reg.addr);
    let p = |name: &str| env.path().join(name).to_str().expect("utf8").to_string();

    // The publisher: a key, the document of the image as it is in the registry, signed, attached.
    let plain = env.start();
    let pw = [("VOUCH_KEY_PASSWORD", PW)];
    assert!(plain
        .vouch_env(&["key", "generate", "--output-prefix", &p("gv")], &pw)
        .status
        .success());
    plain.ok(&[
        "golden",
        "create",
        "--insecure-registry",
        "--allow-args",
        &image,
        "-o",
        &p("doc.json"),
    ]);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("doc.json")).expect("doc")).expect("json");
    assert_eq!(doc["cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(doc["env_keys"], serde_json::json!(["PATH"]));
    let out = plain.vouch_env(
        &[
            "golden",
            "sign",
            &p("doc.json"),
            "--key",
            &p("gv.key"),
            "-o",
            &p("signed.json"),
            "--push",
            &image,
            "--insecure-registry",
        ],
        &pw,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let verified = plain.ok(&[
        "golden",
        "verify",
        &p("signed.json"),
        "--key",
        &p("gv.pub"),
        "--image",
        &image,
        "--insecure-registry",
    ]);
    assert!(verified.contains("verified"), "{verified}");
    // The same document does not describe another image.
    let out = plain.vouch(&[
        "golden",
        "verify",
        &p("signed.json"),
        "--key",
        &p("gv.pub"),
        "--image",
        &format!("{}/app/other:1", reg.addr),
        "--insecure-registry",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("NOT verified: manifest digest"),
        "{}",
        stdout(&out)
    );
    drop(plain);

    // The launcher trusts the publisher's key.
    let _ = std::fs::remove_dir_all(env.state());
    let d = env.start_with(&["--tee", "sim", "--golden-key", &p("gv.pub")]);
    d.ok(&["pull", "--insecure-registry", &image]);
    assert_eq!(
        d.ok(&["run", "--rm", &image, "echo", "as-published"])
            .trim(),
        "as-published"
    );
    let ev = p("ev.json");
    d.ok(&[
        "attest",
        "--nonce",
        "00112233445566778899aabbccddeeff",
        "-o",
        &ev,
    ]);
    let evidence: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ev).expect("ev")).expect("json");
    let record = evidence["event_log"]
        .as_array()
        .expect("log")
        .iter()
        .find(|r| r["op"] == "image.verified")
        .expect("image.verified")
        .clone();
    assert!(
        record["content"]["golden_value"]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{record}"
    );

    // What the document does not allow is refused before anything runs.
    launch_fails_with(
        &d,
        &["run", "--rm", "-e", "TOKEN=x", &image, "true"],
        "NOT verified: environment variable TOKEN is not allowed",
    );
    // A document for another image, given explicitly.
    d.ok(&[
        "pull",
        "--insecure-registry",
        &format!("{}/app/plain:1", reg.addr),
    ]);
    d.ok(&[
        "pull",
        "--insecure-registry",
        &format!("{}/app/other:1", reg.addr),
    ]);
    launch_fails_with(
        &d,
        &[
            "run",
            "--rm",
            "--golden",
            &p("signed.json"),
            &format!("{}/app/other:1", reg.addr),
        ],
        "NOT verified: manifest digest",
    );
    // The same document fetched from a URL (a real web server on loopback).
    let web = WebServer::serve(env.path());
    let port = web.port;
    let url = format!("http://127.0.0.1:{port}/signed.json");
    let by_url = d.vouch(&[
        "run",
        "--rm",
        "--golden",
        &url,
        &format!("{}/app/plain:1", reg.addr),
        "echo",
        "by-url",
    ]);
    let missing = d.vouch(&[
        "run",
        "--rm",
        "--golden",
        &format!("http://127.0.0.1:{port}/nope.json"),
        &image,
        "true",
    ]);
    drop(web);
    assert!(by_url.status.success(), "{}", stderr(&by_url));
    assert_eq!(stdout(&by_url).trim(), "by-url");
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );
    // A document whose payload was changed.
    let mut signed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("signed.json")).expect("signed")).expect("json");
    let mut payload = doc.clone();
    payload["env_keys"] = serde_json::json!(["PATH", "TOKEN"]);
    signed["payload"] = serde_json::json!(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        serde_json::to_vec(&payload).expect("json"),
    ));
    std::fs::write(p("forged.json"), signed.to_string()).expect("write");
    launch_fails_with(
        &d,
        &[
            "run",
            "--rm",
            "-e",
            "TOKEN=x",
            "--golden",
            &p("forged.json"),
            &image,
            "true",
        ],
        "does not verify",
    );
    drop(d);

    // With --require-golden, an image without one is refused.
    let d = env.start_with(&[
        "--tee",
        "sim",
        "--golden-key",
        &p("gv.pub"),
        "--require-golden",
    ]);
    launch_fails_with(
        &d,
        &["run", "--rm", &format!("{}/app/other:1", reg.addr)],
        "NOT verified: no golden value",
    );
    drop(d);

    // The same requirement per scope, from the image policy: app/bb carries a golden value,
    // app/other does not.
    let policy = p("policy.json");
    std::fs::write(
        &policy,
        serde_json::json!({
            "default": [{"type": "insecureAcceptAnything"}],
            "transports": {"docker": {
                format!("{}/app", reg.addr): [{"type": "insecureAcceptAnything"}, {"type": "vouchGoldenValue"}]
            }}
        })
        .to_string(),
    )
    .expect("policy");
    let _ = std::fs::remove_dir_all(env.state());
    let d = env.start_with(&[
        "--tee",
        "sim",
        "--golden-key",
        &p("gv.pub"),
        "--image-policy",
        &policy,
    ]);
    d.ok(&["pull", "--insecure-registry", &image]);
    d.ok(&[
        "pull",
        "--insecure-registry",
        &format!("{}/app/plain:1", reg.addr),
    ]);
    d.ok(&[
        "pull",
        "--insecure-registry",
        &format!("{}/app/other:1", reg.addr),
    ]);
    // app/plain is the same image as app/bb: the golden value stays with the digest.
    assert_eq!(
        d.ok(&["run", "--rm", &image, "echo", "golden"]).trim(),
        "golden"
    );
    launch_fails_with(
        &d,
        &["run", "--rm", &format!("{}/app/other:1", reg.addr)],
        "NOT verified: the image policy requires a golden value",
    );
}

/// A golden value can pin the whole runtime spec: vouchd refuses a launch whose measured spec
/// differs (and says where), two launches of the same workload measure the same, and `vouch
/// verify --golden` recomputes the digest from the document and compares every container.
#[test]
fn a_pinned_runtime_spec_is_enforced_and_checked_by_verify() {
    if !require_root("a_pinned_runtime_spec_is_enforced_and_checked_by_verify") {
        return;
    }
    let env = TestEnv::new();
    let Some(reg) = Registry::start(env.path()) else {
        return;
    };
    let (layout, _) = busybox_layout(&env);
    reg.push(&layout, "bb", "app/bb:1");
    let image = format!("{}/app/bb:1", reg.addr);
    let p = |name: &str| env.path().join(name).to_str().expect("utf8").to_string();
    let pw = [("VOUCH_KEY_PASSWORD", PW)];
    assert!(vouch_with(
        &env.socket(),
        &["key", "generate", "--output-prefix", &p("gv")],
        &pw
    )
    .status
    .success());
    let d = env.start_with(&["--tee", "sim", "--golden-key", &p("gv.pub")]);
    d.ok(&["pull", "--insecure-registry", &image]);
    let workload = ["-e", "MODE=prod", "-v", "data:/data", "-m", "32m"];
    let mut run_ref = vec!["run", "-d", "--name", "ref"];
    run_ref.extend(workload);
    run_ref.extend([image.as_str(), "sleep", "30"]);
    d.ok(&run_ref);
    let spec = d.json(&["inspect", "--spec", "ref"]);
    let measured = d.json(&["inspect", "ref"])[0]["config_digest"].clone();
    assert_eq!(
        spec[0]["config_digest"], measured,
        "the spec read back is the one measured"
    );
    let projection = &spec[0]["spec"];
    assert!(projection.get("hostname").is_none(), "{projection}");
    assert!(projection.pointer("/root/path").is_none());
    assert!(
        projection.to_string().contains("$ROOT/volumes/data"),
        "{projection}"
    );
    assert!(projection["linux"]["seccomp"]["syscalls"][0]["names"]
        .as_array()
        .is_some_and(|n| n.len() > 100));

    d.ok(&[
        "golden",
        "create",
        "--insecure-registry",
        &image,
        "--spec-from",
        "ref",
        "-o",
        &p("doc.json"),
    ]);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("doc.json")).expect("doc")).expect("json");
    assert_eq!(doc["spec_digest"], measured);
    assert_eq!(doc["cmd"], serde_json::json!(["sleep", "30"]));
    let sign = |doc: &str, out: &str| {
        let o = d.vouch_env(
            &[
                "golden",
                "sign",
                &p(doc),
                "--key",
                &p("gv.key"),
                "-o",
                &p(out),
            ],
            &pw,
        );
        assert!(o.status.success(), "{}", stderr(&o));
    };
    sign("doc.json", "signed.json");
    let signed = p("signed.json");

    // The same workload under the document: another id, the same measured spec.
    let mut run = vec!["run", "-d", "--name", "pinned", "--golden", signed.as_str()];
    run.extend(workload);
    run.extend([image.as_str(), "sleep", "30"]);
    d.ok(&run);
    assert_eq!(d.json(&["inspect", "pinned"])[0]["config_digest"], measured);
    // Anything else is refused before it runs, with where the spec differs.
    for (flags, at) in [
        (["-e", "MODE=dev", "-m", "32m"], "/process/env/"),
        (
            ["-e", "MODE=prod", "-m", "64m"],
            "/linux/resources/memory/limit",
        ),
    ] {
        let mut run = vec![
            "run",
            "--rm",
            "--golden",
            signed.as_str(),
            "-v",
            "data:/data",
        ];
        run.extend(flags);
        run.extend([image.as_str(), "sleep", "30"]);
        let out = d.vouch(&run);
        assert!(!out.status.success(), "{flags:?} ran");
        let err = stderr(&out);
        assert!(
            err.contains("NOT verified: the runtime spec digest is sha384:")
                && err.contains(&format!(
                    "the golden value says {}",
                    measured.as_str().expect("digest")
                ))
                && err.contains(&format!("they differ first at {at}")),
            "{flags:?}: {err}"
        );
    }

    // The verifier recomputes the digest from the document and compares each container.
    let nonce = "00112233445566778899aabbccddeeff";
    let verify = |ev: &str, golden: &str| {
        d.vouch(&[
            "verify",
            &p(ev),
            "--allow-sim",
            "--nonce",
            nonce,
            "--golden",
            &p(golden),
            "--golden-key",
            &p("gv.pub"),
            "--json",
        ])
    };
    d.ok(&["attest", "--nonce", nonce, "-o", &p("ev.json")]);
    let out = verify("ev.json", "signed.json");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["nonce_required"], true);
    assert_eq!(v["nonce_checked"], true);
    assert_eq!(v["golden"]["matches"], true, "{v}");
    assert_eq!(v["golden"]["spec_recomputed"], true);
    assert_eq!(v["golden"]["containers"].as_array().map(Vec::len), Some(2));

    // A container of the image with another spec makes the check fail, naming it.
    let other = d
        .ok(&["run", "-d", &image, "sleep", "30"])
        .trim()
        .to_string();
    d.ok(&["attest", "--nonce", nonce, "-o", &p("ev2.json")]);
    let out = verify("ev2.json", "signed.json");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["golden"]["matches"], false);
    let differs: Vec<&str> = v["golden"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter(|c| c["spec_matches"] == false)
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(differs, [other.as_str()]);

    // A document whose spec was edited after its digest was taken is refused when opened.
    let mut tampered = doc.clone();
    tampered["spec"]["process"]["env"][0] = serde_json::json!("MODE=dev");
    std::fs::write(p("tampered.json"), tampered.to_string()).expect("write");
    sign("tampered.json", "tampered-signed.json");
    let out = verify("ev.json", "tampered-signed.json");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("its spec has digest sha384:")
            && stderr(&out).contains("not its spec_digest"),
        "{}",
        stderr(&out)
    );
    d.ok(&["rm", "-f", "ref", "pinned", &other]);
}
