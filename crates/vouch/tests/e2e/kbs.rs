//! vouch-kbs: the KBS protocol against the real binary on loopback, every refusal with its
//! status and reason, and secrets reaching (or not reaching) real containers.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use vouch_kbs_client::jwe;
use vouch_tee::sim::SimAttester;
use vouch_tee::Journal;
use vouch_testkit::*;

pub(super) const SECRET: &[u8] = br#"{"db-password":"c0rrect-h0rse-battery"}"#;

pub(super) struct KbsProc {
    child: Option<Child>,
    pub(super) addr: String,
    pub(super) admin: PathBuf,
    pub(super) log: PathBuf,
}

impl KbsProc {
    /// Quick mode (no admin key): one secret file for one measurement and image.
    fn start_quick(dir: &Path, secret: &Path, measurement: &str, image: &str) -> KbsProc {
        let log = dir.join("kbs-quick.log");
        let args: Vec<std::ffi::OsString> = vec![
            "--allow-sim".into(),
            "--state-dir".into(),
            dir.join("kbs-quick-state").into(),
            "--secret-file".into(),
            secret.into(),
            "--measurement".into(),
            measurement.into(),
            "--image".into(),
            image.into(),
        ];
        let (child, addr) = spawn_kbs(&args, &log);
        KbsProc {
            child: Some(child),
            addr,
            admin: dir.join("no-admin"),
            log,
        }
    }

    pub(super) fn start(dir: &Path, extra: &[&str]) -> KbsProc {
        let admin = dir.join("admin");
        if !admin.join("admin.key").exists() {
            let out = Command::new(vouch_kbs())
                .args(["keygen", "--out-dir"])
                .arg(&admin)
                .output()
                .expect("keygen");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = dir.join(format!("kbs-{}.log", extra.len()));
        let mut args: Vec<std::ffi::OsString> = vec![
            "--state-dir".into(),
            dir.join("kbs-state").into(),
            "--admin-key".into(),
            admin.join("admin.pub").into(),
        ];
        args.extend(extra.iter().map(|a| a.into()));
        let (child, addr) = spawn_kbs(&args, &log);
        KbsProc {
            child: Some(child),
            addr,
            admin,
            log,
        }
    }

    pub(super) fn admin_cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(vouch_kbs())
            .args(args)
            .arg("--kbs")
            .arg(&self.addr)
            .arg("--admin-key")
            .arg(self.admin.join("admin.key"))
            .output()
            .expect("vouch-kbs admin")
    }

