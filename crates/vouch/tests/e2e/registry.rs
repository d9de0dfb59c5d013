//! Pulling from a real OCI registry (`docker-registry` on loopback, images pushed with skopeo):
//! by tag and by digest, then run; and the refusals: a corrupted blob in the registry's storage,
//! an unknown tag, plain HTTP without --insecure-registry. A failed pull leaves nothing behind.

use std::path::{Path, PathBuf};

use vouch_testkit::*;

fn store_blobs(env: &TestEnv) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.state().join("images/blobs/sha256"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn pull_by_tag_and_digest_then_run() {
    if !require_root("pull_by_tag_and_digest_then_run") {
        return;
    }
    let env = TestEnv::new();
    let Some(reg) = Registry::start(env.path()) else {
        return;
    };
    let (layout, digest) = busybox_layout(&env);
    reg.push(&layout, "bb", "test/bb:latest");
    let d = env.start();
    let reference = format!("{}/test/bb:latest", reg.addr);

    let out = d.vouch(&["pull", "--insecure-registry", &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&digest), "{}", stdout(&out));
    // Not a terminal: one plain line per layer started and done, no progress bars.
    let err = stderr(&out);
    assert!(
        err.contains("Fetching ") && err.contains("Fetched ") && !err.contains('\x1b'),
        "{err}"
    );
    let images = d.json(&["image", "ls", "--json"]);
    assert_eq!(images[0]["manifest_digest"], digest.as_str());
    assert_eq!(images[0]["names"][0], reference.as_str());
    assert_eq!(
        d.ok(&["run", "--rm", &reference, "echo", "from-the-registry"])
            .trim(),
        "from-the-registry"
    );

    // `vouch run` pulls what it does not have (here by digest, into a fresh daemon), and its
    // stdout stays the container's.
    let fresh = TestEnv::new();
    let d2 = fresh.start_with(&["--tee", "sim", "--insecure-registry", &reg.addr]);
    let run = d2.vouch(&[
        "run",
        "--rm",
        &format!("{}/test/bb@{digest}", reg.addr),
        "echo",
        "pulled-by-run",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(stdout(&run), "pulled-by-run\n");
    assert!(stderr(&run).contains("Pulled "), "{}", stderr(&run));
    let never = d2.vouch(&[
        "run",
        "--rm",
        "--pull",
        "never",
        &format!("{}/test/bb:latest", reg.addr),
        "true",
    ]);
    assert!(!never.status.success());
    assert!(
        stderr(&never).contains("no such image"),
        "{}",
        stderr(&never)
    );
    drop(d2);

    // By digest: the same image, nothing fetched twice.
    let blobs = store_blobs(&env);
    let by_digest = format!("{}/test/bb@{digest}", reg.addr);
    assert_eq!(
        d.ok(&["image", "pull", "-q", "--insecure-registry", &by_digest])
            .trim(),
        digest
    );
    assert_eq!(store_blobs(&env), blobs);

    // An unknown tag, and HTTPS against a plain-HTTP registry: clear errors.
    let missing = d.vouch(&[
        "pull",
        "--insecure-registry",
        &format!("{}/test/bb:nope", reg.addr),
    ]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).to_lowercase().contains("manifest"),
        "{}",
        stderr(&missing)
    );
    let tls = d.vouch(&["pull", &reference]);
    assert!(!tls.status.success());
    assert!(stderr(&tls).contains("registry"), "{}", stderr(&tls));
}

#[test]
fn a_corrupted_blob_fails_the_pull_and_leaves_nothing() {
    if !require_root("a_corrupted_blob_fails_the_pull_and_leaves_nothing") {
        return;
    }
    let env = TestEnv::new();
    let Some(reg) = Registry::start(env.path()) else {
        return;
    };
    let (layout, _) = busybox_layout(&env);
    reg.push(&layout, "bb", "test/bb:latest");
    // Flip one byte of the layer as the registry stores it (same length, other content).
    let manifest: serde_json::Value = {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
                .expect("json");
        let m = index["manifests"][0]["digest"]
            .as_str()
            .expect("digest")
            .to_string();
        serde_json::from_slice(
            &std::fs::read(
                layout
                    .join("blobs/sha256")
                    .join(m.trim_start_matches("sha256:")),
            )
            .expect("manifest"),
        )
        .expect("json")
    };
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer")
        .to_string();
    let data = reg.blob_data(&layer);
    let mut bytes = std::fs::read(&data).expect("registry blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).expect("corrupt");

    let d = env.start();
    let out = d.vouch(&[
        "pull",
        "--insecure-registry",
        &format!("{}/test/bb:latest", reg.addr),
    ]);
    assert!(!out.status.success());
    // vouch's own check, or the client library's (it checks too, while streaming).
    let err = stderr(&out);
    assert!(
        err.contains(&layer)
            && (err.contains("does not match its digest") || err.contains("Invalid digest")),
        "{err}"
    );
    assert!(
        !store_blobs(&env).contains(&layer.trim_start_matches("sha256:").to_string()),
        "the corrupt layer was kept"
    );
    store_is_clean(&env, &d);
}

/// An image policy (`policy.json` in the test's directory) that rejects everything but images
/// under `scope` signed by `key` (a prefix from [`keygen`]) with a cosign signature.
pub(crate) fn signature_policy(env: &TestEnv, scope: &str, key: &Path) -> PathBuf {
    let policy = env.path().join("policy.json");
    std::fs::write(
        &policy,
        serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {
                scope: [{"type": "sigstoreSigned", "keyPath": key.with_extension("pub")}]
            }}
        })
        .to_string(),
    )
    .expect("policy");
    policy
}

