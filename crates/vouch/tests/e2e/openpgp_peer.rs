//! Containers' simple signing with OpenPGP keys, against the implementations the ecosystem uses:
//! signatures `skopeo copy --sign-by` (with gnupg) writes to a lookaside store are accepted by
//! vouchd's `signedBy` policy; signatures `vouch sign --gpg-key` writes are accepted by
//! `skopeo copy --policy`, which refuses the image again once the signature is removed or made
//! with another key.

use std::path::{Path, PathBuf};
use std::process::Command;

use vouch_testkit::*;

struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn new(dir: &Path) -> Option<Gpg> {
        if Command::new("gpg").arg("--version").output().is_err() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "gnupg is needed"
            );
            eprintln!("SKIPPED: gnupg is not installed");
            return None;
        }
        let home = dir.join("gnupg");
        std::fs::create_dir_all(&home).expect("gnupg home");
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("mode");
        Some(Gpg { home })
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &self.home)
            .args([
                "--batch",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .expect("gpg");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A new signing key; returns its fingerprint, public and secret key files (armored).
    fn key(&self, name: &str, dir: &Path) -> (String, PathBuf, PathBuf) {
        let uid = format!("{name} <{name}@vouch.test>");
        self.run(&["--quick-gen-key", &uid, "ed25519", "sign", "never"]);
        let listing =
            String::from_utf8_lossy(&self.run(&["--with-colons", "--list-keys", &uid]).stdout)
                .to_string();
        let fpr = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("fingerprint")
            .to_string();
        let public = dir.join(format!("{name}.asc"));
        let secret = dir.join(format!("{name}-secret.asc"));
        std::fs::write(&public, self.run(&["--armor", "--export", &fpr]).stdout).expect("pub");
        std::fs::write(
            &secret,
            self.run(&["--armor", "--export-secret-keys", &fpr]).stdout,
        )
        .expect("sec");
        (fpr, public, secret)
    }
}

fn skopeo(gpg: &Gpg, args: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .env("GNUPGHOME", &gpg.home)
        .args(args)
        .output()
        .expect("skopeo")
}

#[test]
fn skopeo_and_vouch_accept_each_others_openpgp_signatures() {
    if !require_root("skopeo_and_vouch_accept_each_others_openpgp_signatures") {
        return;
    }
    let env = TestEnv::new();
    let Some(reg) = Registry::start(env.path()) else {
        return;
    };
    let Some(gpg) = Gpg::new(env.path()) else {
        return;
    };
    let (release_fpr, release_pub, release_sec) = gpg.key("release", env.path());
    let (_, _, other_sec) = gpg.key("other", env.path());
    let p = |x: &Path| x.to_str().expect("utf8").to_string();

    let sigs = env.path().join("sigstore");
    let regd = env.path().join("registries.d");
    std::fs::create_dir_all(&regd).expect("registries.d");
    std::fs::write(
        regd.join("vouch-test.yaml"),
        format!(
            "docker:\n  {}:\n    lookaside: file://{}\n    lookaside-staging: file://{}\n",
            reg.addr,
            sigs.display(),
            sigs.display()
        ),
    )
    .expect("registries.d entry");
    let policy = env.path().join("policy.json");
    std::fs::write(
        &policy,
        serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {
                format!("{}/team", reg.addr): [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": release_pub}]
            }}
        })
        .to_string(),
    )
    .expect("policy");

    let (layout, _) = busybox_layout(&env);
    let src = format!("oci:{}:bb", layout.display());
    let image = |repo: &str| format!("{}/team/{repo}:1", reg.addr);
    // skopeo signs with gnupg while it pushes.
    let out = skopeo(
        &gpg,
        &[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--registries.d",
            &p(&regd),
            "--sign-by",
            &release_fpr,
            &src,
            &format!("docker://{}", image("by-skopeo")),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for repo in ["by-vouch", "unsigned"] {
        reg.push(&layout, "bb", &format!("team/{repo}:1"));
    }

    // vouchd accepts skopeo's signature and refuses an image without one.
    let d = env.start_with(&[
        "--tee",
        "sim",
        "--image-policy",
        &p(&policy),
        "--registries-d",
        &p(&regd),
    ]);
    let out = d.vouch(&["pull", "--insecure-registry", &image("by-skopeo")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        d.ok(&["run", "--rm", &image("by-skopeo"), "echo", "gpg-signed"])
            .trim(),
        "gpg-signed"
    );
    let out = d.vouch(&["pull", "--insecure-registry", &image("unsigned")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no signature in the lookaside store"),
        "{}",
        stderr(&out)
    );

    // vouch signs; skopeo's policy check accepts it, and refuses without it or with another key.
    let sign = |secret: &Path| {
        let out = d.vouch_env(
            &[
                "sign",
                "--insecure-registry",
                "--gpg-key",
                &p(secret),
                "--registries-d",
                &p(&regd),
                &image("by-vouch"),
            ],
            &[("VOUCH_KEY_PASSWORD", "")],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
            .rsplit("stored at ")
            .next()
            .map(|s| PathBuf::from(s.trim()))
            .expect("signature path")
    };
    let check_with_skopeo = |n: usize| {
        skopeo(
            &gpg,
            &[
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--policy",
                &p(&policy),
                "--registries.d",
                &p(&regd),
                &format!("docker://{}", image("by-vouch")),
                &format!("dir:{}", env.path().join(format!("out-{n}")).display()),
            ],
        )
    };
    let signature = sign(&release_sec);
    let out = check_with_skopeo(1);
    assert!(
        out.status.success(),
        "skopeo refused vouch's signature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.vouch(&["pull", "--insecure-registry", &image("by-vouch")]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_file(&signature).expect("remove signature");
    assert!(
        !check_with_skopeo(2).status.success(),
        "skopeo accepted an unsigned image"
    );
    sign(&other_sec);
    let out = check_with_skopeo(3);
    assert!(
        !out.status.success(),
        "skopeo accepted another key's signature"
    );
    drop(d);

    // The same store served over HTTP (a real web server on loopback) works as a lookaside too.
    let web = WebServer::serve(&sigs);
    let port = web.port;
    let regd_http = env.path().join("registries-http.d");
    std::fs::create_dir_all(&regd_http).expect("dir");
    std::fs::write(
        regd_http.join("http.yaml"),
        format!(
            "docker:\n  {}:\n    lookaside: http://127.0.0.1:{port}\n",
            reg.addr
        ),
    )
    .expect("entry");
    let _ = std::fs::remove_dir_all(env.state());
    let d = env.start_with(&[
        "--tee",
        "sim",
        "--image-policy",
        &p(&policy),
        "--registries-d",
        &p(&regd_http),
    ]);
    let by_skopeo = d.vouch(&["pull", "--insecure-registry", &image("by-skopeo")]);
    let unsigned = d.vouch(&["pull", "--insecure-registry", &image("unsigned")]);
    drop(web);
    assert!(by_skopeo.status.success(), "{}", stderr(&by_skopeo));
    assert!(!unsigned.status.success());
}