    pub(super) fn put(&self, path: &str, value: &[u8], dir: &Path) {
        let f = dir.join("value.bin");
        std::fs::write(&f, value).expect("write");
        let out = self.admin_cli(&["resource", "set", path, "--file", f.to_str().expect("utf8")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(f).expect("rm");
    }

    /// One raw HTTP request; returns (status, body JSON or null, set-cookie).
    pub(super) fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> (u16, Value, Option<String>) {
        let (status, data, cookie) = self.http_bytes(method, path, headers, body);
        (
            status,
            serde_json::from_slice(&data).unwrap_or(Value::Null),
            cookie,
        )
    }

    /// [`Self::http`] with the body as it came.
    fn http_bytes(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> (u16, Vec<u8>, Option<String>) {
        let stream = TcpStream::connect(&self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let resp = vouch_api::client::exchange(
            stream,
            &self.addr,
            method,
            path,
            headers,
            body.map(|b| ("application/json", b)),
        )
        .expect("exchange");
        let cookie = resp
            .header("set-cookie")
            .map(|c| c.split(';').next().unwrap_or("").to_string());
        let (status, data) = vouch_api::client::read_body_limited(resp, 1 << 20).expect("body");
        (status, data, cookie)
    }
}

impl Drop for KbsProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

/// A TEE of our own (sim), to craft good and bad evidence.
struct FakeTee {
    _dir: tempfile::TempDir,
    journal: Journal,
}

impl FakeTee {
    fn new(image_digest: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = Arc::new(SimAttester::open(&dir.path().join("sim")).expect("sim"));
        let (mut journal, _) =
            Journal::open(&dir.path().join("log"), sim, vouch_tee::VOUCH_REGISTER)
                .expect("journal");
        journal
            .append("image.verified", json!({"image_digest": image_digest}))
            .expect("append");
        journal
            .append(
                "container.create",
                json!({"id": "c1", "image_digest": image_digest, "config_digest": "sha384:00"}),
            )
            .expect("append");
        FakeTee { _dir: dir, journal }
    }

    /// Evidence binding `runtime_data`, as `KbsClient` asks for it, fetched for container c1
    /// (named as vouchd names the requester).
    fn evidence(&self, mut runtime_data: Value) -> Result<Value, String> {
        runtime_data["requester"] = json!({"id": "c1", "create_seq": 1});
        self.journal
            .evidence(runtime_data)
            .map_err(|e| e.to_string())
            .map(|e| serde_json::to_value(e).expect("json"))
    }
}

fn auth(k: &KbsProc) -> (String, String) {
    let (status, body, cookie) = k.http(
        "POST",
        "/kbs/v0/auth",
        &[],
        Some(br#"{"version":"0.4.0","tee":"sample","extra-params":{}}"#),
    );
    assert_eq!(status, 200, "{body}");
    (
        body["nonce"].as_str().expect("nonce").to_string(),
        cookie.expect("cookie"),
    )
}

fn attestation(tee: &FakeTee, nonce: &str, key: &p256::SecretKey) -> Value {
    let runtime = json!({"nonce": nonce, "tee-pubkey": jwe::public_jwk(&key.public_key())});
    let ev = tee.journal.evidence(runtime.clone()).expect("evidence");
    json!({"runtime-data": runtime, "tee-evidence": {"primary_evidence": ev, "additional_evidence": ""}})
}

pub(super) fn attest(k: &KbsProc, cookie: &str, att: &Value) -> (u16, Value) {
    let (s, b, _) = k.http(
        "POST",
        "/kbs/v0/attest",
        &[("Cookie", cookie.to_string())],
        Some(att.to_string().as_bytes()),
    );
    (s, b)
}

pub(super) fn assert_refused(got: (u16, Value), status: u16, kind: &str, detail: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert!(
        got.1["type"].as_str().unwrap_or("").ends_with(kind),
        "type {} is not {kind}",
        got.1["type"]
    );
    assert!(
        got.1["detail"].as_str().unwrap_or("").contains(detail),
        "detail {:?} lacks {detail:?}",
        got.1["detail"]
    );
}

#[test]
fn protocol_round_trip_releases_the_resource_encrypted_to_the_tee_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = KbsProc::start(dir.path(), &["--allow-sim"]);
    k.put("default/key/app", SECRET, dir.path());
    let tee = FakeTee::new("sha256:aa");
    let (nonce, cookie) = auth(&k);
    let key = jwe::generate_key().expect("key");
    let (status, body) = attest(&k, &cookie, &attestation(&tee, &nonce, &key));
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("token").to_string();
    // By session cookie.
    let (status, body, _) = k.http(
        "GET",
        "/kbs/v0/resource/default/key/app",
        &[("Cookie", cookie.clone())],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let jwe: jwe::Jwe = serde_json::from_value(body.clone()).expect("jwe");
    assert_eq!(
        jwe::decrypt(&key, &jwe).expect("decrypt").as_slice(),
        SECRET
    );
    assert!(
        !body.to_string().contains("c0rrect"),
        "resource sent in clear"
    );
    // By attestation token.
    let (status, body, _) = k.http(
        "GET",
        "/kbs/v0/resource/default/key/app",
        &[("Authorization", format!("Bearer {token}"))],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let jwe: jwe::Jwe = serde_json::from_value(body).expect("jwe");
    assert_eq!(
        jwe::decrypt(&key, &jwe).expect("decrypt").as_slice(),
        SECRET
    );
    // The secret never reaches the KBS log.
    let log = std::fs::read_to_string(&k.log).expect("log");
    assert!(!log.contains("c0rrect-h0rse"), "secret in the KBS log");
    assert!(!log.contains(&token), "token in the KBS log");
}

/// Connections to `port` on loopback that were closed from this machine's side and linger in
/// TIME_WAIT (one per connection a client opened and closed).
fn closed_connections_to(port: u16) -> usize {
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let remote = format!("0100007F:{port:04X}");
    tcp.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == remote && f[3] == "06"
        })
        .count()
}

/// A client keeps one connection across round trips, with the attestation and the resource
/// request pipelined on it. A refused attestation is reported as the attestation's refusal (not
/// as the resource request's), and the client goes on working after it.
#[test]
fn client_reuses_one_connection_and_pipelines_attest_with_resource() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = KbsProc::start(dir.path(), &["--allow-sim"]);
    k.put("default/key/app", SECRET, dir.path());
    let port: u16 = k
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let tee = FakeTee::new("sha256:aa");
    let client = vouch_kbs_client::KbsClient::new(k.addr.clone());
    let path = vouch_kbs_client::ResourcePath::parse("default/key/app").expect("path");
    let evidence = |b: &vouch_kbs_client::Binding| tee.evidence(b.runtime_data.clone());
    let closed_before = closed_connections_to(port);
    for _ in 0..5 {
        let got = client
            .get_resource(kbs_types::Tee::Sample, &path, evidence)
            .expect("released");
        assert_eq!(got.as_slice(), SECRET);
    }
    assert_eq!(
        closed_connections_to(port),
        closed_before,
        "the client opened and closed connections instead of keeping one"
    );
    // Evidence bound to another nonce: the KBS refuses the attestation; the resource request
    // pipelined behind it is refused too, but the error names the attestation.
    let err = client
        .get_resource(kbs_types::Tee::Sample, &path, |b| {
            let mut rd = b.runtime_data.clone();
            rd["nonce"] = json!("bm90LXRoZS1ub25jZQ==");
            tee.evidence(rd)
        })
        .expect_err("refused");
    match &err {
        vouch_kbs_client::KbsClientError::Refused { step, status, .. } => {
            assert_eq!((*step, *status), ("attest", 401), "{err}");
        }
        other => panic!("not a refusal: {other}"),
    }
    let got = client
        .get_resource(kbs_types::Tee::Sample, &path, evidence)
        .expect("released after a refusal");
    assert_eq!(got.as_slice(), SECRET);
}

/// A kept-alive connection that the KBS closed (here: it restarted) while the client held it
/// idle is replaced by a new one, and the round trip succeeds.
#[test]
fn client_recovers_when_the_kbs_closed_its_idle_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = KbsProc::start(dir.path(), &["--allow-sim"]);
    k.put("default/key/app", SECRET, dir.path());
    let tee = FakeTee::new("sha256:aa");
    let client = vouch_kbs_client::KbsClient::new(k.addr.clone());
    let path = vouch_kbs_client::ResourcePath::parse("default/key/app").expect("path");
    let evidence = |b: &vouch_kbs_client::Binding| tee.evidence(b.runtime_data.clone());
    let got = client
        .get_resource(kbs_types::Tee::Sample, &path, evidence)
        .expect("released");
    assert_eq!(got.as_slice(), SECRET);
    // Stop the KBS (closing the client's idle connection) and start it again on the same
    // address, with the same state.
    let addr = k.addr.clone();
    drop(k);
    let log = dir.path().join("kbs-restarted.log");
    let args: Vec<std::ffi::OsString> = vec![
        "--listen".into(),
        addr.clone().into(),
        "--allow-sim".into(),
        "--state-dir".into(),
        dir.path().join("kbs-state").into(),
        "--admin-key".into(),
        dir.path().join("admin/admin.pub").into(),
    ];
    let (child, _) = spawn_kbs(&args, &log);
    let _k = KbsProc {
        child: Some(child),
        addr,
        admin: dir.path().join("admin"),
        log,
    };
    let got = client
        .get_resource(kbs_types::Tee::Sample, &path, evidence)
        .expect("released on a new connection");
    assert_eq!(got.as_slice(), SECRET);
}

#[test]
fn protocol_refusals_have_the_right_status_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = KbsProc::start(dir.path(), &["--allow-sim", "--session-ttl", "1"]);
    k.put("default/key/app", SECRET, dir.path());
    let tee = FakeTee::new("sha256:aa");
    let key = jwe::generate_key().expect("key");

    // Malformed JSON and a wrong protocol version.
    let (s, b, _) = k.http("POST", "/kbs/v0/auth", &[], Some(b"{not json"));
    assert_refused((s, b), 400, "InvalidRequest", "malformed request");
    let (s, b, _) = k.http(
        "POST",
        "/kbs/v0/auth",
        &[],
        Some(br#"{"version":"9.9.9","tee":"sample","extra-params":{}}"#),
    );
    assert_refused((s, b), 400, "InvalidRequest", "not supported");
    // Attest without a session.
    let (s, b, _) = k.http("POST", "/kbs/v0/attest", &[], Some(b"{}"));
    assert_refused((s, b), 401, "UnAuthenticated", "no session");
    // A wrong nonce.
    let (_, cookie) = auth(&k);
    let att = attestation(&tee, "bm90LXRoZS1ub25jZQ==", &key);
    assert_refused(
        attest(&k, &cookie, &att),
        401,
        "AttestationFailed",
        "not this session's challenge",
    );
    // The nonce is spent even by a failed attempt: a retry on the same session is refused.
    let (nonce, cookie) = auth(&k);
    let good = attestation(&tee, &nonce, &key);
    assert_eq!(attest(&k, &cookie, &good).0, 200);
    assert_refused(
        attest(&k, &cookie, &good),
        401,
        "AttestationFailed",
        "already used",
    );
    // Evidence with a key twice (two readers would see two evidences) is refused as such.
    let (nonce, cookie) = auth(&k);
    let twice = attestation(&tee, &nonce, &key).to_string().replacen(
        r#""version":1"#,
        r#""version":1,"version":1"#,
        1,
    );
    let (s, b, _) = k.http(
        "POST",
        "/kbs/v0/attest",
        &[("Cookie", cookie)],
        Some(twice.as_bytes()),
    );
    assert_refused((s, b), 400, "InvalidRequest", "appears twice");
    // The same attestation replayed on a new session carries the old nonce.
    let (_, cookie2) = auth(&k);
    assert_refused(
        attest(&k, &cookie2, &good),
        401,
        "AttestationFailed",
        "not this session's challenge",
    );
    // Evidence bound to another key than the one presented.
    let (nonce, cookie) = auth(&k);
    let mut other_key = attestation(&tee, &nonce, &key);
    other_key["runtime-data"]["tee-pubkey"] =
        jwe::public_jwk(&jwe::generate_key().expect("key").public_key());
    assert_refused(
        attest(&k, &cookie, &other_key),
        401,
        "AttestationFailed",
        "bound to other runtime data",
    );
    // A tampered event log.
    let (nonce, cookie) = auth(&k);
    let mut tampered = attestation(&tee, &nonce, &key);
    tampered["tee-evidence"]["primary_evidence"]["event_log"][1]["content"]["image_digest"] =
        json!("sha256:bb");
    assert_refused(
        attest(&k, &cookie, &tampered),
        401,
        "AttestationFailed",
        "the evidence's aa_eventlog is not its event log in AAEL form: line 3 differs",
    );
    // ... and with its AAEL copy tampered the same way.
    let (nonce, cookie) = auth(&k);
    let mut tampered = attestation(&tee, &nonce, &key);
    let ev = &mut tampered["tee-evidence"]["primary_evidence"];
    ev["event_log"][1]["content"]["image_digest"] = json!("sha256:bb");
    let records: Vec<vouch_measure::Record> =
        serde_json::from_value(ev["event_log"].clone()).expect("records");
    ev["aa_eventlog"] = json!(vouch_measure::aael::to_text(&records).expect("aael"));
    assert_refused(
        attest(&k, &cookie, &tampered),
        401,
        "AttestationFailed",
        "replays to",
    );
    // Resource before attesting, and an unknown resource after.
    let (nonce, cookie) = auth(&k);
    let (s, b, _) = k.http(
        "GET",
        "/kbs/v0/resource/default/key/app",
        &[("Cookie", cookie.clone())],
        None,
    );
    assert_refused((s, b), 401, "UnAuthenticated", "not attested");
    assert_eq!(attest(&k, &cookie, &attestation(&tee, &nonce, &key)).0, 200);
    let (s, b, _) = k.http(
        "GET",
        "/kbs/v0/resource/default/key/nope",
        &[("Cookie", cookie.clone())],
        None,
    );
    assert_refused((s, b), 404, "ResourceNotFound", "default/key/nope");
    let (s, b, _) = k.http(
        "GET",
        "/kbs/v0/resource/default/key/..",
        &[("Cookie", cookie.clone())],
        None,
    );
    assert!(s == 400 || s == 404, "{s} {b}");
    // Policy denial: reference images that do not include this container's image.
    let refs = dir.path().join("refs.json");
    std::fs::write(&refs, br#"{"images": ["sha256:0000"]}"#).expect("write");
    let out = k.admin_cli(&["reference", "--file", refs.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, b, _) = k.http(
        "GET",
        "/kbs/v0/resource/default/key/app",
        &[("Cookie", cookie.clone())],
        None,
    );
    assert_refused((s, b), 401, "PolicyDeny", "default/key/app");
    // An expired session.
    let (nonce, cookie) = auth(&k);
    std::thread::sleep(Duration::from_millis(1200));
    assert_refused(
        attest(&k, &cookie, &attestation(&tee, &nonce, &key)),
        401,
        "UnAuthenticated",
        "expired",
    );
    // A forged token.
    let (s, b, _) = k.http(
        "GET",
        "/kbs/v0/resource/default/key/app",
        &[("Authorization", "Bearer a.b.c".to_string())],
        None,
    );
    assert_refused((s, b), 401, "UnAuthenticated", "token");
    let log = std::fs::read_to_string(&k.log).expect("log");
    assert!(!log.contains("c0rrect-h0rse"), "secret in the KBS log");
}

#[test]
fn sim_evidence_is_refused_without_allow_sim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = KbsProc::start(dir.path(), &[]);
    let tee = FakeTee::new("sha256:aa");
    let key = jwe::generate_key().expect("key");
    let (nonce, cookie) = auth(&k);
    assert_refused(
        attest(&k, &cookie, &attestation(&tee, &nonce, &key)),
        401,
        "AttestationFailed",
        "--allow-sim",
    );
}

/// `vouch-kbs-bench` drives its clients (here three over two threads) through complete round
/// trips and counts them; refused round trips are errors and fail the command.
#[test]
fn bench_counts_round_trips_and_fails_on_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bench = |k: &KbsProc| {
        Command::new(vouch_kbs_bench())
            .args([
                "--clients",
                "3",
                "--threads",
                "2",
                "--duration",
                "1",
                "--json",
            ])
            .args(["--kbs", &k.addr])
            .output()
            .expect("bench")
    };
    // The production binary carries no load generator.
    let out = Command::new(vouch_kbs())
        .arg("bench")
        .output()
        .expect("vouch-kbs");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unrecognized subcommand 'bench'"),
        "{}",
        stderr(&out)
    );
    let k = KbsProc::start(dir.path(), &["--allow-sim"]);
    k.put("default/key/app", SECRET, dir.path());
    let out = bench(&k);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["clients"], 3);
    assert_eq!(report["errors"], 0);
    assert!(
        report["round_trips"].as_u64().expect("count") >= 3,
        "{report}"
    );
    assert!(report["p99_ms"].as_f64().expect("p99") > 0.0, "{report}");
    drop(k);