pub(crate) fn keygen(env: &TestEnv, d: &Daemon, prefix: &str) -> (PathBuf, String) {
    let p = env.path().join(prefix);
    let out = d.vouch_env(
        &[
            "key",
            "generate",
            "--output-prefix",
            p.to_str().expect("utf8"),
        ],
        &[("VOUCH_KEY_PASSWORD", "correct horse")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let fp = stdout(&out)
        .split("(sha256:")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|h| format!("sha256:{h}"))
        .expect("fingerprint");
    (p, fp)
}

#[test]
fn signed_images_pass_the_policy_and_others_are_refused_before_unpacking() {
    if !require_root("signed_images_pass_the_policy_and_others_are_refused_before_unpacking") {
        return;
    }
    let env = TestEnv::new();
    let Some(reg) = Registry::start(env.path()) else {
        return;
    };
    let (layout, signed_digest) = busybox_layout(&env);
    for repo in [
        "test/signed:latest",
        "test/unsigned:latest",
        "test/other:latest",
    ] {
        reg.push(&layout, "bb", repo);
    }
    // Keys and signatures are made without any daemon policy in the way.
    let plain = env.start();
    let (key, fp) = keygen(&env, &plain, "release");
    let (other_key, _) = keygen(&env, &plain, "other");
    let sign = |reference: &str, k: &Path| {
        let out = plain.vouch_env(
            &[
                "sign",
                "--insecure-registry",
                "--key",
                k.with_extension("key").to_str().expect("utf8"),
                reference,
            ],
            &[("VOUCH_KEY_PASSWORD", "correct horse")],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    };
    sign(&format!("{}/test/signed:latest", reg.addr), &key);
    sign(&format!("{}/test/other:latest", reg.addr), &other_key);
    let wrong_password = plain.vouch_env(
        &[
            "sign",
            "--insecure-registry",
            "--key",
            key.with_extension("key").to_str().expect("utf8"),
            &format!("{}/test/unsigned:latest", reg.addr),
        ],
        &[("VOUCH_KEY_PASSWORD", "wrong")],
    );
    assert!(!wrong_password.status.success());
    assert!(
        stderr(&wrong_password).contains("wrong password"),
        "{}",
        stderr(&wrong_password)
    );
    drop(plain);

    let policy = signature_policy(&env, &format!("{}/test", reg.addr), &key);
    let state_images = env.state().join("images");
    let _ = std::fs::remove_dir_all(&state_images);
    let d = env.start_with(&[
        "--tee",
        "sim",
        "--image-policy",
        policy.to_str().expect("utf8"),
    ]);

    let signed = format!("{}/test/signed:latest", reg.addr);
    let out = d.vouch(&["pull", "--insecure-registry", &signed]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        d.ok(&["run", "--rm", &signed, "echo", "signed"]).trim(),
        "signed"
    );
    // The decision is measured: which key, which requirement.
    let ev = env.path().join("ev.json");
    d.ok(&[
        "attest",
        "--nonce",
        "00112233445566778899aabbccddeeff",
        "-o",
        ev.to_str().expect("utf8"),
    ]);
    let evidence: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ev).expect("ev")).expect("json");
    let verified = evidence["event_log"]
        .as_array()
        .expect("log")
        .iter()
        .find(|r| r["op"] == "image.verified")
        .expect("image.verified")
        .clone();
    assert_eq!(verified["content"]["signer"], fp.as_str(), "{verified}");
    assert_eq!(
        verified["content"]["policy"]["requirements"],
        serde_json::json!(["sigstoreSigned"])
    );

    let before = store_blobs(&env);
    for (reference, want) in [
        (
            format!("{}/test/unsigned:latest", reg.addr),
            "no signature attached",
        ),
        (format!("{}/test/other:latest", reg.addr), "none valid"),
    ] {
        let out = d.vouch(&["pull", "--insecure-registry", &reference]);
        assert!(!out.status.success(), "{reference} accepted");
        assert!(stderr(&out).contains(want), "{reference}: {}", stderr(&out));
    }
    // Refused before anything but manifests was fetched or unpacked.
    let after = store_blobs(&env);
    assert!(after.len() <= before.len() + 2, "{before:?} -> {after:?}");

    // The signed tag moved to another image, and its old signature copied along: refused,
    // because the signature names the digest it was made for.
    let moved = env.path().join("moved");
    let moved_digest = write_layout(
        &moved,
        "mv",
        &[busybox_layer()],
        &["/bin/true"],
        &["PATH=/bin"],
    );
    reg.push(&moved, "mv", "test/signed:latest");
    let old_sig = format!(
        "{}/test/signed:{}",
        reg.addr,
        signed_digest.replace("sha256:", "sha256-") + ".sig"
    );
    let new_sig = format!(
        "{}/test/signed:{}",
        reg.addr,
        moved_digest.replace("sha256:", "sha256-") + ".sig"
    );
    let copied = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{old_sig}"))
        .arg(format!("docker://{new_sig}"))
        .output()
        .expect("skopeo");
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let out = d.vouch(&["pull", "--insecure-registry", &signed]);
    assert!(!out.status.success(), "a moved tag was accepted");
    assert!(
        stderr(&out).contains(&format!("is for {signed_digest}")),
        "{}",
        stderr(&out)
    );
    // Anything outside the scope is rejected, and so are layout loads (default reject).
    let loaded = d.vouch(&[
        "image",
        "load",
        "-i",
        layout.to_str().expect("utf8"),
        "--name",
        "local",
    ]);
    assert!(!loaded.status.success());
    assert!(stderr(&loaded).contains("rejects"), "{}", stderr(&loaded));
}

