//! Conker's REST API on vouchd, driven with the requests of Conker's README, against a real
//! vouch-kbs in quick mode (Conker's secret broker role).

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vouch_testkit::*;

const SECRET: &[u8] = b"{\"key\":\"123456\"}\n";

struct Broker {
    child: Child,
    addr: String,
}

impl Broker {
    fn start(dir: &Path, measurement: &str, image: &str) -> Broker {
        std::fs::write(dir.join("secret.json"), SECRET).expect("secret");
        let args: Vec<std::ffi::OsString> = vec![
            "--allow-sim".into(),
            "--state-dir".into(),
            dir.join("broker").into(),
            "--secret-file".into(),
            dir.join("secret.json").into(),
            "--measurement".into(),
            measurement.into(),
            "--image".into(),
            image.into(),
        ];
        let (child, addr) = spawn_kbs(&args, &dir.join("broker.log"));
        Broker { child, addr }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// One request to the Conker API on vouchd's socket: (HTTP status, envelope).
fn conker(d: &Daemon, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let client = vouch_api::Client::new(&d.socket);
    let bytes = body.map(|b| b.to_string().into_bytes());
    let mut resp = client
        .send(method, path, bytes.as_deref())
        .expect("request");
    let mut data = Vec::new();
    resp.body.read_to_end(&mut data).expect("body");
    (
        resp.status,
        serde_json::from_slice(&data).unwrap_or(Value::Null),
    )
}

fn wait_for(d: &Daemon, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = conker(d, "GET", "/sw/api/v1/container", None);
        assert_eq!(status, 200, "{v}");
        if done(&v["data"]) {
            return v["data"].clone();
        }
        assert!(Instant::now() < deadline, "task did not get there: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status_is(s: &'static str) -> impl Fn(&Value) -> bool {
    move |t: &Value| t["Status"] == s
}

#[test]
fn conker_readme_requests_drive_vouchd() {
    if !require_root("conker_readme_requests_drive_vouchd") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    let image = load_busybox(&env, &d, "bb");
    // The sim's register 1 is all zeros: that is this "CVM's measurement".
    let broker = Broker::start(env.path(), &"0".repeat(96), &image);
    let ep = broker.addr.clone();

    // The README's request as written (its PublishedPort 30001 replaced by a free port, and a
    // command that serves on its TargetPort 8080 and keeps the volume's content).
    let published = free_port();
    let readme = json!({
        "Name": "conker-example-app",
        "ImageInfo": {"ImageName": "bb", "RegisterAuthInfo": {"Username": "", "Password": ""}},
        "Ports": [{"TargetPort": 8080, "PublishedPort": published}],
        "Env": [format!("userId=secret-{ep}")],
        "Mounts": [{"Type": "volume", "Target": "/inner1", "Source": "test-api", "RW": true}],
        "KmsEndpoints": [ep]
    });
    let mut serving = readme.clone();
    serving["ImageInfo"]["Cmd"] = json!(format!(
        "sh -c 'cat /secret/secret-{ep}.json > /inner1/copy && exec nc -ll -p 8080 -e cat /inner1/copy'"
    ));
    let (status, v) = conker(&d, "POST", "/sw/api/v1/container", Some(&serving));
    assert_eq!((status, v["code"].clone()), (200, json!(200)), "{v}");
    wait_for(&d, status_is("Running"));
    // The published port reaches the container, which serves what it keeps in its volume.
    let served = read_from(&format!("127.0.0.1:{published}"), Duration::from_secs(10))
        .expect("published port");
    assert_eq!(served.as_bytes(), SECRET);
    assert_eq!(
        std::fs::read(env.state().join("volumes/test-api/copy")).expect("volume"),
        SECRET
    );
    let (status, v) = conker(&d, "DELETE", "/sw/api/v1/container", None);
    assert_eq!(status, 200, "{v}");

    // Conker's other mount type (a host directory) is refused, clearly.
    let mut bind = readme.clone();
    bind["Mounts"][0]["Type"] = json!("bind");
    bind["Mounts"][0]["Source"] = json!("/etc");
    let (status, v) = conker(&d, "POST", "/sw/api/v1/container", Some(&bind));
    assert_eq!((status, v["code"].clone()), (400, json!(400)), "{v}");
    assert!(
        v["message"]
            .as_str()
            .expect("message")
            .contains("not supported"),
        "{v}"
    );

    // The same task without volumes: created, attested, secret delivered as Conker names it.
    let mut req = readme.clone();
    req["Mounts"] = json!([]);
    req["Ports"] = json!([]);
    req["ImageInfo"]["Cmd"] = json!(format!("sha256sum /secret/secret-{ep}.json"));
    req["ImageInfo"]["RegisterAuthInfo"]["Password"] = json!("hunter2-registry");
    req["SessionId"] = json!("2lVUIyHQLY00000xcb514ee3");
    let (status, v) = conker(&d, "POST", "/sw/api/v1/container", Some(&req));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], 200);
    let id = v["data"]["Id"].as_str().expect("Id").to_string();
    let task = wait_for(&d, status_is("Exited"));
    assert_eq!(task["Id"], id.as_str());
    assert_eq!(task["IsCancel"], false);
    assert_eq!(task["ContainerInspect"]["State"]["ExitCode"], 0, "{task}");
    // Only what vouch understands is kept and shown back: no unknown field, no env value.
    assert_eq!(task["ContainerConf"]["SessionId"], Value::Null, "{task}");
    assert!(
        !task.to_string().contains(&format!("userId=secret-{ep}")),
        "an environment value was echoed: {task}"
    );
    assert_eq!(task["ContainerConf"]["Env"], json!(["userId=<redacted>"]));
    assert_eq!(
        task["ContainerConf"]["ImageInfo"]["RegisterAuthInfo"]["Password"],
        "<redacted>"
    );
    let actions: Vec<&str> = task["Events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["Action"].as_str().expect("a"))
        .collect();
    for want in [
        "Verifying",
        "Verified",
        "Creating",
        "SecretFetched",
        "Created",
        "Running",
        "Exited",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(SECRET));
    assert_eq!(
        d.ok(&["logs", &id]),
        format!("{hash}  /secret/secret-{ep}.json\n")
    );

    // One task at a time: a running task blocks a new one, cannot be cancelled, is deleted.
    let mut long = req.clone();
    long["ImageInfo"]["Cmd"] = json!("sleep 60");
    assert_eq!(
        conker(&d, "POST", "/sw/api/v1/container", Some(&long)).0,
        200
    );
    wait_for(&d, status_is("Running"));
    let (status, v) = conker(&d, "POST", "/sw/api/v1/container", Some(&long));
    assert_eq!((status, v["code"].clone()), (409, json!(409)), "{v}");
    let (status, v) = conker(&d, "POST", "/sw/api/v1/container/cancel", None);
    assert_eq!(status, 409, "{v}");
    let (status, v) = conker(&d, "DELETE", "/sw/api/v1/container", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(conker(&d, "GET", "/sw/api/v1/container", None).0, 404);

    // Nothing stored or logged the registry password.
    let mut found = Vec::new();
    for p in [env.state().join("vouchd.redb"), d.log.clone()] {
        if std::fs::read(&p)
            .map(|b| b.windows(7).any(|w| w == b"hunter2"))
            .unwrap_or(false)
        {
            found.push(p);
        }
    }
    assert!(found.is_empty(), "registry password stored in {found:?}");
}

#[test]
fn conker_cancel_stops_a_launch_waiting_on_its_secret_broker() {
    if !require_root("conker_cancel_stops_a_launch_waiting_on_its_secret_broker") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    // A broker that accepts connections and never answers.
    let stalled = TcpListener::bind("127.0.0.1:0").expect("bind");
    let ep = stalled.local_addr().expect("addr").to_string();
    let req = json!({"Name": "stuck", "ImageInfo": {"ImageName": "bb", "Cmd": "true"}, "KmsEndpoints": [ep]});
    assert_eq!(
        conker(&d, "POST", "/sw/api/v1/container", Some(&req)).0,
        200
    );
    wait_for(&d, |t| {
        t["Events"].as_array().is_some_and(|e| {
            e.iter()
                .any(|e| e["Action"] == "Created" || e["Action"] == "Creating")
        })
    });
    let (status, v) = conker(&d, "POST", "/sw/api/v1/container/cancel", None);
    assert_eq!(status, 200, "{v}");
    let task = wait_for(&d, status_is("Cancelled"));
    assert_eq!(task["IsCancel"], true);
    assert!(
        !task["Events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["Action"] == "Running"),
        "{task}"
    );
    drop(stalled);
}
