//! A registry that misbehaves: a small proxy in front of a real `docker-registry` stalls, loops
//! redirects, truncates bodies or swaps manifests. Each pull fails with a clear error, in bounded
//! time, and leaves no image and no partial file behind.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vouch_testkit::*;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    /// Blob requests get no answer at all.
    StallBlobs,
    /// Blob requests are redirected to themselves, forever.
    RedirectLoop,
    /// Blob bodies stop half way (the connection closes).
    TruncateBlobs,
    /// Manifest requests by tag get another (valid) manifest than the tag names.
    SwapManifest,
    /// The first request for each blob whose path contains the given text stops half way.
    TruncateOnce,
    /// Manifests come back 5 MB large.
    HugeManifest,
}

struct Proxy {
    addr: String,
    stop: Arc<AtomicBool>,
    /// Paths of the blob requests served, in order.
    blobs: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).ok()? == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.push(b[0]);
    }
    Some(head)
}

/// Forward one request upstream and return the whole raw response (the registry closes after
/// answering because the request says so).
fn upstream(registry: &str, head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut lines: Vec<String> = text
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
        .map(str::to_string)
        .collect();
    lines.push("Connection: close".into());
    let mut up = TcpStream::connect(registry).expect("registry");
    up.write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())
        .expect("forward");
    let mut resp = Vec::new();
    let _ = up.read_to_end(&mut resp);
    resp
}

fn serve(registry: String, fault: Fault, swap_to: Option<String>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let blobs: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen = blobs.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if flag.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut conn) = conn else { continue };
            let registry = registry.clone();
            let swap_to = swap_to.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                let Some(head) = read_head(&mut conn) else {
                    return;
                };
                let first = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let path = first.split(' ').nth(1).unwrap_or("/").to_string();
                let is_blob = path.contains("/blobs/");
                let first_time = is_blob && {
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    let first = !s.contains(&path);
                    s.push(path.clone());
                    first
                };
                match fault {
                    Fault::StallBlobs if is_blob => {
                        std::thread::sleep(Duration::from_secs(30));
                        return;
                    }
                    Fault::HugeManifest if path.contains("/manifests/") => {
                        let body = format!(
                            "{{\"schemaVersion\": 2, \"pad\": \"{}\"}}",
                            "x".repeat(5 << 20)
                        );
                        let _ = conn.write_all(
                            format!("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                                .as_bytes(),
                        );
                        return;
                    }
                    Fault::RedirectLoop if is_blob => {
                        let _ = conn.write_all(
                            format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                .as_bytes(),
                        );
                        return;
                    }
                    _ => {}
                }
                let head = match (&swap_to, fault) {
                    (Some(other), Fault::SwapManifest) if path.contains("/manifests/latest") => {
                        String::from_utf8_lossy(&head)
                            .replacen("/manifests/latest", &format!("/manifests/{other}"), 1)
                            .into_bytes()
                    }
                    _ => head,
                };
                let resp = upstream(&registry, &head);
                let truncate_once = fault == Fault::TruncateOnce
                    && first_time
                    && swap_to.as_deref().is_some_and(|d| path.contains(d));
                if (fault == Fault::TruncateBlobs || truncate_once)
                    && is_blob
                    && resp.starts_with(b"HTTP/1.1 200")
                {
                    let _ = conn.write_all(&resp[..resp.len() / 2]);
                    return;
                }
                let _ = conn.write_all(&resp);
            });
        }
    });
    Proxy { addr, stop, blobs }
}

#[test]
fn misbehaving_registries_fail_clearly_and_leave_nothing() {
    if !require_root("misbehaving_registries_fail_clearly_and_leave_nothing") {
        return;
    }
    let env = TestEnv::new();
    let Some(reg) = Registry::start(env.path()) else {
        return;
    };
    let (layout, _) = busybox_layout(&env);
    reg.push(&layout, "bb", "test/bb:latest");
    let other = env.path().join("other");
    let other_digest = write_layout(
        &other,
        "o",
        &[busybox_layer()],
        &["/bin/true"],
        &["PATH=/bin"],
    );
    reg.push(&other, "o", "test/bb:other");
    let d = env.start_with(&["--tee", "sim", "--registry-timeout", "2"]);

    for (fault, want) in [
        (Fault::StallBlobs, "timed out"),
        (Fault::RedirectLoop, "redirect"),
        (Fault::TruncateBlobs, "connection closed before"),
        (Fault::HugeManifest, "larger than"),
    ] {
        let proxy = serve(reg.addr.clone(), fault, None);
        let started = Instant::now();
        let out = d.vouch(&[
            "pull",
            "--insecure-registry",
            &format!("{}/test/bb:latest", proxy.addr),
        ]);
        assert!(!out.status.success(), "{fault:?}: pull succeeded");
        assert!(
            stderr(&out).to_lowercase().contains(want),
            "{fault:?}: {}",
            stderr(&out)
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{fault:?} took {:?}",
            started.elapsed()
        );
        store_is_clean(&env, &d);
    }

    // A tag answered with another image than the one asked for by digest is refused.
    let proxy = serve(reg.addr.clone(), Fault::SwapManifest, Some("other".into()));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
            .expect("json");
    let wanted = index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let pinned = format!("{}/test/bb@{wanted}", proxy.addr);
    let out = d.vouch(&["pull", "--insecure-registry", &pinned]);
    assert!(
        out.status.success(),
        "by digest, nothing is swapped: {}",
        stderr(&out)
    );
    // By tag the proxy answers with the other manifest: vouch stores what it got, under the
    // digest it computed itself, never under the one the tag used to name.
    let out = d.vouch(&[
        "pull",
        "-q",
        "--insecure-registry",
        &format!("{}/test/bb:latest", proxy.addr),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), other_digest);
}

#[test]
fn a_retried_pull_fetches_only_what_is_missing() {
    if !require_root("a_retried_pull_fetches_only_what_is_missing") {
        return;
    }
    let env = TestEnv::new();
    let Some(reg) = Registry::start(env.path()) else {
        return;
    };
    let layout = env.path().join("layout");
    let extra = |name: &str| {
        Layer::new()
            .dir("etc/")
            .file(&format!("etc/{name}"), 0o644, name.as_bytes())
            .finish()
    };
    write_layout(
        &layout,
        "m",
        &[busybox_layer(), extra("a"), extra("b")],
        &["/bin/sh"],
        &["PATH=/bin"],
    );
    reg.push(&layout, "m", "test/multi:1");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
            .expect("json");
    let m = index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(m.trim_start_matches("sha256:")),
        )
        .expect("manifest"),
    )
    .expect("json");
    let victim = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer")
        .to_string();
    let proxy = serve(reg.addr.clone(), Fault::TruncateOnce, Some(victim.clone()));
    // The registry is configured as plain HTTP once, in the daemon.
    let d = env.start_with(&["--tee", "sim", "--insecure-registry", &proxy.addr]);
    let reference = format!("{}/test/multi:1", proxy.addr);
    assert!(!d.vouch(&["pull", &reference]).status.success());
    store_is_clean(&env, &d);
    let first: Vec<String> = proxy.blobs.lock().expect("lock").clone();
    let out = d.vouch(&["pull", &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    let all = proxy.blobs.lock().expect("lock").clone();
    let second = &all[first.len()..];
    // Only the blob that failed is fetched again: config and the other layers were kept.
    assert_eq!(second.len(), 1, "first {first:?}, then {second:?}");
    assert!(second[0].contains(&victim), "{second:?}");
    assert_eq!(
        d.ok(&["run", "--rm", &reference, "cat", "/etc/a", "/etc/b"]),
        "ab"
    );
}