#[test]
fn zstd_layers_and_several_layers_at_once() {
    if !require_root("zstd_layers_and_several_layers_at_once") {
        return;
    }
    let env = TestEnv::new();
    let Some(reg) = Registry::start(env.path()) else {
        return;
    };
    let layout = env.path().join("layout");
    let extra = |name: &str, body: &[u8]| {
        Layer::new()
            .dir("etc/")
            .file(&format!("etc/{name}"), 0o644, body)
            .finish()
    };
    write_layout_with(
        &layout,
        "z",
        &[
            busybox_layer(),
            extra("one", b"1\n"),
            extra("two", b"2\n"),
            extra("three", b"3\n"),
        ],
        &["/bin/sh"],
        &["PATH=/bin"],
        true,
    );
    reg.push(&layout, "z", "test/zstd:1");
    let d = env.start();
    let reference = format!("{}/test/zstd:1", reg.addr);
    let out = d.vouch(&["pull", "--insecure-registry", &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            &reference,
            "cat",
            "/etc/one",
            "/etc/two",
            "/etc/three"
        ]),
        "1\n2\n3\n"
    );
}

#[test]
fn registries_with_basic_authentication() {
    if !require_root("registries_with_basic_authentication") {
        return;
    }
    let env = TestEnv::new();
    let Some(reg) = Registry::start_with_auth(env.path(), Some(("alice", "pl3ase-l3t-me-in")))
    else {
        return;
    };
    let (layout, _) = busybox_layout(&env);
    reg.push_as(
        &layout,
        "bb",
        "private/bb:1",
        Some("alice:pl3ase-l3t-me-in"),
    );
    let d = env.start();
    let reference = format!("{}/private/bb:1", reg.addr);
    let pull = |args: &[&str], stdin: &str| {
        let mut cmd = std::process::Command::new(vouch());
        cmd.arg("--socket")
            .arg(&d.socket)
            .args(args)
            .arg(&reference);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("vouch");
        use std::io::Write as _;
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes());
        child.wait_with_output().expect("vouch")
    };
    let anonymous = pull(&["pull", "--insecure-registry"], "");
    assert!(!anonymous.status.success());
    assert!(
        stderr(&anonymous).to_lowercase().contains("not authorized"),
        "{}",
        stderr(&anonymous)
    );
    let wrong = pull(
        &[
            "pull",
            "--insecure-registry",
            "-u",
            "alice",
            "--password-stdin",
        ],
        "nope\n",
    );
    assert!(!wrong.status.success());
    let ok = pull(
        &[
            "pull",
            "--insecure-registry",
            "-u",
            "alice",
            "--password-stdin",
        ],
        "pl3ase-l3t-me-in\n",
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(
        d.ok(&["run", "--rm", &reference, "echo", "private"]).trim(),
        "private"
    );
    // The password reached neither the daemon's log nor its database.
    for f in [d.log.clone(), env.state().join("vouchd.redb")] {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(16).any(|w| w == b"pl3ase-l3t-me-in"),
            "password in {}",
            f.display()
        );
    }
}

