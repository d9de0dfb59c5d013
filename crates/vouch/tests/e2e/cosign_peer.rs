//! Cosign signatures checked against an implementation vouch did not write (sigstore-rs), through
//! a real registry: sigstore-rs verifies what `vouch sign` attached, and signs (with a key from
//! `vouch key generate`, so it also reads vouch's encrypted key format) what vouchd's image policy
//! then accepts.

use sigstore::cosign::constraint::PrivateKeySigner;
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraintVec};
use sigstore::cosign::{Constraint, CosignCapabilities, SignatureLayer};
use sigstore::crypto::SigningScheme;
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};
use vouch_testkit::*;

const PASSWORD: &str = "tr0ub4dor&3";

fn sigstore_client() -> sigstore::cosign::Client {
    let config = ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    };
    sigstore::cosign::ClientBuilder::default()
        .with_oci_client_config(config)
        .build()
        .expect("sigstore client")
}

#[test]
fn sigstore_rs_and_vouch_accept_each_others_signatures() {
    if !require_root("sigstore_rs_and_vouch_accept_each_others_signatures") {
        return;
    }
    let env = TestEnv::new();
    let Some(reg) = Registry::start(env.path()) else {
        return;
    };
    let (layout, _) = busybox_layout(&env);
    reg.push(&layout, "bb", "peer/by-vouch:1");
    reg.push(&layout, "bb", "peer/by-sigstore:1");
    let plain = env.start();
    let prefix = env.path().join("release");
    let out = plain.vouch_env(
        &[
            "key",
            "generate",
            "--output-prefix",
            prefix.to_str().expect("utf8"),
        ],
        &[("VOUCH_KEY_PASSWORD", PASSWORD)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (key_path, pub_path) = (prefix.with_extension("key"), prefix.with_extension("pub"));

    // vouch signs; sigstore-rs verifies with the public key.
    let by_vouch = format!("{}/peer/by-vouch:1", reg.addr);
    let out = plain.vouch_env(
        &[
            "sign",
            "--insecure-registry",
            "--key",
            key_path.to_str().expect("utf8"),
            &by_vouch,
        ],
        &[("VOUCH_KEY_PASSWORD", PASSWORD)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let public = std::fs::read(&pub_path).expect("pub");
    let verify_with_sigstore = |reference: &str, public: &[u8]| -> Result<(), String> {
        rt.block_on(async {
            let mut client = sigstore_client();
            let image: OciReference = reference.parse().map_err(|e| format!("{e:?}"))?;
            let layers = client
                .trusted_signature_layers(&Auth::Anonymous, &image)
                .await
                .map_err(|e| e.to_string())?;
            let constraints: VerificationConstraintVec = vec![Box::new(
                PublicKeyVerifier::try_from(public).map_err(|e| e.to_string())?,
            )];
            sigstore::cosign::verify_constraints(&layers, constraints.iter())
                .map_err(|e| format!("{e:?}"))
        })
    };
    verify_with_sigstore(&by_vouch, &public).expect("sigstore-rs accepts vouch's signature");
    // And refuses it for another key (so the check above could fail).
    let other = env.path().join("other");
    assert!(plain
        .vouch_env(
            &[
                "key",
                "generate",
                "--output-prefix",
                other.to_str().expect("utf8")
            ],
            &[("VOUCH_KEY_PASSWORD", PASSWORD)],
        )
        .status
        .success());
    let other_public = std::fs::read(other.with_extension("pub")).expect("pub");
    assert!(verify_with_sigstore(&by_vouch, &other_public).is_err());

    // sigstore-rs signs with vouch's encrypted key; vouchd's policy accepts it.
    let by_sigstore = format!("{}/peer/by-sigstore:1", reg.addr);
    rt.block_on(async {
        let mut client = sigstore_client();
        let image: OciReference = by_sigstore.parse().expect("reference");
        let (sig_image, digest) = client
            .triangulate(&image, &Auth::Anonymous)
            .await
            .expect("triangulate");
        let mut layer = SignatureLayer::new_unsigned(&image, &digest).expect("layer");
        let signer = PrivateKeySigner::new_with_raw(
            zeroize::Zeroizing::new(std::fs::read(&key_path).expect("key")),
            zeroize::Zeroizing::new(PASSWORD.as_bytes().to_vec()),
            &SigningScheme::ECDSA_P256_SHA256_ASN1,
        )
        .expect("sigstore-rs reads vouch's encrypted key");
        signer.add_constraint(&mut layer).expect("sign");
        client
            .push_signature(None, &Auth::Anonymous, &sig_image, vec![layer])
            .await
            .expect("push signature");
    });
    drop(plain);
    let policy = env.path().join("policy.json");
    std::fs::write(
        &policy,
        serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {
                format!("{}/peer", reg.addr): [{"type": "sigstoreSigned", "keyPath": pub_path}]
            }}
        })
        .to_string(),
    )
    .expect("policy");
    let d = env.start_with(&[
        "--tee",
        "sim",
        "--image-policy",
        policy.to_str().expect("utf8"),
    ]);
    let out = d.vouch(&["pull", "--insecure-registry", &by_sigstore]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        d.ok(&["run", "--rm", &by_sigstore, "echo", "peer-signed"])
            .trim(),
        "peer-signed"
    );
}
