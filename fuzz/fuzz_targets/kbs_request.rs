//! Request bodies at vouch-kbs's HTTP API, through its router (body limits, parsing, handlers):
//! `/auth`, `/attest` on a fresh session, `/resource` reads, and the admin uploads with a token
//! that is not the owner's. Whatever arrives, the answer is an HTTP response, never a panic,
//! and nothing is released without an attested session.
#![no_main]
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use vouch_kbs::server::{router, ServeLimits};
use vouch_kbs::token::Es256;
use vouch_kbs::{Kbs, KbsConfig};

struct World {
    rt: tokio::runtime::Runtime,
    kbs: Arc<Kbs>,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().expect("state dir");
        let storage =
            vouch_kbs::store::RedbStorage::open(&dir.path().join("kbs.redb")).expect("db");
        let admin = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]).verifying_key();
        let cfg = KbsConfig {
            allow_sim: true,
            allow_sample: true,
            snp_chain: None,
            session_ttl: Duration::from_secs(60),
            token_ttl: Duration::from_secs(60),
            max_sessions: 1024,
            admin_key: Some(admin),
            quick: None,
            tpm_aks: Vec::new(),
            collateral: None,
            tpm_ak_cas: Vec::new(),
            limits: ServeLimits::default(),
            admin_audience: vouch_kbs::token::DEFAULT_ADMIN_AUDIENCE.into(),
            sim_keys: Vec::new(),
            metrics_token: None,
        };
        let signer = Es256::from_scalar(&[7u8; 32]).expect("signer");
        World {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            kbs: Arc::new(Kbs::new(cfg, Box::new(storage), signer)),
            _dir: dir,
        }
    })
}

const AUTH: &str = r#"{"version":"0.4.0","tee":"sample","extra-params":""}"#;

async fn call(kbs: &Arc<Kbs>, method: &str, path: &str, cookie: Option<&str>, body: Vec<u8>) -> (StatusCode, Option<String>) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", "Bearer a.b.c");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = router(Arc::clone(kbs))
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("the router answers");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    (resp.status(), cookie)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let w = world();
    let body = body.to_vec();
    w.rt.block_on(async {
        match which % 6 {
            0 => {
                call(&w.kbs, "POST", "/kbs/v0/auth", None, body).await;
            }
            1 | 2 => {
                let (status, cookie) = call(&w.kbs, "POST", "/kbs/v0/auth", None, AUTH.into()).await;
                assert_eq!(status, StatusCode::OK);
                let cookie = cookie.expect("a session cookie");
                let (attested, _) =
                    call(&w.kbs, "POST", "/kbs/v0/attest", Some(&cookie), body).await;
                let (read, _) = call(
                    &w.kbs,
                    "GET",
                    "/kbs/v0/resource/default/key/absent",
                    Some(&cookie),
                    Vec::new(),
                )
                .await;
                if attested != StatusCode::OK {
                    assert_ne!(read, StatusCode::OK, "a resource without attestation");
                }
            }
            3 => {
                call(&w.kbs, "POST", "/kbs/v0/resource-policy", None, body).await;
            }
            4 => {
                call(&w.kbs, "POST", "/kbs/v0/reference-values", None, body).await;
            }
            _ => {
                let path = String::from_utf8_lossy(&body);
                let uri = format!("/kbs/v0/resource/{}", path.replace(['?', '#', ' '], ""));
                if uri.parse::<axum::http::Uri>().is_ok() {
                    call(&w.kbs, "GET", &uri, None, Vec::new()).await;
                }
            }
        }
    });
});