/// A token issuer for the registry's `auth: token` mode (Docker's token protocol): it checks the
/// client's basic credentials and returns a JWT (ES256, its certificate in `x5c`) granting the
/// scope asked for.
fn token_issuer(dir: &Path, user: &'static str, password: &'static str) -> (String, PathBuf) {
    use base64::Engine as _;
    use p256::pkcs8::DecodePrivateKey;
    let (key_path, cert_path) = (dir.join("token.key"), dir.join("token.crt"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=vouch-test-token",
        ])
        .arg("-keyout")
        .arg(&key_path)
        .arg("-out")
        .arg(&cert_path)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let key =
        p256::ecdsa::SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&key_path).expect("key"))
            .expect("EC key");
    let cert_pem = std::fs::read_to_string(&cert_path).expect("cert");
    let cert_b64: String = cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match std::io::Read::read(&mut conn, &mut b) {
                    Ok(1) => head.push(b[0]),
                    _ => break,
                }
            }
            let text = String::from_utf8_lossy(&head).to_string();
            let target = text.split(' ').nth(1).unwrap_or("/").to_string();
            let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
            let param = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .map(|v| {
                        v.replace("%3A", ":")
                            .replace("%2F", "/")
                            .replace("%2C", ",")
                    })
            };
            let authorized = text.lines().any(|l| {
                l.to_ascii_lowercase().starts_with("authorization: basic ")
                    && l[21..].trim() == expected
            });
            let response = if !authorized {
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            } else {
                let access: Vec<serde_json::Value> = param("scope")
                    .map(|s| {
                        let parts: Vec<&str> = s.splitn(3, ':').collect();
                        vec![serde_json::json!({"type": parts[0], "name": parts.get(1).copied().unwrap_or(""),
                            "actions": parts.get(2).map(|a| a.split(',').collect::<Vec<_>>()).unwrap_or_default()})]
                    })
                    .unwrap_or_default();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": [cert_b64]});
                let claims = serde_json::json!({"iss": "vouch-test-issuer", "sub": user, "aud": param("service").unwrap_or_default(),
                    "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}"), "access": access});
                let signed = format!(
                    "{}.{}",
                    b64.encode(header.to_string()),
                    b64.encode(claims.to_string())
                );
                let sig: p256::ecdsa::Signature =
                    p256::ecdsa::signature::Signer::sign(&key, signed.as_bytes());
                let token = format!("{signed}.{}", b64.encode(sig.to_bytes()));
                let body =
                    serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                        .to_string();
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            };
            let _ = std::io::Write::write_all(&mut conn, response.as_bytes());
        }
    });
    (format!("http://{addr}/token"), cert_path)
}

#[test]
fn registries_with_bearer_tokens() {
    if !require_root("registries_with_bearer_tokens") {
        return;
    }
    let env = TestEnv::new();
    let (realm, cert) = token_issuer(env.path(), "bob", "t0ken-pass");
    let Some(reg) = Registry::start_with_token_auth(env.path(), &realm, &cert) else {
        return;
    };
    let (layout, _) = busybox_layout(&env);
    reg.push_as(&layout, "bb", "tokens/bb:1", Some("bob:t0ken-pass"));
    let d = env.start();
    let reference = format!("{}/tokens/bb:1", reg.addr);
    let anonymous = d.vouch(&["pull", "--insecure-registry", &reference]);
    assert!(!anonymous.status.success(), "pulled without a token");
    let out = d.vouch_env(
        &["pull", "--insecure-registry", "-u", "bob", &reference],
        &[("VOUCH_REGISTRY_PASSWORD", "t0ken-pass")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        d.ok(&["run", "--rm", &reference, "echo", "bearer"]).trim(),
        "bearer"
    );
}