    let strict_dir = tempfile::tempdir().expect("tempdir");
    let strict = KbsProc::start(strict_dir.path(), &[]);
    strict.put("default/key/app", SECRET, strict_dir.path());
    let out = bench(&strict);
    assert!(
        !out.status.success(),
        "sim evidence refused, yet the bench succeeded"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-sim"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["round_trips"], 0);
    assert!(report["errors"].as_u64().expect("errors") > 0, "{report}");
}

/// With --allow-sim and --sim-key, only that sim TEE's evidence is accepted.
#[test]
fn sim_evidence_is_accepted_only_from_pinned_sim_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tee = FakeTee::new("sha256:aa");
    let ours = {
        let q = tee.evidence(json!({"nonce": "x"})).expect("evidence");
        let raw = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            q["quote"].as_str().expect("quote"),
        )
        .expect("b64");
        let len = u32::from_be_bytes(raw[8..12].try_into().expect("len")) as usize;
        let body: Value = serde_json::from_slice(&raw[12..12 + len]).expect("body");
        body["public_key"].as_str().expect("key").to_string()
    };
    let pinned = KbsProc::start(dir.path(), &["--allow-sim", "--sim-key", &ours]);
    pinned.put("default/key/app", SECRET, dir.path());
    assert_eq!(
        fetch(&pinned, &tee, "default/key/app").expect("pinned key"),
        SECRET
    );
    drop(pinned);
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = KbsProc::start(
        other_dir.path(),
        &["--allow-sim", "--sim-key", &"ab".repeat(32)],
    );
    other.put("default/key/app", SECRET, other_dir.path());
    let err = fetch(&other, &tee, "default/key/app").expect_err("unpinned sim key accepted");
    assert!(err.to_string().contains("not the trusted key"), "{err}");
}

