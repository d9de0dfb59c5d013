//! vouch-kbs and Confidential Containers' clients: a client written here from the CoCo KBS
//! protocol (not vouch's own), with CoCo's sample evidence and its binding, CoCo's TDX evidence
//! from the real vectors, and the admin calls CoCo's `kbs-client` makes.

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::Digest as _;
use vouch_kbs_client::jwe;
use vouch_testkit::*;

use super::kbs::{assert_refused, attest, secret_url, KbsProc, SECRET};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A CoCo KBS client: its ephemeral key, and the attestation it builds as guest-components'
/// `kbs_protocol` does.
struct CocoClient {
    key: p256::SecretKey,
    x: String,
    y: String,
}

impl CocoClient {
    fn new() -> Self {
        let key = jwe::generate_key().expect("key");
        let jwk = jwe::public_jwk(&key.public_key());
        let coord = |c: &str| jwk[c].as_str().expect("coordinate").to_string();
        CocoClient {
            x: coord("x"),
            y: coord("y"),
            key,
        }
    }

    fn tee_pubkey(&self) -> Value {
        json!({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": self.x, "y": self.y})
    }

    /// SHA-384 of the RFC 8785 JSON of `{"additional-evidence", "nonce", "tee-pubkey"}`,
    /// written out by hand (keys sorted; base64 needs no escaping).
    fn report_data(&self, nonce: &str, additional: &str) -> Vec<u8> {
        let text = format!(
            r#"{{"additional-evidence":"{additional}","nonce":"{nonce}","tee-pubkey":{{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"{}","y":"{}"}}}}"#,
            self.x, self.y
        );
        sha2::Sha384::digest(text.as_bytes()).to_vec()
    }

    fn attestation(&self, nonce: &str, primary: Value, init_data: Value) -> Value {
        json!({
            "init-data": init_data,
            "runtime-data": {"nonce": nonce, "tee-pubkey": self.tee_pubkey()},
            "tee-evidence": {"primary_evidence": primary, "additional_evidence": ""},
        })
    }

    fn sample(&self, nonce: &str) -> Value {
        json!({"svn": "1", "report_data": B64.encode(self.report_data(nonce, ""))})
    }
}

/// `POST /auth` with the very body CoCo's client sent (from the vectors), for `tee`.
fn coco_auth(k: &KbsProc, v: &std::path::Path, tee: &str) -> (String, String, Value) {
    let mut body: Value = serde_json::from_slice(
        &std::fs::read(v.join("coco/kbs-client-sample-auth.json")).expect("vector"),
    )
    .expect("json");
    body["tee"] = json!(tee);
    let (status, challenge, cookie) = k.http(
        "POST",
        "/kbs/v0/auth",
        &[],
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(status, 200, "{challenge}");
    assert!(challenge["extra-params"].is_object(), "{challenge}");
    (
        challenge["nonce"].as_str().expect("nonce").to_string(),
        cookie.expect("cookie"),
        challenge,
    )
}

/// The claims of an attestation token (its payload; the KBS checks its signature).
fn token_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWS payload");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("json")
}

/// CoCo's sample evidence, bound as CoCo binds it, gets the resource encrypted to the client's
/// key, only where `--allow-sample` lets it in, and is labelled unsigned wherever it shows;
/// another nonce, a replay, device evidence and a KBS without the flag are refused by name.
#[test]
fn a_coco_client_with_sample_evidence_gets_its_resource_only_under_allow_sample() {
    let Some(v) =
        vectors("a_coco_client_with_sample_evidence_gets_its_resource_only_under_allow_sample")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let k = KbsProc::start(dir.path(), &["--allow-sample"]);
    k.put("default/key/app", SECRET, dir.path());
    let client = CocoClient::new();

    let (nonce, cookie, _) = coco_auth(&k, &v, "sample");
    let (status, body) = attest(
        &k,
        &cookie,
        &client.attestation(&nonce, client.sample(&nonce), Value::Null),
    );
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("token");
    let claims = token_claims(token);
    let cpu0 = &claims["submods"]["cpu0"];
    assert_eq!(cpu0["ear.status"], "warning");
    let tee = &cpu0["ear.veraison.annotated-evidence"]["tee"];
    assert_eq!(
        (tee["type"].as_str(), tee["format"].as_str()),
        (Some("sample"), Some("coco"))
    );
    assert_eq!(tee["hardware"], false);
    assert!(
        tee["warnings"][0]
            .as_str()
            .unwrap_or("")
            .contains("UNSIGNED"),
        "{tee}"
    );
    assert_eq!(claims["tee-pubkey"]["x"], client.x.as_str());

    let (status, body, _) = k.http(
        "GET",
        "/kbs/v0/resource/default/key/app",
        &[("Cookie", cookie.clone())],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let sealed: jwe::Jwe = serde_json::from_value(body).expect("jwe");
    assert_eq!(
        jwe::decrypt(&client.key, &sealed)
            .expect("decrypt")
            .as_slice(),
        SECRET
    );
    let log = std::fs::read_to_string(&k.log).expect("log");
    assert!(
        log.contains("UNSIGNED sample evidence"),
        "the KBS log labels it: {log}"
    );

    // The same attestation again: its nonce is spent.
    let again = client.attestation(&nonce, client.sample(&nonce), Value::Null);
    assert_refused(
        attest(&k, &cookie, &again),
        401,
        "AttestationFailed",
        "nonce",
    );
    // Report data bound to another nonce.
    let (nonce2, cookie2, _) = coco_auth(&k, &v, "sample");
    let stale = client.attestation(&nonce2, client.sample(&nonce), Value::Null);
    assert_refused(
        attest(&k, &cookie2, &stale),
        401,
        "AttestationFailed",
        "runtime data does not match",
    );
    // Device evidence beside it is not verified here, so it is refused, not ignored.
    let (nonce3, cookie3, _) = coco_auth(&k, &v, "sample");
    let mut with_device = client.attestation(&nonce3, client.sample(&nonce3), Value::Null);
    with_device["tee-evidence"]["additional_evidence"] = json!("{\"nvidia\":{}}");
    assert_refused(
        attest(&k, &cookie3, &with_device),
        401,
        "AttestationFailed",
        "additional (device) evidence is not supported",
    );

    // Init-data: reported with its digest, and said to be unbound (sample binds nothing).
    let body = "algorithm = \"sha384\"\nversion = \"0.1.0\"\n\n[data]\n\"aa.toml\" = ''\n";
    let (nonce4, cookie4, _) = coco_auth(&k, &v, "sample");
    let (status, resp) = attest(
        &k,
        &cookie4,
        &client.attestation(
            &nonce4,
            client.sample(&nonce4),
            json!({"format": "toml", "body": body}),
        ),
    );
    assert_eq!(status, 200, "{resp}");
    let init = &token_claims(resp["token"].as_str().expect("token"))["submods"]["cpu0"]
        ["ear.veraison.annotated-evidence"]["tee"]["init_data"];
    assert_eq!(
        init,
        &json!({"algorithm": "sha384", "digest": hex::encode(sha2::Sha384::digest(body.as_bytes())), "bound": false, "claims": null}),
        "sample evidence binds no init-data, so its claims are not given to the policy"
    );
    let (nonce5, cookie5, _) = coco_auth(&k, &v, "sample");
    assert_refused(
        attest(
            &k,
            &cookie5,
            &client.attestation(
                &nonce5,
                client.sample(&nonce5),
                json!({"format": "toml", "body": "version = 1"}),
            ),
        ),
        400,
        "InvalidRequest",
        "init-data names no `algorithm`",
    );
    drop(k);

    // --allow-sim is not --allow-sample.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let strict = KbsProc::start(dir2.path(), &["--allow-sim"]);
    let (nonce, cookie, _) = coco_auth(&strict, &v, "sample");
    assert_refused(
        attest(
            &strict,
            &cookie,
            &client.attestation(&nonce, client.sample(&nonce), Value::Null),
        ),
        401,
        "AttestationFailed",
        "unsigned (anyone can write it); it is accepted only where sample evidence is allowed, for development (this KBS runs without --allow-sample)",
    );
}

/// CoCo's TDX evidence, with a real quote from the vectors, goes through vouch's DCAP verifier:
/// the KBS verifies now, past the collateral's window, so the quote is refused as such, with
/// the reason in the answer. Formats CoCo does not send are refused by name. SNP, in CoCo's
/// form and in Azure's vTPM form, reaches the SNP verifier and its policy; Azure's TDX form,
/// DCAP.
#[test]
fn coco_tdx_evidence_from_the_real_vectors_reaches_dcap() {
    let Some(v) = vectors("coco_tdx_evidence_from_the_real_vectors_reaches_dcap") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let collateral = dir.path().join("collateral");
    std::fs::create_dir(&collateral).expect("mkdir");
    std::fs::copy(
        v.join("tdx/tdx_quote_collateral.json"),
        collateral.join("tdx.json"),
    )
    .expect("copy");
    let k = KbsProc::start(
        dir.path(),
        &[
            "--collateral-dir",
            collateral.to_str().expect("utf8"),
            "--snp-chain",
            v.join("snp/ask_ark_milan.pem").to_str().expect("utf8"),
        ],
    );
    let client = CocoClient::new();
    let quote = std::fs::read(v.join("tdx/tdx_quote")).expect("quote");
    let quote_bytes = quote.clone();
    let ccel = std::fs::read(v.join("ccel/ccel_data.dat")).expect("ccel");
    let (nonce, cookie, _) = coco_auth(&k, &v, "tdx");
    let evidence = json!({"quote": B64.encode(&quote), "cc_eventlog": B64.encode(&ccel)});
    let (status, body) = attest(
        &k,
        &cookie,
        &client.attestation(&nonce, evidence, Value::Null),
    );
    assert_refused(
        (status, body.clone()),
        401,
        "AttestationFailed",
        "tdx quote rejected: quote verification failed",
    );
    assert!(
        body["detail"].as_str().unwrap_or("").contains("Expired"),
        "refused for its collateral's age: {body}"
    );
    assert!(
        !body["detail"].as_str().unwrap_or("").contains("binding"),
        "the quote is refused before its binding: {body}"
    );

    // Not CoCo's TDX shape.
    let (nonce, cookie, _) = coco_auth(&k, &v, "tdx");
    assert_refused(
        attest(
            &k,
            &cookie,
            &client.attestation(&nonce, json!({"td_quote": "AA"}), Value::Null),
        ),
        401,
        "AttestationFailed",
        "tdx evidence is not in the form Confidential Containers' attester sends",
    );
    // SNP in CoCo's form: the real Milan report with its VCEK, ASK and ARK goes through the
    // SNP verifier; it is a debug guest, which the default policy refuses, saying so.
    let bin = std::fs::read(v.join("snp/attestation.bin")).expect("report");
    let chain = std::fs::read(v.join("snp/ask_ark_milan.pem")).expect("chain");
    let blocks = vouch_tee::pem::certificates(&chain);
    let vcek = std::fs::read(v.join("snp/vcek.der")).expect("vcek");
    let report = vouch_testkit::corpus::sev_report_json(&bin);
    let evidence = json!({"attestation_report": report, "cert_chain": [
        {"cert_type": "VCEK", "data": vcek},
        {"cert_type": "ASK", "data": blocks[0]},
        {"cert_type": "ARK", "data": blocks[1]},
    ]});
    let (nonce, cookie, _) = coco_auth(&k, &v, "snp");
    assert_refused(
        attest(
            &k,
            &cookie,
            &client.attestation(&nonce, evidence, Value::Null),
        ),
        401,
        "AttestationFailed",
        "snp quote rejected: policy refused the report: the guest policy allows debugging",
    );
    // Azure's vTPM forms: the paravisor's HCL report (written here from its layout: header,
    // hardware report, IGVM request data, the variable data naming the AK), the VCEK, a quote.
    // The real Milan report inside goes through the VCEK and the --snp-chain's ASK/ARK, then
    // the policy, which refuses the debug guest: the KBS read every layer to get there.
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xc5u8; 256]);
    let var = format!(r#"{{"keys":[{{"kid":"HCLAkPub","kty":"RSA","e":"AQAB","n":"{n}"}}]}}"#);
    let var = var.as_bytes();
    let hcl = |report_type: u32, hw: &[u8]| {
        let mut b = Vec::new();
        for w in [0x414c_4348u32, 2, 0, 2, 0, 0, 0, 0] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        let mut slot = hw.to_vec();
        slot.resize(1184, 0);
        b.extend_from_slice(&slot);
        for w in [20 + var.len() as u32, 1, report_type, 1, var.len() as u32] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(var);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    let quote = json!({"signature": "00", "message": "00", "pcrs": []});
    let b64url = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let (nonce, cookie, _) = coco_auth(&k, &v, "az-snp-vtpm");
    let evidence = json!({"version": 2, "tpm_quote": quote, "hcl_report": hcl(2, &bin), "vcek": b64url(&vcek)});
    assert_refused(
        attest(
            &k,
            &cookie,
            &client.attestation(&nonce, evidence, Value::Null),
        ),
        401,
        "AttestationFailed",
        "snp quote rejected: policy refused the report: the guest policy allows debugging",
    );
    // az-tdx-vtpm: the TD quote goes through DCAP (refused for its collateral's age).
    let (nonce, cookie, _) = coco_auth(&k, &v, "az-tdx-vtpm");
    let evidence = json!({"version": 2, "tpm_quote": quote, "hcl_report": hcl(4, &[0; 1024]),
        "td_quote": b64url(&quote_bytes)});
    let (status, body) = attest(
        &k,
        &cookie,
        &client.attestation(&nonce, evidence, Value::Null),
    );
    assert_refused(
        (status, body.clone()),
        401,
        "AttestationFailed",
        "tdx quote rejected: quote verification failed",
    );
    assert!(
        body["detail"].as_str().unwrap_or("").contains("Expired"),
        "{body}"
    );
    // Version 0 (bincode) is refused by name.
    let (nonce, cookie, _) = coco_auth(&k, &v, "az-snp-vtpm");
    assert_refused(
        attest(
            &k,
            &cookie,
            &client.attestation(
                &nonce,
                json!({"quote": {}, "report": [], "vcek": ""}),
                Value::Null,
            ),
        ),
        401,
        "AttestationFailed",
        "evidence without a version (the first, bincode form) is not supported",
    );
}

/// The admin calls of CoCo's `kbs-client` (set-resource, set-resource-policy with the owner's
/// bearer token) answer 200 as Trustee's do; set-attestation-policy is refused with what to do
/// instead.
#[test]
fn cocos_admin_calls_answer_as_trustee_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = KbsProc::start(dir.path(), &[]);
    let out = std::process::Command::new(vouch_kbs())
        .args(["token", "--admin-key"])
        .arg(k.admin.join("admin.key"))
        .output()
        .expect("token");
    assert!(out.status.success());
    let bearer = vec![(
        "Authorization",
        format!("Bearer {}", String::from_utf8_lossy(&out.stdout).trim()),
    )];
    let (s, b, _) = k.http(
        "POST",
        "/kbs/v0/resource/default/key/app",
        &bearer,
        Some(b"secret"),
    );
    assert_eq!(s, 200, "{b}");
    let rego = "package policy\ndefault allow := false\n";
    let policy = json!({"policy": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rego)});
    let (s, b, _) = k.http(
        "POST",
        "/kbs/v0/resource-policy",
        &bearer,
        Some(policy.to_string().as_bytes()),
    );
    assert_eq!(s, 200, "{b}");
    let att_policy =
        json!({"type": "rego", "policy_id": "default", "policy": "cGFja2FnZSBwb2xpY3k"});
    let (s, b, _) = k.http(
        "POST",
        "/kbs/v0/attestation-policy",
        &bearer,
        Some(att_policy.to_string().as_bytes()),
    );
    assert_refused(
        (s, b),
        400,
        "InvalidRequest",
        "resource policy (POST /kbs/v0/resource-policy)",
    );
    // Without the owner's token, nothing at all.
    let (s, b, _) = k.http(
        "POST",
        "/kbs/v0/attestation-policy",
        &[],
        Some(att_policy.to_string().as_bytes()),
    );
    assert_refused((s, b), 401, "AdminAuthFailed", "admin");
}

/// vouchd told its KBS is a Confidential Containers one presents CoCo's evidence (sample, on
/// the sim TEE) bound as CoCo binds it, and its container reads the secret; the task says the
/// secret is bound to the TEE. Since that evidence names no container, a KBS whose owner set
/// reference images refuses it, saying so; and in `auto`, vouchd gives a vouch-kbs (which names
/// itself in its challenge) vouch's own evidence.
#[test]
fn vouchd_presents_cocos_evidence_to_a_coco_kbs() {
    if !require_root("vouchd_presents_cocos_evidence_to_a_coco_kbs") {
        return;
    }
    let env = TestEnv::new();
    let k = KbsProc::start(env.path(), &["--allow-sample"]);
    k.put("default/key/app", SECRET, env.path());
    let url = secret_url(&k, "default/key/app");
    let d = env.start_with(&["--tee", "sim", "--kbs-flavour", "coco"]);
    let image = load_busybox(&env, &d, "bb");
    let out = d.vouch(&[
        "run",
        "--name",
        "coco",
        "--secret",
        &url,
        "bb",
        "sha256sum",
        "/secret/default/key/app",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hash = hex::encode(sha2::Sha256::digest(SECRET));
    assert_eq!(stdout(&out), format!("{hash}  /secret/default/key/app\n"));
    let c = d.json(&["inspect", "coco"]);
    let fetched = c[0]["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["action"] == "SecretFetched")
        .expect("SecretFetched")["message"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(fetched.contains("bound to the TEE"), "{fetched}");
    let log = std::fs::read_to_string(&k.log).expect("log");
    assert!(log.contains("UNSIGNED sample evidence"), "{log}");

    // The owner allows only this image: CoCo's evidence cannot say which container asks.
    let refs = env.path().join("refs.json");
    std::fs::write(&refs, json!({"images": [image]}).to_string()).expect("write");
    assert!(k
        .admin_cli(&["reference", "--file", refs.to_str().expect("utf8")])
        .status
        .success());
    let out = d.vouch(&["run", "--secret", &url, "bb", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "the requesting container's image (none named) is not one of the reference images"
        ),
        "{}",
        stderr(&out)
    );
    drop(d);

    // auto: this KBS names itself a vouch-kbs, so it gets vouch's sim evidence, which it
    // refuses without --allow-sim.
    let env2 = TestEnv::new();
    let d2 = env2.start();
    load_busybox(&env2, &d2, "bb");
    let out = d2.vouch(&["run", "--secret", &url, "bb", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("--allow-sim"), "{}", stderr(&out));
}

/// vouchd on a TPM (a real swtpm), told its KBS is a CoCo one, presents CoCo's TPM form (the
/// whole SHA-256 bank quoted, the AK as a SubjectPublicKeyInfo): vouch-kbs refuses it until that
/// key is pinned, naming its fingerprint, then releases the secret to the container.
#[test]
fn vouchd_on_a_tpm_presents_cocos_tpm_form() {
    if !require_root("vouchd_on_a_tpm_presents_cocos_tpm_form") {
        return;
    }
    let Some(tpm) = vouch_testkit::Swtpm::start() else {
        return;
    };
    let env = TestEnv::new();
    let d = env.start_with(&[
        "--tee",
        "tpm",
        "--tpm-tcti",
        &tpm.tcti,
        "--kbs-flavour",
        "coco",
    ]);
    load_busybox(&env, &d, "bb");
    // The AK's SubjectPublicKeyInfo fingerprint, from vouch's own evidence.
    let ev = env.path().join("ev.json");
    d.ok(&[
        "attest",
        "--nonce",
        "00112233445566778899aabbccddeeff",
        "-o",
        ev.to_str().expect("utf8"),
    ]);
    let ev: Value = serde_json::from_slice(&std::fs::read(&ev).expect("ev")).expect("json");
    let quote: Value = serde_json::from_slice(
        &B64.decode(ev["quote"].as_str().expect("quote"))
            .expect("base64"),
    )
    .expect("quote json");
    let ak = vouch_tee::tpm::parse_ak(&B64.decode(quote["ak"].as_str().expect("ak")).expect("ak"))
        .expect("ak");
    let fingerprint = vouch_tee::tpm::spki_fingerprint(&vouch_tee::tpm::ak_spki(&ak));

    let dir = env.path().join("kbs");
    std::fs::create_dir(&dir).expect("mkdir");
    let unpinned = KbsProc::start(&dir, &[]);
    unpinned.put("default/key/tpm", SECRET, &dir);
    let url = secret_url(&unpinned, "default/key/tpm");
    let out = d.vouch(&["run", "--rm", "--secret", &url, "bb", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "the TPM attestation key {fingerprint} is not trusted"
        )),
        "{}",
        stderr(&out)
    );
    drop(unpinned);

    let k = KbsProc::start(&dir, &["--tpm-ak", &fingerprint]);
    let refs = dir.join("refs.json");
    std::fs::write(
        &refs,
        json!({"boot_chain_optional": ["default/key/tpm"]}).to_string(),
    )
    .expect("write");
    assert!(k
        .admin_cli(&["reference", "--file", refs.to_str().expect("utf8")])
        .status
        .success());
    let url = secret_url(&k, "default/key/tpm");
    let out = d.vouch(&[
        "run",
        "--name",
        "coco-tpm",
        "--secret",
        &url,
        "bb",
        "sha256sum",
        "/secret/default/key/tpm",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hash = hex::encode(sha2::Sha256::digest(SECRET));
    assert_eq!(stdout(&out), format!("{hash}  /secret/default/key/tpm\n"));
    let c = d.json(&["inspect", "coco-tpm"]);
    assert!(
        c[0]["events"].to_string().contains("bound to the TEE"),
        "{}",
        c[0]["events"]
    );
}
