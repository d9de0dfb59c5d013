//! vouchd killed with SIGKILL at any moment: tasks and events survive, the measurement log still
//! replays to the register, and containers that ended meanwhile show their exit status.

use std::time::Duration;

use vouch_testkit::*;

const NONCE: &str = "0123456789abcdef0123456789abcdef";

fn verify_ok(env: &TestEnv, d: &Daemon) -> serde_json::Value {
    let ev = env.path().join("evidence.json");
    d.ok(&["attest", "--nonce", NONCE, "-o", ev.to_str().expect("utf8")]);
    let out = d.vouch(&[
        "verify",
        ev.to_str().expect("utf8"),
        "--nonce",
        NONCE,
        "--allow-sim",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "replay no longer matches the register: {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("verdict")
}

#[test]
fn kill9_while_containers_run_keeps_tasks_and_measurements() {
    if !require_root("kill9_while_containers_run_keeps_tasks_and_measurements") {
        return;
    }
    let env = TestEnv::new();
    let mut d = env.start();
    load_busybox(&env, &d, "bb");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "ends-while-down",
        "bb",
        "sh",
        "-c",
        "sleep 1; echo finished; exit 7",
    ]);
    d.ok(&["run", "-d", "--name", "outlives", "bb", "sleep", "300"]);
    let before = d.json(&["ps", "-a", "--json"]);
    d.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    let d = env.start();
    // Every task and every event is still there.
    let after = d.json(&["ps", "-a", "--json"]);
    assert_eq!(after.as_array().expect("list").len(), 2);
    for b in before.as_array().expect("list") {
        let a = d.json(&["inspect", b["id"].as_str().expect("id")]);
        let old = b["events"].as_array().expect("events");
        assert_eq!(
            &a[0]["events"].as_array().expect("events")[..old.len()],
            &old[..],
            "events were lost"
        );
    }
    // The one that ended while vouchd was down has its real exit code and output.
    assert_eq!(d.ok(&["wait", "ends-while-down"]), "7\n");
    assert_eq!(d.ok(&["logs", "ends-while-down"]), "finished\n");
    // The one still running is followed again and can be stopped.
    assert_eq!(d.json(&["inspect", "outlives"])[0]["state"], "Running");
    d.ok(&["stop", "-t", "1", "outlives"]);
    assert_eq!(d.json(&["inspect", "outlives"])[0]["exit_code"], 137);
    let verdict = verify_ok(&env, &d);
    let containers = verdict["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 2);
    assert!(containers.iter().any(|c| c["exit_code"] == 7));
}

#[test]
fn kill9_at_random_points_of_launches_never_breaks_the_log() {
    if !require_root("kill9_at_random_points_of_launches_never_breaks_the_log") {
        return;
    }
    let env = TestEnv::new();
    {
        let d = env.start();
        load_busybox(&env, &d, "bb");
    }
    // Kill vouchd at spread-out moments while launches are in flight.
    for (round, delay_ms) in [3u64, 9, 17, 28, 45].into_iter().enumerate() {
        let mut d = env.start();
        let socket = d.socket.clone();
        let launcher = std::thread::spawn(move || {
            for _ in 0..4 {
                let _ = vouch_with(&socket, &["run", "--rm", "bb", "true"], &[]);
            }
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        d.kill9();
        let _ = launcher.join();
        let d = env.start();
        verify_ok(&env, &d);
        // No task is stuck half-way: each ended, failed, or is running.
        for c in d.json(&["ps", "-a", "--json"]).as_array().expect("list") {
            let state = c["state"].as_str().expect("state");
            assert!(
                matches!(state, "Exited" | "Failed" | "Running"),
                "round {round}: task left in {state}"
            );
        }
        drop(d);
    }
}

#[test]
fn tee_info_shows_the_register_the_log_replays_to() {
    if !require_root("tee_info_shows_the_register_the_log_replays_to") {
        return;
    }
    let env = TestEnv::new();
    let d = env.start();
    load_busybox(&env, &d, "bb");
    d.ok(&["run", "--rm", "bb", "true"]);
    let tee = d.json(&["tee", "info", "--json"]);
    assert_eq!(tee["tee"], "sim");
    assert_eq!(tee["hardware"], false);
    assert_eq!(tee["registers"].as_array().expect("registers").len(), 4);
    let verdict = verify_ok(&env, &d);
    assert_eq!(tee["registers"][3], verdict["registers"][3]);
    assert_eq!(tee["registers"][0], "0".repeat(96));
    let text = d.ok(&["tee", "info"]);
    assert!(
        text.contains("NOT hardware-backed") && text.contains("<- vouch's event log"),
        "{text}"
    );
}

/// A record that something other than vouchd appends to the measurement log while vouchd is
/// stopped is never extended into the register: the restarted vouchd cuts it off (keeping it
/// aside), its evidence still verifies, and it does not list the forged container.
#[test]
fn records_appended_while_vouchd_is_stopped_are_never_measured() {
    if !require_root("records_appended_while_vouchd_is_stopped_are_never_measured") {
        return;
    }
    use std::io::Write as _;
    let env = TestEnv::new();
    {
        let d = env.start();
        load_busybox(&env, &d, "bb");
        d.ok(&["run", "--rm", "bb", "true"]);
    }
    let log = env.state().join("measurements.log");
    let records = std::fs::read_to_string(&log).expect("log").lines().count();
    let forged = serde_json::json!({
        "content": {"id": "f".repeat(64), "name": "forged", "image": "forged",
                    "image_digest": format!("sha256:{}", "0".repeat(64)), "config_digest": "sha384:00"},
        "domain": "vouch", "op": "container.create", "seq": records
    });
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open");
    f.write_all(format!("{forged}\n").as_bytes())
        .expect("append");
    drop(f);
    let d = env.start();
    let verdict = verify_ok(&env, &d);
    assert_eq!(verdict["records"], records, "{verdict}");
    assert!(!verdict.to_string().contains("forged"), "{verdict}");
    let kept = std::fs::read_to_string(env.state().join("measurements.rejected")).expect("kept");
    assert!(kept.contains("forged"));
    assert!(std::fs::read_to_string(&d.log)
        .expect("log")
        .contains("vouchd was not writing"));
}