#[test]
fn admin_api_requires_the_owners_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = KbsProc::start(dir.path(), &["--allow-sim"]);
    let (s, b, _) = k.http("POST", "/kbs/v0/resource/default/key/app", &[], Some(b"x"));
    assert_refused((s, b), 401, "AdminAuthFailed", "admin");
    // A token signed by someone else's key.
    let other = dir.path().join("other");
    Command::new(vouch_kbs())
        .args(["keygen", "--out-dir"])
        .arg(&other)
        .output()
        .expect("keygen");
    let out = Command::new(vouch_kbs())
        .args(["token", "--admin-key"])
        .arg(other.join("admin.key"))
        .output()
        .expect("token");
    let forged = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (s, b, _) = k.http(
        "POST",
        "/kbs/v0/resource/default/key/app",
        &[("Authorization", format!("Bearer {forged}"))],
        Some(b"x"),
    );
    assert_refused((s, b), 401, "AdminAuthFailed", "signature");
    // The owner's own key, but a token for another KBS's audience, or valid for too long.
    let token = |args: &[&str]| {
        let out = Command::new(vouch_kbs())
            .args(["token", "--admin-key"])
            .arg(k.admin.join("admin.key"))
            .args(args)
            .output()
            .expect("token");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (_, other_kbs, _) = token(&["--audience", "kbs-b"]);
    let (s, b, _) = k.http(
        "POST",
        "/kbs/v0/resource/default/key/app",
        &[("Authorization", format!("Bearer {other_kbs}"))],
        Some(b"x"),
    );
    assert_refused((s, b), 401, "AdminAuthFailed", "audience");
    let (made, _, err) = token(&["--ttl", "86400"]);
    assert!(!made && err.contains("--ttl"), "{err}");
    let (made, own, _) = token(&[]);
    assert!(made);
    let (s, _, _) = k.http(
        "POST",
        "/kbs/v0/resource/default/key/app",
        &[("Authorization", format!("Bearer {own}"))],
        Some(b"x"),
    );
    assert_eq!(s, 200, "admin writes answer 200, as Trustee's do (CoCo's kbs-client takes anything else for a failure)");
    // A policy that does not compile is refused and the old one stays.
    let bad = dir.path().join("bad.rego");
    std::fs::write(&bad, "package policy\nallow if {").expect("write");
    let out = k.admin_cli(&["policy", "--file", bad.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not compile"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(super) fn secret_url(k: &KbsProc, path: &str) -> String {
    format!("kbs://{}/{path}", k.addr)
}

/// A KBS serving TLS: the admin CLI reaches it with `--kbs https://...` and its CA; `kbss://`
/// clients that trust its CA get their secret, and so does a container whose vouchd was started
/// with `--kbs-ca`. A client that trusts another CA, or only the system's roots, refuses the
/// KBS's certificate; a plain-HTTP client gets nothing.
#[test]
fn kbs_over_tls() {
    if !require_root("kbs_over_tls") {
        return;
    }
    let env = TestEnv::new();
    let pki = env.path().join("pki");
    let (ca, cert, key) = server_certificate(&pki, "kbs");
    let (other_ca, _, _) = server_certificate(&pki, "other");
    let path_str = |p: &Path| p.to_str().expect("utf8").to_string();
    let k = KbsProc::start(
        env.path(),
        &[
            "--allow-sim",
            "--tls-cert",
            &path_str(&cert),
            "--tls-key",
            &path_str(&key),
        ],
    );
    let value = env.path().join("value.bin");
    std::fs::write(&value, SECRET).expect("write");
    let set = |kbs: &str, cas: &[&Path]| {
        let mut cmd = Command::new(vouch_kbs());
        cmd.args(["resource", "set", "default/key/app", "--file"])
            .arg(&value)
            .args(["--kbs", kbs, "--admin-key"])
            .arg(k.admin.join("admin.key"));
        for ca in cas {
            cmd.arg("--kbs-ca").arg(ca);
        }
        cmd.output().expect("vouch-kbs resource set")
    };
    let https = format!("https://{}", k.addr);
    let out = set(&https, &[&ca]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (kbs, cas) in [
        (https.as_str(), vec![]),
        (https.as_str(), vec![other_ca.as_path()]),
    ] {
        let out = set(kbs, &cas);
        assert!(
            !out.status.success(),
            "a certificate from an unknown CA was accepted"
        );
        assert!(
            stderr(&out).contains("TLS with the KBS") && stderr(&out).contains("certificate"),
            "{}",
            stderr(&out)
        );
    }
    let out = set(&k.addr, &[]);
    assert!(!out.status.success(), "plain HTTP to a TLS KBS succeeded");

    // The load generator over TLS.
    let out = Command::new(vouch_kbs_bench())
        .args([
            "--clients",
            "2",
            "--duration",
            "1",
            "--json",
            "--kbs",
            &https,
        ])
        .arg("--kbs-ca")
        .arg(&ca)
        .output()
        .expect("bench");
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert!(
        report["round_trips"].as_u64().expect("count") >= 2,
        "{report}"
    );

    // The protocol over TLS, and a client that trusts another CA.
    let tee = FakeTee::new("sha256:aa");
    let evidence = |b: &vouch_kbs_client::Binding| tee.evidence(b.runtime_data.clone());
    let url = format!("kbss://{}/default/key/app", k.addr);
    let trust =
        vouch_kbs_client::KbsTrust::from_ca_files(std::slice::from_ref(&ca)).expect("trust");
    let (client, path) = vouch_kbs_client::KbsClient::parse_url(&url, &trust).expect("url");
    for _ in 0..2 {
        let got = client
            .get_resource(kbs_types::Tee::Sample, &path, evidence)
            .expect("released over TLS");
        assert_eq!(got.as_slice(), SECRET);
    }
    let other = vouch_kbs_client::KbsTrust::from_ca_files(&[other_ca]).expect("trust");
    let (client, _) = vouch_kbs_client::KbsClient::parse_url(&url, &other).expect("url");
    let err = client
        .get_resource(kbs_types::Tee::Sample, &path, evidence)
        .expect_err("unknown CA");
    assert!(
        matches!(err, vouch_kbs_client::KbsClientError::Handshake { .. }),
        "{err}"
    );
    let bad_ca = env.path().join("not-a-ca.pem");
    std::fs::write(&bad_ca, "no certificate here").expect("write");
    let err = vouch_kbs_client::KbsTrust::from_ca_files(&[bad_ca]).expect_err("no certificate");
    assert!(err.to_string().contains("no PEM certificate"), "{err}");

    // A container, through vouchd.
    let d = env.start_with(&["--tee", "sim", "--kbs-ca", &path_str(&ca)]);
    load_busybox(&env, &d, "bb");
    let out = d.vouch(&[
        "run",
        "--rm",
        "--secret",
        &url,
        "bb",
        "sha256sum",
        "/secret/default/key/app",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(SECRET));
    assert_eq!(stdout(&out), format!("{hash}  /secret/default/key/app\n"));
    let log = std::fs::read_to_string(&k.log).expect("log");
    assert!(!log.contains("c0rrect-h0rse"), "secret in the KBS log");
}

#[test]
fn container_reads_its_secret_and_another_image_is_refused() {
    if !require_root("container_reads_its_secret_and_another_image_is_refused") {
        return;
    }
    let env = TestEnv::new();
    let k = KbsProc::start(env.path(), &["--allow-sim"]);
    k.put("default/key/app", SECRET, env.path());
    let d = env.start();
    let good = load_busybox(&env, &d, "bb");
    // Only the bb image may have the secret.
    let refs = env.path().join("refs.json");
    std::fs::write(&refs, json!({"images": [good]}).to_string()).expect("write");
    assert!(k
        .admin_cli(&["reference", "--file", refs.to_str().expect("utf8")])
        .status
        .success());
    let url = secret_url(&k, "default/key/app");
    // The container reads the secret; only its hash is printed.
    let script = "sha256sum /secret/default/key/app; stat -c '%a %u' /secret/default/key/app; (echo x > /secret/default/key/app) 2>/dev/null || echo read-only";
    let out = d.vouch(&[
        "run",
        "--name",
        "reader",
        "--user",
        "1000:1000",
        "--secret",
        &url,
        "bb",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(SECRET));
    assert_eq!(
        stdout(&out),
        format!("{hash}  /secret/default/key/app\n400 1000\nread-only\n")
    );
    let c = d.json(&["inspect", "reader"]);
    let actions: Vec<&str> = c[0]["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["action"].as_str().expect("a"))
        .collect();
    assert!(actions.contains(&"SecretFetched"), "{actions:?}");
    // The measured log records which resource was delivered, never its value.
    let ev = env.path().join("ev.json");
    d.ok(&[
        "attest",
        "--nonce",
        "00112233445566778899aabbccddeeff",
        "-o",
        ev.to_str().expect("utf8"),
    ]);
    let evidence = std::fs::read_to_string(&ev).expect("ev");
    assert!(evidence.contains("secret.fetched") && evidence.contains(&url));
    // The tmpfs is gone once the container has ended.
    let secrets_dir = env
        .state()
        .join("containers")
        .join(c[0]["id"].as_str().expect("id"))
        .join("secrets");
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .contains(secrets_dir.to_str().expect("utf8")));

    // A container from another image is refused, and the task says by whom and why.
    load_other_image(&env, &d, "other");
    let out = d.vouch(&[
        "run",
        "--name",
        "intruder",
        "--secret",
        &url,
        "other",
        "cat",
        "/secret/default/key/app",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("policy denied"), "{}", stderr(&out));
    let c = d.json(&["inspect", "intruder"]);
    assert_eq!(c[0]["state"], "Failed");
    let err = c[0]["error"].as_str().expect("error");
    assert!(
        err.contains(&k.addr) && err.contains("policy denied"),
        "{err}"
    );
    assert!(!stdout(&out).contains("c0rrect"));

    // No log anywhere holds the secret.
    drop(d);
    let mut leaks = Vec::new();
    scan(env.path(), &mut leaks);
    assert!(leaks.is_empty(), "secret found in: {leaks:?}");
}

/// A secret that only image A may have, asked for by an image-B container while several
/// image-A containers launch at the same moment (all asking for it too), round after round:
/// every A gets it, B never does. The KBS judges the container the evidence names, not
/// whichever container the log launched last.
#[test]
fn a_secret_never_reaches_another_image_under_concurrent_launches() {
    if !require_root("a_secret_never_reaches_another_image_under_concurrent_launches") {
        return;
    }
    let env = TestEnv::new();
    let k = KbsProc::start(env.path(), &["--allow-sim"]);
    k.put("default/key/app", SECRET, env.path());
    let d = env.start();
    let good = load_busybox(&env, &d, "a");
    load_other_image(&env, &d, "b");
    let refs = env.path().join("refs.json");
    std::fs::write(&refs, json!({"images": [good]}).to_string()).expect("write");
    assert!(k
        .admin_cli(&["reference", "--file", refs.to_str().expect("utf8")])
        .status
        .success());
    let url = secret_url(&k, "default/key/app");
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(SECRET));
    let socket = env.socket();
    const A_PER_ROUND: usize = 4;
    for round in 0..6 {
        let barrier = Arc::new(std::sync::Barrier::new(A_PER_ROUND + 1));
        let mut handles = Vec::new();
        for i in 0..=A_PER_ROUND {
            let (barrier, socket, url) = (barrier.clone(), socket.clone(), url.clone());
            // The B container starts at a different place among the As each round.
            let image = if i == round % (A_PER_ROUND + 1) {
                "b"
            } else {
                "a"
            };
            handles.push(std::thread::spawn(move || {
                barrier.wait();
                let out = vouch_with(
                    &socket,
                    &[
                        "run",
                        "--rm",
                        "--secret",
                        &url,
                        image,
                        "sha256sum",
                        "/secret/default/key/app",
                    ],
                    &[],
                );
                (image, out)
            }));
        }
        for h in handles {
            let (image, out) = h.join().expect("thread");
            if image == "a" {
                assert!(
                    out.status.success(),
                    "round {round}: A refused: {}",
                    stderr(&out)
                );
                assert!(
                    stdout(&out).starts_with(&hash),
                    "round {round}: {}",
                    stdout(&out)
                );
            } else {
                assert_eq!(
                    out.status.code(),
                    Some(125),
                    "round {round}: B got the secret: {}",
                    stdout(&out)
                );
                assert!(
                    stderr(&out).contains("policy denied"),
                    "round {round}: {}",
                    stderr(&out)
                );
                assert!(!stdout(&out).contains(&hash), "round {round}");
            }
        }
    }
}

/// The KBS's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Read whatever the server sends until it closes the connection (or `limit` passes).
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = std::time::Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

/// Unauthenticated clients cannot make the KBS hold time, memory or connections: a body
/// trickled after complete headers is answered 408 and closed at the request timeout, so is a
/// connection that never sends anything; a peer's connections beyond its limit are closed at
/// once; bodies in flight beyond the budget are answered 503, and resident memory stays within
/// that budget; afterwards the KBS serves a full round trip.
#[test]
fn slow_and_greedy_clients_are_bounded() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let k = KbsProc::start(
        dir.path(),
        &[
            "--allow-sim",
            "--request-timeout",
            "2",
            "--max-body-in-flight",
            "16",
        ],
    );
    k.put("default/key/app", SECRET, dir.path());
    // A body trickled one byte at a time.
    let mut slow = TcpStream::connect(&k.addr).expect("connect");
    slow.write_all(b"POST /kbs/v0/auth HTTP/1.1\r\nHost: kbs\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n").expect("head");
    let started = std::time::Instant::now();
    let trickle = {
        let mut s = slow.try_clone().expect("clone");
        std::thread::spawn(move || {
            for _ in 0..40 {
                if s.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let (answer, closed) = read_until_closed(&mut slow, Duration::from_secs(6));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(closed, "the trickling connection stayed open");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    trickle.join().expect("trickle");
    // A connection that never sends a byte is closed too.
    let mut idle = TcpStream::connect(&k.addr).expect("connect");
    let started = std::time::Instant::now();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(6));
    assert!(
        closed && started.elapsed() < Duration::from_secs(5),
        "idle connection kept"
    );

    // 64 clients each send 1 MiB of a 4 MB body and stall: at most the 16 MiB budget is held,
    // the others are refused with 503 at once.
    let pid = k.child.as_ref().expect("kbs").id();
    let before = rss_kib(pid);
    let chunk = vec![b' '; 1 << 20];
    let mut greedy: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(&k.addr).expect("connect");
            s.write_all(
                b"POST /kbs/v0/attest HTTP/1.1\r\nHost: kbs\r\nContent-Length: 4000000\r\n\r\n",
            )
            .expect("head");
            let _ = s.write_all(&chunk);
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(
        grown < 48 << 10,
        "the KBS grew by {grown} KiB holding stalled bodies"
    );
    let mut busy = 0;
    let mut timed_out = 0;
    for s in greedy.iter_mut() {
        let (answer, _) = read_until_closed(s, Duration::from_secs(5));
        if answer.starts_with("HTTP/1.1 503") {
            busy += 1;
        } else if answer.starts_with("HTTP/1.1 408") {
            timed_out += 1;
        }
    }
    assert!(busy >= 40, "only {busy} bodies refused over the budget");
    assert_eq!(
        busy + timed_out,
        64,
        "{busy} refused, {timed_out} timed out"
    );
    drop(greedy);

    // A peer's connections beyond its limit are closed at once, the first ones stay open (a
    // KBS of its own, whose idle timeout leaves the held connections alone meanwhile).
    let limit_dir = tempfile::tempdir().expect("tempdir");
    let limited = KbsProc::start(
        limit_dir.path(),
        &[
            "--allow-sim",
            "--request-timeout",
            "30",
            "--max-connections-per-peer",
            "20",
        ],
    );
    let held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&limited.addr).expect("connect"))
        .collect();
    // Every one of them admitted (a refused one is closed at once).
    std::thread::sleep(Duration::from_millis(300));
    for h in &held {
        let mut h = h.try_clone().expect("clone");
        let (_, closed) = read_until_closed(&mut h, Duration::from_millis(50));
        assert!(!closed, "a connection within the limit was closed");
    }
    let mut extra = TcpStream::connect(&limited.addr).expect("connect");
    let started = std::time::Instant::now();
    let (_, closed) = read_until_closed(&mut extra, Duration::from_secs(5));
    assert!(
        closed && started.elapsed() < Duration::from_secs(2),
        "connection over the limit kept ({:?})",
        started.elapsed()
    );
    drop(held);
    drop(limited);
    // The KBS still works.
    let tee = FakeTee::new(&format!("sha256:{}", "ab".repeat(32)));
    assert_eq!(
        fetch(&k, &tee, "default/key/app").expect("round trip"),
        SECRET
    );
}

/// A KBS that accepts connections and never answers: holds a launch at its fetch.
struct StallingKbs {
    addr: String,
    _held: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl StallingKbs {
    fn start() -> StallingKbs {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let held: Arc<std::sync::Mutex<Vec<TcpStream>>> = Arc::default();
        let keep = held.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                keep.lock().expect("lock").push(s);
            }
        });
        StallingKbs { addr, _held: held }
    }
}

/// A KBS that answers a byte every 200 ms, forever (each byte well inside any read timeout).
struct DrippingKbs {
    addr: String,
}

/// What a dripping KBS sends first: an HTTP answer's head, or (to a TLS client) the header of
/// a 16 KiB handshake record, whose body then comes a byte at a time.
const HTTP_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nX-Slow: ";
const TLS_RECORD: &[u8] = &[0x16, 0x03, 0x03, 0x40, 0x00, 0x02];

impl DrippingKbs {
    fn start() -> DrippingKbs {
        Self::sending(HTTP_HEAD)
    }

    fn sending(first: &'static [u8]) -> DrippingKbs {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut s = s;
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    let started = std::time::Instant::now();
                    for b in first.iter().chain(std::iter::repeat(&b'a')) {
                        if started.elapsed() > Duration::from_secs(90)
                            || s.write_all(&[*b]).is_err()
                        {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                });
            }
        });
        DrippingKbs { addr }
    }
}

/// A KBS that drip-feeds its answer cannot hold a launch: the whole exchange is bounded
/// (--kbs-timeout), and a forced removal or a stop of a launch waiting on such a KBS wins at
/// once, leaving no task, mount or monitor behind.
#[test]
fn a_dripping_kbs_never_holds_a_launch() {
    if !require_root("a_dripping_kbs_never_holds_a_launch") {
        return;
    }
    let env = TestEnv::new();
    let drip = DrippingKbs::start();
    let url = format!("kbs://{}/default/key/app", drip.addr);
    {
        let (ca, _, _) = server_certificate(&env.path().join("pki"), "drip");
        let ca = ca.to_str().expect("utf8").to_string();
        let d = env.start_with(&["--tee", "sim", "--kbs-timeout", "3", "--kbs-ca", &ca]);
        load_busybox(&env, &d, "bb");
        let started = std::time::Instant::now();
        let out = d.vouch(&["run", "--rm", "--secret", &url, "bb", "true"]);
        assert_eq!(out.status.code(), Some(125));
        assert!(
            stderr(&out).contains("did not complete the exchange within 3 seconds"),
            "{}",
            stderr(&out)
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        // The same over TLS, dripping the handshake itself: bounded by the same deadline.
        let tls_drip = DrippingKbs::sending(TLS_RECORD);
        let url = format!("kbss://{}/default/key/app", tls_drip.addr);
        let started = std::time::Instant::now();
        let out = d.vouch(&["run", "--rm", "--secret", &url, "bb", "true"]);
        assert_eq!(out.status.code(), Some(125));
        assert!(
            stderr(&out).contains("did not complete the handshake in time"),
            "{}",
            stderr(&out)
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
    // With the default bound (30 s), neither removal nor stop waits for it (a stop of a --rm
    // launch too, whose task is gone once it is cancelled).
    let d = env.start();
    for how in ["rm", "stop", "stop-rm"] {
        let name = format!("held-{how}");
        let socket = d.socket.clone();
        let (u, n) = (url.clone(), name.clone());
        let auto_remove = how == "stop-rm";
        let launch = std::thread::spawn(move || {
            let mut args = vec!["run", "--name", &n, "--secret", &u, "bb", "true"];
            if auto_remove {
                args.insert(1, "--rm");
            }
            vouch_with(&socket, &args, &[])
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let id = loop {
            let out = d.vouch(&["inspect", &name]);
            if out.status.success() {
                let c: Value = serde_json::from_slice(&out.stdout).expect("json");
                if c[0]["state"] == "Created" || c[0]["state"] == "Creating" {
                    break c[0]["id"].as_str().expect("id").to_string();
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{how}: the launch never reached its fetch"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(300));
        let started = std::time::Instant::now();
        if how == "rm" {
            d.ok(&["rm", "-f", &name]);
        } else {
            d.ok(&["stop", &name]);
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{how} waited {:?} for the KBS",
            started.elapsed()
        );
        let out = launch.join().expect("launch");
        assert_eq!(out.status.code(), Some(125), "{how}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("cancelled"),
            "{how}: {}",
            stderr(&out)
        );
        if how == "stop" {
            assert_eq!(d.json(&["inspect", &name])[0]["state"], "Cancelled");
            d.ok(&["rm", &name]);
        }
        assert_eq!(d.json(&["ps", "-a", "--json"]), json!([]), "{how}");
        let dir = env.state().join("containers").join(&id);
        assert_eq!(
            mounted_under(&dir),
            Vec::<String>::new(),
            "{how}: mounts left"
        );
        assert_eq!(
            processes_naming(&id),
            Vec::<String>::new(),
            "{how}: processes left"
        );
    }
}

fn mounted_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&d))
        .map(str::to_string)
        .collect()
}

/// Processes whose command line names this container id (its monitor).
fn processes_naming(id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(cmd) = std::fs::read(p.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(id) {
                out.push(cmd);
            }
        }
    }
    out
}

/// vouchd killed with SIGKILL right after a container's secret was fetched (its next secret's
/// KBS holds the launch there), and again while a --rm container with a secret runs and then
/// ends: after the restart no secrets tmpfs or root filesystem of theirs is mounted, no monitor
/// is left, the --rm tasks are gone, and the plaintext is nowhere on disk.
#[test]
fn a_crash_leaves_no_secret_mount_process_or_task_behind() {
    if !require_root("a_crash_leaves_no_secret_mount_process_or_task_behind") {
        return;
    }
    let env = TestEnv::new();
    let k = KbsProc::start(env.path(), &["--allow-sim"]);
    k.put("default/key/app", SECRET, env.path());
    let stall = StallingKbs::start();
    let mut d = env.start();
    load_busybox(&env, &d, "bb");
    let url = secret_url(&k, "default/key/app");
    let held = format!("kbs://{}/default/key/held", stall.addr);
    let socket = d.socket.clone();
    let (u, h) = (url.clone(), held.clone());
    let launch = std::thread::spawn(move || {
        vouch_with(
            &socket,
            &[
                "run", "--rm", "--name", "mid", "--secret", &u, "--secret", &h, "bb", "true",
            ],
            &[],
        )
    });
    // Wait until the first secret is on the container's tmpfs.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let id = loop {
        let out = d.vouch(&["inspect", "mid"]);
        if out.status.success() {
            let c: Value = serde_json::from_slice(&out.stdout).expect("json");
            let fetched = c[0]["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["action"] == "SecretFetched"));
            if fetched {
                break c[0]["id"].as_str().expect("id").to_string();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first secret never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let dir = env.state().join("containers").join(&id);
    assert!(
        !mounted_under(&dir).is_empty(),
        "the secrets tmpfs should be mounted at this point"
    );
    d.kill9();
    let _ = launch.join();
    let d = env.start();
    assert_eq!(
        mounted_under(&dir),
        Vec::<String>::new(),
        "mounts left behind"
    );
    assert_eq!(
        processes_naming(&id),
        Vec::<String>::new(),
        "processes left behind"
    );
    assert_eq!(
        d.json(&["ps", "-a", "--json"]),
        json!([]),
        "the --rm task stayed"
    );
    assert!(!dir.exists(), "{} stayed", dir.display());

    // Killed while a --rm container holding a secret runs; it ends while vouchd is down.
    let mut d = d;
    let id = d
        .ok(&[
            "run", "-d", "--rm", "--secret", &url, "bb", "sh", "-c", "sleep 2",
        ])
        .trim()
        .to_string();
    let dir = env.state().join("containers").join(&id);
    assert!(!mounted_under(&dir).is_empty());
    d.kill9();
    std::thread::sleep(Duration::from_millis(3000));
    let d = env.start();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !d
        .json(&["ps", "-a", "--json"])
        .as_array()
        .expect("list")
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the ended --rm task stayed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        mounted_under(&dir),
        Vec::<String>::new(),
        "mounts left behind"
    );
    assert_eq!(processes_naming(&id), Vec::<String>::new());
    drop(d);
    let mut leaks = Vec::new();
    scan(env.path(), &mut leaks);
    assert!(leaks.is_empty(), "secret found in: {leaks:?}");
}

/// Load an image named `name` that differs from the busybox one by a marker layer.
fn load_other_image(env: &TestEnv, d: &Daemon, name: &str) {
    load_layers(
        env,
        d,
        name,
        &[
            busybox_layer(),
            Layer::new().file("marker", 0o644, name.as_bytes()).finish(),
        ],
        &["/bin/sh"],
        &["PATH=/bin"],
    );
}

/// Files under `dir` containing the secret's distinctive bytes.
fn scan(dir: &Path, leaks: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            // The admin's own copy of the value was removed after upload; image layers hold no secrets.
            scan(&p, leaks);
        } else if m.is_file() && m.len() < (64 << 20) {
            if let Ok(bytes) = std::fs::read(&p) {
                if bytes
                    .windows(b"c0rrect-h0rse".len())
                    .any(|w| w == b"c0rrect-h0rse")
                    && !p.ends_with("kbs.redb")
                {
                    leaks.push(p);
                }
            }
        }
    }
}

fn fetch(
    k: &KbsProc,
    tee: &FakeTee,
    path: &str,
) -> Result<Vec<u8>, vouch_kbs_client::KbsClientError> {
    let client = vouch_kbs_client::KbsClient::new(k.addr.clone());
    let path = vouch_kbs_client::ResourcePath::parse(path).expect("path");
    client
        .get_resource(kbs_types::Tee::Sample, &path, |b| {
            tee.evidence(b.runtime_data.clone())
        })
        .map(|v| v.to_vec())
}

#[test]
fn quick_mode_releases_the_file_to_the_right_measurement_and_image_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = format!("sha256:{}", "ab".repeat(32));
    let secret = dir.path().join("secret.json");
    std::fs::write(&secret, br#"{"key":"123456"}"#).expect("write");
    // The sim's register 1 is never extended: all zeros.
    let zeros = "0".repeat(96);
    let k = KbsProc::start_quick(dir.path(), &secret, &zeros, &image);
    let tee = FakeTee::new(&image);
    assert_eq!(
        fetch(&k, &tee, vouch_kbs_client::QUICK_RESOURCE).expect("released"),
        br#"{"key":"123456"}"#
    );
    // The file is re-read: an edit takes effect at once.
    std::fs::write(&secret, br#"{"key":"654321"}"#).expect("write");
    assert_eq!(
        fetch(&k, &tee, vouch_kbs_client::QUICK_RESOURCE).expect("released"),
        br#"{"key":"654321"}"#
    );
    // Another image is refused.
    let other = FakeTee::new(&format!("sha256:{}", "cd".repeat(32)));
    let err = fetch(&k, &other, vouch_kbs_client::QUICK_RESOURCE).expect_err("other image");
    assert!(err.to_string().contains("policy denied"), "{err}");
    // The admin API is off in quick mode.
    let (s, b, _) = k.http(
        "POST",
        "/kbs/v0/resource/default/key/app",
        &[("Authorization", "Bearer x.y.z".into())],
        Some(b"x"),
    );
    assert_refused((s, b), 401, "AdminAuthFailed", "disabled");
    drop(k);
    // Another platform measurement is refused.
    let k = KbsProc::start_quick(dir.path(), &secret, &"1".repeat(96), &image);
    let err = fetch(&k, &tee, vouch_kbs_client::QUICK_RESOURCE).expect_err("other measurement");
    assert!(err.to_string().contains("policy denied"), "{err}");
}

/// A real PostgreSQL cluster in a temporary directory, on a free loopback port.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Postgres {
    fn start() -> Option<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|rd| {
                rd.flatten()
                    .map(|e| e.path().join("bin"))
                    .filter(|p| p.join("initdb").exists())
                    .max()
            });
        let Some(bin) = bin else {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "PostgreSQL is missing; scripts/deps installs it"
            );
            eprintln!("SKIPPED: PostgreSQL server is not installed (run scripts/deps)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("vouch-pg-")
            .tempdir()
            .expect("tempdir");
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(status.success());
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let data = dir.path().join("data");
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {}",
            dir.path().display()
        );
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(dir.path().join("pg.log"))
            .args(["-w", "-t", "30", "start"])
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Postgres { dir, bin, port })
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let pid = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn replicas_share_resources_and_policy_through_postgresql() {
    if !require_root("replicas_share_resources_and_policy_through_postgresql") {
        return;
    }
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&a_dir).expect("a");
    std::fs::create_dir_all(&b_dir).expect("b");
    let a = KbsProc::start(&a_dir, &["--allow-sim", "--database", &pg.url()]);
    // Replica B uses the same admin key.
    std::fs::create_dir_all(b_dir.join("admin")).expect("admin");
    for f in ["admin.key", "admin.pub"] {
        std::fs::copy(a.admin.join(f), b_dir.join("admin").join(f)).expect("copy key");
    }
    let b = KbsProc::start(&b_dir, &["--allow-sim", "--database", &pg.url()]);
    a.put("default/key/app", SECRET, dir.path());
    let tee = FakeTee::new("sha256:aa");
    // Stored through A, released by B.
    assert_eq!(fetch(&b, &tee, "default/key/app").expect("from B"), SECRET);
    // Reference values set through B restrict A.
    let refs = dir.path().join("refs.json");
    std::fs::write(&refs, br#"{"images": ["sha256:0000"]}"#).expect("write");
    assert!(b
        .admin_cli(&["reference", "--file", refs.to_str().expect("utf8")])
        .status
        .success());
    let err = fetch(&a, &tee, "default/key/app").expect_err("denied on A");
    assert!(err.to_string().contains("policy denied"), "{err}");
    // Durable: a restarted replica still has everything.
    std::fs::write(&refs, br#"{"images": ["sha256:aa"]}"#).expect("write");
    assert!(a
        .admin_cli(&["reference", "--file", refs.to_str().expect("utf8")])
        .status
        .success());
    drop(b);
    let b = KbsProc::start(&b_dir, &["--allow-sim", "--database", &pg.url()]);
    assert_eq!(
        fetch(&b, &tee, "default/key/app").expect("after restart"),
        SECRET
    );
    // An unreachable database is a clear start-up error.
    let out = Command::new(vouch_kbs())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-sim",
            "--database",
            "postgres://postgres@127.0.0.1:1/postgres",
            "--admin-key",
        ])
        .arg(a.admin.join("admin.pub"))
        .arg("--state-dir")
        .arg(dir.path().join("c"))
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect to PostgreSQL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in [&a.log, &b.log] {
        assert!(!std::fs::read_to_string(p)
            .expect("log")
            .contains("c0rrect-h0rse"));
    }
}

/// Collateral options for TDX evidence are checked when the KBS starts, with what is wrong.
#[test]
fn serve_refuses_bad_collateral_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = dir.path().join("admin");
    let out = Command::new(vouch_kbs())
        .args(["keygen", "--out-dir"])
        .arg(&admin)
        .output()
        .expect("keygen");
    assert!(out.status.success());
    let serve = |extra: &[&str]| {
        let mut cmd = Command::new(vouch_kbs());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir.path().join("state"))
            .arg("--admin-key")
            .arg(admin.join("admin.pub"))
            .args(extra);
        run_bounded(&mut cmd, Duration::from_secs(20)).expect("vouch-kbs")
    };
    let missing = dir.path().join("no-such-dir");
    let out = serve(&["--collateral-dir", missing.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("collateral directory") && stderr(&out).contains("no-such-dir"),
        "{}",
        stderr(&out)
    );
    let out = serve(&["--pccs", "ftp://pccs.example"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("http:// or https://"),
        "{}",
        stderr(&out)
    );
}

/// `GET /metrics` with these headers: status and body text.
fn scrape(k: &KbsProc, headers: &[(&str, String)]) -> (u16, String) {
    let (status, data, _) = k.http_bytes("GET", "/metrics", headers, None);
    (status, String::from_utf8_lossy(&data).into_owned())
}

#[test]
fn metrics_count_round_trips_and_need_the_metrics_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("metrics.token");
    std::fs::write(&token, "scrape-4f1c9a7e2b6d\n").expect("token");
    let k = KbsProc::start(
        dir.path(),
        &[
            "--allow-sim",
            "--metrics-token-file",
            token.to_str().expect("utf8"),
        ],
    );
    k.put("default/key/app", b"v4lue", dir.path());
    let image = format!("sha256:{}", "ab".repeat(32));
    let tee = FakeTee::new(&image);
    assert_eq!(
        fetch(&k, &tee, "default/key/app").expect("released"),
        b"v4lue"
    );
    let err = fetch(&k, &tee, "default/key/absent").expect_err("no such resource");
    assert!(err.to_string().contains("no such resource"), "{err}");

    let (status, body) = scrape(&k, &[]);
    assert_eq!(status, 401, "{body}");
    let wrong = [("Authorization", "Bearer scrape-4f1c9a7e2b6e".to_string())];
    assert_eq!(scrape(&k, &wrong).0, 401);
    let good = [("Authorization", "Bearer scrape-4f1c9a7e2b6d".to_string())];
    let (status, text) = scrape(&k, &good);
    assert_eq!(status, 200, "{text}");
    for line in [
        "vouch_kbs_auth_total{outcome=\"challenged\"} 2\n",
        "vouch_kbs_attestations_total{outcome=\"attested\"} 2\n",
        "vouch_kbs_attestation_seconds_count 2\n",
        "vouch_kbs_round_trips_total{outcome=\"released\"} 1\n",
        "vouch_kbs_round_trips_total{outcome=\"ResourceNotFound\"} 1\n",
        "vouch_kbs_sessions 2\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // No resource path, session or client-sent text is a label.
    assert!(
        !text.contains("absent") && !text.contains("default/key"),
        "{text}"
    );

    // Without a token file, /metrics is off; a guessable token is refused at start.
    let other = tempfile::tempdir().expect("tempdir");
    let off = KbsProc::start(other.path(), &["--allow-sim"]);
    let (status, body) = scrape(&off, &good);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("metrics are off"), "{body}");
    std::fs::write(&token, "short\n").expect("token");
    let out = Command::new(vouch_kbs())
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path().join("kbs-short"))
        .arg("--admin-key")
        .arg(dir.path().join("admin/admin.pub"))
        .arg("--metrics-token-file")
        .arg(&token)
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at least 16 printable characters"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
