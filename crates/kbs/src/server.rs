//! The KBS HTTP server: protocol endpoints, admin endpoints, and the one mapping of errors to
//! HTTP statuses ([`KbsError::status`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use kbs_types::{Attestation, Challenge, Request, Tee};
use serde_json::{json, Value};
use vouch_tee::{verify_evidence, Evidence, TeeType, Verdict, VerifyError, VerifyOptions};

use crate::policy::{self, PolicyError, DEFAULT_POLICY};
use crate::store::{Storage, StoreError, DEFAULT_POLICY_KEY};
use crate::token::{self, Es256, TokenError};
use vouch_kbs_client::jwe;
use vouch_kbs_client::protocol::{valid_segment, PROTOCOL_VERSION, SESSION_COOKIE};

const ERROR_TYPE_BASE: &str = "https://github.com/confidential-containers/kbs/errors/";

#[derive(Debug, thiserror::Error)]
pub enum KbsError {
    #[error("malformed request: {0}")]
    InvalidRequest(String),
    #[error("protocol version {0:?} is not supported (this KBS speaks {PROTOCOL_VERSION})")]
    Version(String),
    #[error("no session: call /kbs/v0/auth first and send the {SESSION_COOKIE} cookie")]
    NoSession,
    #[error("session expired or unknown: start again with /kbs/v0/auth")]
    SessionExpired,
    #[error("this session's nonce was already used; a replayed attestation is refused")]
    NonceUsed,
    #[error("the runtime data carries nonce {found:?}, not this session's challenge")]
    NonceMismatch { found: String },
    #[error("the evidence is bound to other runtime data than this attestation carries")]
    Binding,
    #[error("the session asked for tee {session} but the evidence is {evidence}")]
    TeeMismatch { session: String, evidence: String },
    #[error("evidence verification failed")]
    Evidence(#[source] VerifyError),
    #[error("evidence is not vouch evidence: {0}")]
    EvidenceFormat(String),
    #[error("the session is not attested yet: call /kbs/v0/attest first")]
    NotAttested,
    #[error("attestation token rejected")]
    Token(#[source] TokenError),
    #[error("policy denied access to resource {path}{}", reasons_text(.reasons))]
    PolicyDenied { path: String, reasons: Vec<String> },
    #[error("no such resource: {0}")]
    NotFound(String),
    #[error("admin authentication failed: send a valid admin token as Authorization: Bearer")]
    AdminAuth(#[source] Option<TokenError>),
    #[error("the admin API is disabled on this KBS")]
    AdminDisabled,
    #[error("cannot read the quick-mode secret file")]
    QuickFile(#[source] std::io::Error),
    #[error("resource policy")]
    Policy(#[source] PolicyError),
    #[error("KBS storage")]
    Storage(#[source] StoreError),
    #[error("no such endpoint")]
    NoEndpoint,
    #[error("metrics are off on this KBS (it runs without a metrics token)")]
    MetricsOff,
    #[error("metrics need the metrics token as Authorization: Bearer")]
    MetricsAuth,
    #[error("TEE public key")]
    Key(#[source] jwe::JweError),
    #[error("cannot sign the attestation token")]
    Signing(#[source] TokenError),
    #[error("the request was not received within {0} seconds")]
    RequestTimeout(u64),
    #[error("the request body is over the limit of {0} bytes")]
    TooLarge(usize),
    #[error("the KBS is busy: {0}; try again shortly")]
    Busy(String),
}

impl KbsError {
    /// The one place protocol errors map to HTTP statuses and error types.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            KbsError::InvalidRequest(_) | KbsError::Version(_) | KbsError::Key(_) => {
                (StatusCode::BAD_REQUEST, "InvalidRequest")
            }
            KbsError::Policy(_) => (StatusCode::BAD_REQUEST, "PolicyEngineError"),
            KbsError::NoSession
            | KbsError::SessionExpired
            | KbsError::NotAttested
            | KbsError::Token(_) => (StatusCode::UNAUTHORIZED, "UnAuthenticated"),
            KbsError::NonceUsed
            | KbsError::NonceMismatch { .. }
            | KbsError::Binding
            | KbsError::TeeMismatch { .. }
            | KbsError::Evidence(_)
            | KbsError::EvidenceFormat(_) => (StatusCode::UNAUTHORIZED, "AttestationFailed"),
            KbsError::PolicyDenied { .. } => (StatusCode::UNAUTHORIZED, "PolicyDeny"),
            KbsError::AdminAuth(_) | KbsError::AdminDisabled => {
                (StatusCode::UNAUTHORIZED, "AdminAuthFailed")
            }
            KbsError::QuickFile(_) => (StatusCode::INTERNAL_SERVER_ERROR, "StorageError"),
            KbsError::NotFound(_) => (StatusCode::NOT_FOUND, "ResourceNotFound"),
            KbsError::NoEndpoint | KbsError::MetricsOff => (StatusCode::NOT_FOUND, "NotFound"),
            KbsError::MetricsAuth => (StatusCode::UNAUTHORIZED, "UnAuthenticated"),
            KbsError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "StorageError"),
            KbsError::Signing(_) => (StatusCode::INTERNAL_SERVER_ERROR, "TokenSigningError"),
            KbsError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "RequestTimeout"),
            KbsError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"),
            KbsError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "Busy"),
        }
    }

    fn detail(&self) -> String {
        let line = vouch_base::error_chain(self);
        // The verifier names no flag; this KBS says which of its own would change the answer.
        match self {
            KbsError::Evidence(VerifyError::SimNotAllowed) => {
                format!("{line} (this KBS runs without --allow-sim)")
            }
            KbsError::Evidence(VerifyError::SampleNotAllowed) => {
                format!("{line} (this KBS runs without --allow-sample)")
            }
            KbsError::MetricsOff => format!("{line}: start it with --metrics-token-file"),
            KbsError::AdminDisabled => format!("{line}: start vouch-kbs with --admin-key"),
            _ => line,
        }
    }
}

impl IntoResponse for KbsError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status();
        let detail = self.detail();
        if status.is_server_error() {
            tracing::error!(%detail, "request failed");
        } else {
            tracing::info!(kind, %detail, "request refused");
        }
        (
            status,
            Json(json!({"type": format!("{ERROR_TYPE_BASE}{kind}"), "detail": detail})),
        )
            .into_response()
    }
}

fn reasons_text(reasons: &[String]) -> String {
    if reasons.is_empty() {
        String::new()
    } else {
        format!(": {}", reasons.join("; "))
    }
}

/// Conker's quick mode: one JSON file released only to evidence showing this platform
/// measurement (register 1: RTMR1 on TDX, as Conker uses) running this image.
#[derive(Clone, Debug)]
pub struct QuickMode {
    pub secret_file: std::path::PathBuf,
    /// Lower-case hex of the platform register.
    pub measurement: String,
    /// `sha256:<hex>` of the image (manifest digest, as `vouch image ls` shows).
    pub image: String,
}

/// The resource path quick mode serves.
pub use vouch_kbs_client::QUICK_RESOURCE;

impl QuickMode {
    fn policy(&self) -> String {
        format!(
            r#"package policy

default allow := false

allow if {{
    platform_ok
    input.tee.registers[1] == "{m}"
    input.container.image_digest == "{i}"
}}

platform_ok if input.tee.hardware == true

platform_ok if {{
    input.tee.hardware == false
    input.tee.type == "sim"
    input.kbs.allow_sim == true
}}
"#,
            m = self.measurement,
            i = self.image
        )
    }
}

#[derive(Clone)]
pub struct KbsConfig {
    /// Accept evidence from the sim TEE (development only).
    pub allow_sim: bool,
    /// Accept Confidential Containers' unsigned sample evidence (development only).
    pub allow_sample: bool,
    /// The ASK and ARK (PEM) for SEV-SNP reports whose certificate chain lacks them.
    pub snp_chain: Option<Vec<u8>>,
    pub session_ttl: Duration,
    pub token_ttl: Duration,
    /// Open sessions kept at most; when full, a new session replaces the oldest.
    pub max_sessions: usize,
    /// Owner's Ed25519 public key for admin tokens; `None` disables the admin API.
    pub admin_key: Option<ed25519_dalek::VerifyingKey>,
    /// Conker quick mode, if configured.
    pub quick: Option<QuickMode>,
    /// Trusted TPM attestation keys (`sha256:` fingerprints).
    pub tpm_aks: Vec<String>,
    /// Where collateral for TDX evidence comes from.
    pub collateral: Option<Arc<vouch_tee::tdx::collateral::CollateralStore>>,
    /// CA certificates (DER) trusted to certify TPM attestation keys.
    pub tpm_ak_cas: Vec<Vec<u8>>,
    /// How the server bounds what unauthenticated clients can make it hold.
    pub limits: ServeLimits,
    /// The audience admin tokens must name ([`token::DEFAULT_ADMIN_AUDIENCE`] unless set).
    pub admin_audience: String,
    /// With `allow_sim`: the sim TEE keys (hex) whose evidence is accepted; empty: any.
    pub sim_keys: Vec<String>,
    /// The bearer token a scraper of `/metrics` presents; `None`: `/metrics` is off.
    pub metrics_token: Option<zeroize::Zeroizing<String>>,
}

/// Bounds on what any client, before it has authenticated, can make the KBS hold: time for a
/// whole request, bytes of request bodies, connections.
#[derive(Clone, Debug)]
pub struct ServeLimits {
    /// A request's headers, and then its body, must each arrive within this time; an idle
    /// kept-alive connection is closed after it too.
    pub request_timeout: Duration,
    /// Largest request body.
    pub max_body: usize,
    /// Bytes of request bodies held at once, over all connections; beyond it requests are
    /// answered 503 until others finish.
    pub max_body_in_flight: usize,
    /// Open connections at most, in all and from one peer address; more are closed at once.
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            request_timeout: Duration::from_secs(10),
            max_body: 4 << 20,
            max_body_in_flight: 64 << 20,
            max_connections: 4096,
            max_connections_per_peer: 256,
        }
    }
}

enum SessionState {
    Challenged {
        nonce: String,
    },
    /// The nonce was taken by an attestation that is being verified.
    Verifying,
    /// An attestation failed: the nonce is spent and the session is of no further use.
    Spent,
    /// Claims and TEE key as compact JSON text: a fraction of the memory of a `Value` tree,
    /// which matters with many thousands of open sessions.
    Attested {
        claims: Box<str>,
        tee_pubkey: Box<str>,
    },
}

struct Session {
    tee: Tee,
    state: SessionState,
    expires: Instant,
}

pub struct Kbs {
    cfg: KbsConfig,
    storage: Box<dyn Storage>,
    signer: Es256,
    sessions: Mutex<Sessions>,
    /// Bytes of request bodies being held (see [`ServeLimits::max_body_in_flight`]).
    body_budget: Arc<tokio::sync::Semaphore>,
    metrics: crate::metrics::KbsMetrics,
}

/// Open sessions. Every session lives for the same TTL, so the order in which sessions were
/// opened is also the order in which they expire, and both queues only ever look at their front.
///
/// A full table makes room only by dropping a session that is no further along than a newcomer:
/// one that was challenged and has not sent its attestation, or one whose attestation failed.
/// A session whose attestation is being verified, or that is attested, is never dropped to make
/// room; when only such sessions are left, the newcomer is refused. A flood of `/auth` (with or
/// without failing attestations) can thus never push out a client that is attesting or has
/// attested.
#[derive(Default)]
struct Sessions {
    map: HashMap<String, Session>,
    /// Every session, by expiry.
    order: std::collections::VecDeque<(Instant, String)>,
    /// Sessions that may be dropped to make room, oldest first: challenged ones, and failed ones
    /// (queued again when they fail). Entries whose session has moved on or is gone are skipped
    /// when met.
    challenged: std::collections::VecDeque<String>,
}

impl Sessions {
    /// Drop expired sessions, then, if the table is still full, the oldest session that is only
    /// challenged or has failed. `false` when no such session is left to make room.
    fn make_room(&mut self, now: Instant, max: usize) -> bool {
        while let Some((expires, _)) = self.order.front() {
            if *expires > now {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.map.remove(&id);
            }
        }
        while self.map.len() >= max.max(1) {
            let Some(id) = self.challenged.pop_front() else {
                return false;
            };
            let evictable = matches!(
                self.map.get(&id).map(|s| &s.state),
                Some(SessionState::Challenged { .. } | SessionState::Spent)
            );
            if evictable {
                self.map.remove(&id);
                tracing::debug!("session table full; the oldest challenged session was dropped");
            }
        }
        // Keep the queues from growing beyond the table with entries of sessions that are gone.
        if self.challenged.len() > 2 * max.max(1) {
            let map = &self.map;
            self.challenged.retain(|id| map.contains_key(id));
        }
        if self.order.len() > 2 * max.max(1) {
            let map = &self.map;
            self.order.retain(|(_, id)| map.contains_key(id));
        }
        true
    }
}

fn tee_type(tee: Tee) -> Option<TeeType> {
    match tee {
        Tee::Sample => Some(TeeType::Sim),
        Tee::Tpm => Some(TeeType::Tpm),
        Tee::Tdx => Some(TeeType::Tdx),
        Tee::Snp => Some(TeeType::Snp),
        _ => None,
    }
}

/// Validate `repo/type/tag` segments: no separators, no dot-only names.
pub(crate) fn check_segment(s: &str) -> Result<(), KbsError> {
    if valid_segment(s) {
        Ok(())
    } else {
        Err(KbsError::InvalidRequest(format!(
            "resource path segment {s:?} must be letters, digits, '-', '_' or '.'"
        )))
    }
}

/// What the policy sees of verified evidence. `container` is the container the evidence names
/// as its requester (bound by the quote, resolved against the log), with its own records; when
/// the evidence names none, it is null: never "whichever container the log launched last".
/// The evidence's format (`tee.format`: vouch's or Confidential Containers'), the init-data
/// CoCo evidence binds, and the events of other writers in its runtime log (`log.events`) are
/// there too; `tee.warnings` says what a development TEE's evidence does not prove.
fn claims_of(v: &Verdict) -> Value {
    json!({
        "tee": {"type": v.tee, "format": v.format, "hardware": v.hardware, "signer": v.signer,
                "registers": v.registers, "platform": v.platform, "init_data": v.init_data,
                "warnings": v.warnings},
        "log": {"records": v.records, "containers": v.containers, "events": v.events},
        "container": v.requester,
    })
}

impl Kbs {
    pub fn new(cfg: KbsConfig, storage: Box<dyn Storage>, signer: Es256) -> Self {
        let budget = cfg
            .limits
            .max_body_in_flight
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        Kbs {
            cfg,
            storage,
            signer,
            sessions: Mutex::new(Sessions::default()),
            body_budget: Arc::new(tokio::sync::Semaphore::new(budget)),
            metrics: Default::default(),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `POST /kbs/v0/auth`: a new session with a fresh single-use nonce.
    pub fn auth(&self, req: Request) -> Result<(String, Challenge), KbsError> {
        if req.version != PROTOCOL_VERSION {
            return Err(KbsError::Version(req.version));
        }
        if tee_type(req.tee).is_none() && !matches!(req.tee, Tee::AzSnpVtpm | Tee::AzTdxVtpm) {
            return Err(KbsError::InvalidRequest(format!(
                "tee {} is not supported (sample, tpm, tdx, snp, az-snp-vtpm, az-tdx-vtpm)",
                req.tee
            )));
        }
        // The nonce and the session id, from one read of the OS CSPRNG.
        let mut random = zeroize::Zeroizing::new([0u8; 64]);
        getrandom::fill(random.as_mut_slice()).map_err(|_| KbsError::Key(jwe::JweError::Random))?;
        let nonce = base64::engine::general_purpose::STANDARD.encode(&random[..32]);
        let id = hex::encode(&random[32..]);
        let mut sessions = self.sessions();
        let now = Instant::now();
        if !sessions.make_room(now, self.cfg.max_sessions) {
            return Err(KbsError::Busy(format!(
                "all {} sessions are attesting or attested",
                self.cfg.max_sessions
            )));
        }
        let expires = now + self.cfg.session_ttl;
        sessions.order.push_back((expires, id.clone()));
        sessions.challenged.push_back(id.clone());
        sessions.map.insert(
            id.clone(),
            Session {
                tee: req.tee,
                state: SessionState::Challenged {
                    nonce: nonce.clone(),
                },
                expires,
            },
        );
        Ok((
            id,
            Challenge {
                nonce,
                // vouch-kbs names itself, so vouchd presents vouch's evidence (which binds the
                // requesting container); CoCo's clients ignore the key.
                extra_params: json!({vouch_kbs_client::client::VOUCH_KBS_MARK: {"evidence": ["vouch", "coco"]}}),
            },
        ))
    }

    /// `POST /kbs/v0/attest`: verify evidence for the session's challenge; returns a token.
    pub fn attest(&self, session_id: &str, att: Attestation) -> Result<String, KbsError> {
        // Take the nonce out first: whatever happens next, it is never usable again.
        let (tee, nonce) = {
            let mut sessions = self.sessions();
            let s = sessions
                .map
                .get_mut(session_id)
                .ok_or(KbsError::SessionExpired)?;
            if s.expires <= Instant::now() {
                sessions.map.remove(session_id);
                return Err(KbsError::SessionExpired);
            }
            match std::mem::replace(&mut s.state, SessionState::Verifying) {
                SessionState::Challenged { nonce } => (s.tee, nonce),
                other => {
                    s.state = other;
                    return Err(KbsError::NonceUsed);
                }
            }
        };
        let verified = self.verify_attestation(tee, &nonce, att);
        let mut sessions = self.sessions();
        let Some(s) = sessions.map.get_mut(session_id) else {
            return verified.map(|(token, ..)| token);
        };
        match verified {
            Ok((token, claims, tee_pubkey)) => {
                s.state = SessionState::Attested { claims, tee_pubkey };
                Ok(token)
            }
            Err(e) => {
                // Spent: a replay is refused as such, and the session may make room.
                s.state = SessionState::Spent;
                sessions.challenged.push_back(session_id.to_string());
                Err(e)
            }
        }
    }

    /// Check an attestation for the session's `nonce` and `tee`: the token, and the claims and
    /// TEE key to keep with the session (compact JSON).
    fn verify_attestation(
        &self,
        tee: Tee,
        nonce: &str,
        att: Attestation,
    ) -> Result<(String, Box<str>, Box<str>), KbsError> {
        if att.runtime_data.nonce != nonce {
            return Err(KbsError::NonceMismatch {
                found: att.runtime_data.nonce,
            });
        }
        let tee_pubkey = serde_json::to_value(&att.runtime_data.tee_pubkey)
            .map_err(|e| KbsError::InvalidRequest(e.to_string()))?;
        jwe::parse_jwk(&tee_pubkey).map_err(KbsError::Key)?;
        let primary = att.tee_evidence.primary_evidence;
        // vouch's evidence names its format version; of CoCo's formats only Azure's vTPM ones
        // have the key, and their sessions (az-snp-vtpm, az-tdx-vtpm) are CoCo's alone.
        let vouch_form = tee_type(tee).is_some() && primary.get("version").is_some();
        let verdict = if vouch_form {
            if att.init_data.is_some() {
                return Err(KbsError::EvidenceFormat(
                    "init-data comes with Confidential Containers' evidence, which binds it; vouch's evidence does not".into(),
                ));
            }
            self.verify_vouch(tee, &att.runtime_data.nonce, &tee_pubkey, primary)?
        } else {
            self.verify_coco(
                tee,
                &att.runtime_data.nonce,
                &tee_pubkey,
                &att.tee_evidence.additional_evidence,
                att.init_data.as_ref(),
                &primary,
            )?
        };
        let claims = claims_of(&verdict);
        let now = vouch_base::clock::unix_secs();
        let token = self
            .signer
            .sign(&json!({
                "iss": "vouch-kbs",
                "iat": now,
                "exp": now + self.cfg.token_ttl.as_secs(),
                "eat_profile": "tag:github.com,2023:veraison/ear",
                "ear.verifier-id": {"developer": "vouch", "build": env!("CARGO_PKG_VERSION")},
                "submods": {"cpu0": {
                    "ear.status": if verdict.hardware { "affirming" } else { "warning" },
                    "ear.veraison.annotated-evidence": claims,
                }},
                "tee-pubkey": tee_pubkey,
            }))
            .map_err(KbsError::Signing)?;
        // Once per attestation, at info: a development KBS's start-up warns that unsigned sample
        // evidence is let in; the line says whose form it was and whether it is hardware.
        tracing::info!(tee = %verdict.tee, format = ?verdict.format, hardware = verdict.hardware, containers = verdict.containers.len(), "attestation verified");
        Ok((
            token,
            claims.to_string().into(),
            tee_pubkey.to_string().into(),
        ))
    }

    fn verify_options(&self) -> VerifyOptions {
        VerifyOptions {
            allow_sim: self.cfg.allow_sim,
            allow_sample: self.cfg.allow_sample,
            sim_keys: self.cfg.sim_keys.clone(),
            #[cfg(feature = "tpm")]
            tpm_aks: self.cfg.tpm_aks.clone(),
            collateral: self.cfg.collateral.clone(),
            #[cfg(feature = "tpm")]
            tpm_ak_cas: self.cfg.tpm_ak_cas.clone(),
            snp_chain: self.cfg.snp_chain.clone(),
            ..Default::default()
        }
    }

    /// vouch's own evidence, of the session's TEE, bound to `{nonce, tee-pubkey}` (and the
    /// requester it names).
    fn verify_vouch(
        &self,
        tee: Tee,
        nonce: &str,
        tee_pubkey: &Value,
        primary: Value,
    ) -> Result<Verdict, KbsError> {
        let evidence: Evidence =
            serde_json::from_value(primary).map_err(|e| KbsError::EvidenceFormat(e.to_string()))?;
        let expected_tee =
            tee_type(tee).ok_or_else(|| KbsError::InvalidRequest("unsupported tee".into()))?;
        if evidence.tee != expected_tee {
            return Err(KbsError::TeeMismatch {
                session: expected_tee.to_string(),
                evidence: evidence.tee.to_string(),
            });
        }
        // The quote must bind exactly this runtime data: {nonce, tee-pubkey}, and, for evidence
        // fetched on behalf of one container, the requester it names (checked against the log
        // when the evidence is verified).
        let mut runtime = json!({"nonce": nonce, "tee-pubkey": tee_pubkey});
        if let Some(requester) = evidence.runtime_data.get(vouch_tee::REQUESTER_KEY) {
            runtime[vouch_tee::REQUESTER_KEY] = requester.clone();
        }
        let canon = |v: &Value| {
            vouch_measure::canonicalize(v).map_err(|e| KbsError::InvalidRequest(e.to_string()))
        };
        if canon(&evidence.runtime_data)? != canon(&runtime)? {
            return Err(KbsError::Binding);
        }
        verify_evidence(&evidence, &self.verify_options()).map_err(KbsError::Evidence)
    }

    /// Confidential Containers' evidence for the session's TEE, bound as CoCo binds it:
    /// `{additional-evidence, nonce, tee-pubkey}`, and the init-data when the client sent it.
    fn verify_coco(
        &self,
        tee: Tee,
        nonce: &str,
        tee_pubkey: &Value,
        additional_evidence: &str,
        init_data: Option<&kbs_types::InitData>,
        primary: &Value,
    ) -> Result<Verdict, KbsError> {
        let coco_tee = match tee {
            Tee::Sample => vouch_tee::coco::CocoTee::Sample,
            Tee::Tdx => vouch_tee::coco::CocoTee::Tdx,
            Tee::Tpm => vouch_tee::coco::CocoTee::Tpm,
            Tee::Snp => vouch_tee::coco::CocoTee::Snp,
            Tee::AzSnpVtpm => vouch_tee::coco::CocoTee::AzSnpVtpm,
            Tee::AzTdxVtpm => vouch_tee::coco::CocoTee::AzTdxVtpm,
            other => {
                return Err(KbsError::EvidenceFormat(format!(
                    "Confidential Containers' {other} evidence is not supported (sample, tdx, tpm, snp, az-snp-vtpm and az-tdx-vtpm are)"
                )))
            }
        };
        if !additional_evidence.is_empty() {
            return Err(KbsError::EvidenceFormat(
                "additional (device) evidence is not supported: send the TEE's evidence alone"
                    .into(),
            ));
        }
        let init = init_data
            .map(|d| vouch_tee::coco::init_data_digest(&d.format, &d.body))
            .transpose()
            .map_err(|e| KbsError::InvalidRequest(e.to_string()))?;
        let runtime = vouch_tee::coco::runtime_data(nonce, tee_pubkey, additional_evidence);
        vouch_tee::coco::verify_coco(
            coco_tee,
            primary,
            &runtime,
            init.as_ref(),
            &self.verify_options(),
        )
        .map_err(KbsError::Evidence)
    }

    /// Claims and TEE key of an attested session or a bearer token.
    fn attested(
        &self,
        session_id: Option<&str>,
        bearer: Option<&str>,
    ) -> Result<(Value, Value), KbsError> {
        if let Some(t) = bearer {
            let claims = Es256::verify(self.signer.public_key(), t).map_err(KbsError::Token)?;
            let evidence = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"].clone();
            return Ok((evidence, claims["tee-pubkey"].clone()));
        }
        let id = session_id.ok_or(KbsError::NoSession)?;
        let (claims, tee_pubkey) = {
            let sessions = self.sessions();
            let s = sessions.map.get(id).ok_or(KbsError::SessionExpired)?;
            if s.expires <= Instant::now() {
                return Err(KbsError::SessionExpired);
            }
            match &s.state {
                SessionState::Attested { claims, tee_pubkey } => {
                    (claims.clone(), tee_pubkey.clone())
                }
                SessionState::Challenged { .. } | SessionState::Verifying | SessionState::Spent => {
                    return Err(KbsError::NotAttested)
                }
            }
        };
        // Parsed outside the lock that every request takes.
        let parse = |text: &str| {
            serde_json::from_str(text)
                .map_err(|e| KbsError::InvalidRequest(format!("session state: {e}")))
        };
        Ok((parse(&claims)?, parse(&tee_pubkey)?))
    }

    /// `GET /kbs/v0/resource/{repo}/{type}/{tag}`: policy decision, then the resource as JWE.
    pub fn resource(
        &self,
        session_id: Option<&str>,
        bearer: Option<&str>,
        repo: &str,
        kind: &str,
        tag: &str,
    ) -> Result<jwe::Jwe, KbsError> {
        for s in [repo, kind, tag] {
            check_segment(s)?;
        }
        let path = format!("{repo}/{kind}/{tag}");
        let (claims, tee_pubkey) = self.attested(session_id, bearer)?;
        let reference: Value = match self.storage.get_reference().map_err(KbsError::Storage)? {
            Some(text) => serde_json::from_str(&text).unwrap_or(json!({})),
            None => json!({}),
        };
        let mut input = claims;
        input["resource"] = json!({"repo": repo, "type": kind, "tag": tag, "path": path});
        input["reference"] = reference;
        input["kbs"] =
            json!({"allow_sim": self.cfg.allow_sim, "allow_sample": self.cfg.allow_sample});
        let quick = self.cfg.quick.as_ref().filter(|_| path == QUICK_RESOURCE);
        let policy = match quick {
            Some(q) => q.policy(),
            None => match self.storage.get_policy(&path).map_err(KbsError::Storage)? {
                Some(p) => p,
                None => self
                    .storage
                    .get_policy(DEFAULT_POLICY_KEY)
                    .map_err(KbsError::Storage)?
                    .unwrap_or_else(|| DEFAULT_POLICY.to_string()),
            },
        };
        // Fail closed: a policy that cannot be evaluated denies.
        let input = regorus::Value::from(input);
        let allowed = policy::evaluate_value(&policy, input.clone()).unwrap_or_else(|e| {
            tracing::warn!(resource = %path, error = %e, "policy evaluation failed; denying");
            false
        });
        if !allowed {
            let reasons = policy::explain(&policy, input);
            return Err(KbsError::PolicyDenied { path, reasons });
        }
        let value = match quick {
            // Read on every request, so an edited file takes effect at once.
            Some(q) => {
                zeroize::Zeroizing::new(std::fs::read(&q.secret_file).map_err(KbsError::QuickFile)?)
            }
            None => self
                .storage
                .get_resource(&path)
                .map_err(KbsError::Storage)?
                .ok_or_else(|| KbsError::NotFound(path.clone()))?,
        };
        let key = jwe::parse_jwk(&tee_pubkey).map_err(KbsError::Key)?;
        let out = jwe::encrypt(&key, &value).map_err(KbsError::Key)?;
        tracing::info!(resource = %path, "resource released");
        Ok(out)
    }

    fn admin(&self, headers: &HeaderMap) -> Result<(), KbsError> {
        let key = self.cfg.admin_key.as_ref().ok_or(KbsError::AdminDisabled)?;
        let token = bearer(headers).ok_or(KbsError::AdminAuth(None))?;
        token::verify_admin(key, token, &self.cfg.admin_audience)
            .map_err(|e| KbsError::AdminAuth(Some(e)))?;
        Ok(())
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for part in text.split(';') {
            if let Some(v) = part.trim().strip_prefix(&format!("{SESSION_COOKIE}=")) {
                return Some(v.to_string());
            }
        }
    }
    None
}

/// A request body: JSON with no key twice in any object (evidence inside it is hashed and
/// signed; two readers must not see two documents in it).
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, KbsError> {
    vouch_measure::check_unique_keys(body).map_err(|e| KbsError::InvalidRequest(e.to_string()))?;
    serde_json::from_slice(body).map_err(|e| KbsError::InvalidRequest(e.to_string()))
}

type Shared = Arc<Kbs>;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KbsError> + Send + 'static,
) -> Result<T, KbsError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KbsError::InvalidRequest(format!("internal task failed: {e}")))?
}

/// Count a request's outcome: `ok` when it succeeded, else the error's kind.
fn outcome<T>(
    counter: &vouch_base::metrics::Counter,
    ok: &str,
    r: Result<T, KbsError>,
) -> Result<T, KbsError> {
    match &r {
        Ok(_) => counter.inc(ok),
        Err(e) => counter.inc(e.status().1),
    }
    r
}

async fn metrics_handler(State(k): State<Shared>, headers: HeaderMap) -> Response {
    let Some(expected) = &k.cfg.metrics_token else {
        return KbsError::MetricsOff.into_response();
    };
    if !bearer(&headers).is_some_and(|t| crate::metrics::token_matches(expected, t)) {
        return KbsError::MetricsAuth.into_response();
    }
    let sessions = k.sessions().map.len();
    (
        [(header::CONTENT_TYPE, vouch_base::metrics::CONTENT_TYPE)],
        k.metrics.render(sessions),
    )
        .into_response()
}

async fn auth_handler(State(k): State<Shared>, body: Bytes) -> Result<Response, KbsError> {
    let req: Request = parse(&body)?;
    let ttl = k.cfg.session_ttl.as_secs();
    let (id, challenge) = outcome(&k.metrics.auth, "challenged", k.auth(req))?;
    let cookie = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={id}; Path=/kbs; Max-Age={ttl}; HttpOnly"
    ))
    .map_err(|e| KbsError::InvalidRequest(e.to_string()))?;
    Ok(([(header::SET_COOKIE, cookie)], Json(challenge)).into_response())
}

async fn attest_handler(
    State(k): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, KbsError> {
    let session = session_cookie(&headers).ok_or(KbsError::NoSession)?;
    let att: Attestation = parse(&body)?;
    // Sim evidence is a fraction of a millisecond of pure computation: done on the worker,
    // which costs less than a hand-off to the blocking pool. Hardware evidence takes longer
    // and may need collateral fetched from a PCCS: the blocking pool.
    let sim = att
        .tee_evidence
        .primary_evidence
        .get("tee")
        .and_then(Value::as_str)
        == Some("sim");
    let started = std::time::Instant::now();
    let token = if sim {
        k.attest(&session, att)
    } else {
        let kbs = Arc::clone(&k);
        blocking(move || kbs.attest(&session, att)).await
    };
    k.metrics.attestation.observe(started.elapsed());
    let token = outcome(&k.metrics.attest, "attested", token)?;
    Ok(Json(json!({"token": token})).into_response())
}

async fn resource_handler(
    State(k): State<Shared>,
    headers: HeaderMap,
    Path((repo, kind, tag)): Path<(String, String, String)>,
) -> Result<Response, KbsError> {
    let session = session_cookie(&headers);
    let bearer = bearer(&headers).map(str::to_string);
    let jwe = if k.storage.is_local() {
        k.resource(session.as_deref(), bearer.as_deref(), &repo, &kind, &tag)
    } else {
        let kbs = Arc::clone(&k);
        blocking(move || kbs.resource(session.as_deref(), bearer.as_deref(), &repo, &kind, &tag))
            .await
    };
    let jwe = outcome(&k.metrics.round_trips, "released", jwe)?;
    Ok(Json(jwe).into_response())
}

async fn set_resource(
    State(k): State<Shared>,
    headers: HeaderMap,
    Path((repo, kind, tag)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, KbsError> {
    k.admin(&headers)?;
    for s in [&repo, &kind, &tag] {
        check_segment(s)?;
    }
    let path = format!("{repo}/{kind}/{tag}");
    k.storage
        .put_resource(&path, &body)
        .map_err(KbsError::Storage)?;
    tracing::info!(resource = %path, bytes = body.len(), "resource stored");
    Ok(StatusCode::OK.into_response())
}

async fn delete_resource(
    State(k): State<Shared>,
    headers: HeaderMap,
    Path((repo, kind, tag)): Path<(String, String, String)>,
) -> Result<Response, KbsError> {
    k.admin(&headers)?;
    let path = format!("{repo}/{kind}/{tag}");
    if k.storage
        .delete_resource(&path)
        .map_err(KbsError::Storage)?
    {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(KbsError::NotFound(path))
    }
}

/// Body: `{"policy": base64url(rego)}` (as Trustee), optional `"resource": "repo/type/tag"`.
async fn set_policy(
    State(k): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, KbsError> {
    k.admin(&headers)?;
    let req: Value = parse(&body)?;
    let encoded = req
        .get("policy")
        .and_then(Value::as_str)
        .ok_or_else(|| KbsError::InvalidRequest("missing \"policy\"".into()))?;
    let rego = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            KbsError::InvalidRequest("\"policy\" must be base64url of UTF-8 Rego".into())
        })?;
    policy::validate(&rego).map_err(KbsError::Policy)?;
    let key = match req.get("resource").and_then(Value::as_str) {
        Some(path) => {
            let parts: Vec<&str> = path.split('/').collect();
            if parts.len() != 3 {
                return Err(KbsError::InvalidRequest(format!(
                    "resource {path:?} must be repo/type/tag"
                )));
            }
            for s in &parts {
                check_segment(s)?;
            }
            path.to_string()
        }
        None => DEFAULT_POLICY_KEY.to_string(),
    };
    k.storage
        .put_policy(&key, &rego)
        .map_err(KbsError::Storage)?;
    tracing::info!(policy = %key, "policy stored");
    Ok(StatusCode::OK.into_response())
}

/// Trustee's attestation policy has no counterpart here: the evidence is judged by vouch's
/// verifiers, and what they find by the one resource policy. Said so, to an owner only.
async fn set_attestation_policy(
    State(k): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, KbsError> {
    k.admin(&headers)?;
    Err(KbsError::InvalidRequest(
        "vouch-kbs has no attestation policy: its verifiers check the evidence, and the resource policy (POST /kbs/v0/resource-policy) decides on their claims; put the rules there".into(),
    ))
}

/// Body: a JSON object of reference values, e.g. `{"images": ["sha256:..."]}`.
async fn set_reference(
    State(k): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, KbsError> {
    k.admin(&headers)?;
    let v: Value = parse(&body)?;
    if !v.is_object() {
        return Err(KbsError::InvalidRequest(
            "reference values must be a JSON object".into(),
        ));
    }
    k.storage
        .put_reference(&v.to_string())
        .map_err(KbsError::Storage)?;
    Ok(StatusCode::OK.into_response())
}

pub fn router(kbs: Shared) -> Router {
    Router::new()
        .route("/kbs/v0/auth", post(auth_handler))
        .route("/kbs/v0/attest", post(attest_handler))
        .route(
            "/kbs/v0/resource/{repo}/{type}/{tag}",
            get(resource_handler)
                .post(set_resource)
                .delete(delete_resource),
        )
        .route("/kbs/v0/resource-policy", post(set_policy))
        .route("/kbs/v0/attestation-policy", post(set_attestation_policy))
        .route("/kbs/v0/reference-values", post(set_reference))
        .route("/metrics", get(metrics_handler))
        .fallback(|| async { KbsError::NoEndpoint })
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            kbs.clone(),
            bounded_body,
        ))
        .with_state(kbs)
}

/// Read a request's whole body before any handler sees it: within the request timeout (counted
/// from the end of its headers), within the size limit, and holding its bytes against the KBS's
/// in-flight budget until the answer is made. A client that trickles its body is answered 408
/// and its connection closed; one that sends too much, 413; when bodies in flight are over the
/// budget, 503.
async fn bounded_body(
    State(k): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limits = &k.cfg.limits;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return KbsError::TooLarge(limits.max_body).into_response();
    }
    let (parts, mut body) = req.into_parts();
    let busy = || KbsError::Busy("too many request bodies in flight".into());
    // A declared length is held against the budget before a byte is read, and the buffer is
    // allocated once; a body without one is held frame by frame.
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut buf = Vec::new();
    if let Some(n) = declared.filter(|n| *n > 0) {
        match k.body_budget.clone().try_acquire_many_owned(n as u32) {
            Ok(p) => held = Some(p),
            Err(_) => return busy().into_response(),
        }
        buf.reserve_exact(n as usize);
    }
    let read = async {
        use http_body_util::BodyExt as _;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| KbsError::InvalidRequest(format!("body: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buf.len() + data.len() > limits.max_body {
                return Err(KbsError::TooLarge(limits.max_body));
            }
            if declared.is_none() {
                let n =
                    u32::try_from(data.len()).map_err(|_| KbsError::TooLarge(limits.max_body))?;
                let permit = k
                    .body_budget
                    .clone()
                    .try_acquire_many_owned(n)
                    .map_err(|_| busy())?;
                match &mut held {
                    Some(all) => all.merge(permit),
                    None => held = Some(permit),
                }
            }
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(limits.request_timeout, read).await {
        Err(_) => KbsError::RequestTimeout(limits.request_timeout.as_secs()).into_response(),
        Ok(Err(e)) => e.into_response(),
        Ok(Ok(())) => {
            let response = next
                .run(axum::extract::Request::from_parts(
                    parts,
                    axum::body::Body::from(buf),
                ))
                .await;
            drop(held);
            response
        }
    }
}

/// How long connections in progress get to finish once shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest request head (request line and headers).
const MAX_HEAD: usize = 64 << 10;

/// Open connections, in all and per peer address.
#[derive(Default)]
struct Connections {
    total: usize,
    per_peer: HashMap<std::net::IpAddr, usize>,
}

/// One admitted connection; gives its place back when dropped.
struct Admitted {
    table: Arc<Mutex<Connections>>,
    peer: std::net::IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                t.per_peer.remove(&self.peer);
            }
        }
    }
}

fn admit(
    table: &Arc<Mutex<Connections>>,
    peer: std::net::IpAddr,
    limits: &ServeLimits,
) -> Option<Admitted> {
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    let from_peer = t.per_peer.get(&peer).copied().unwrap_or(0);
    if t.total >= limits.max_connections || from_peer >= limits.max_connections_per_peer {
        return None;
    }
    t.total += 1;
    *t.per_peer.entry(peer).or_default() += 1;
    Some(Admitted {
        table: table.clone(),
        peer,
    })
}

/// Serve the KBS on `listener` until `shutdown` completes. HTTP/1.1 with keep-alive and
/// pipelining, no Nagle delay (answers to pipelined requests are not held back), and bounds on
/// what a client can make it hold ([`ServeLimits`]): the request head and then the body must
/// each arrive within the request timeout (an idle kept-alive connection is closed after it),
/// heads are at most 64 KiB, bodies at most `max_body`, and connections beyond the total or
/// per-peer limit are closed at once.
///
/// With `tls`, every connection is TLS (`kbss://`); the handshake must end within the request
/// timeout.
pub async fn serve(
    listener: tokio::net::TcpListener,
    kbs: Shared,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let limits = kbs.cfg.limits.clone();
    let app = router(kbs);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .max_buf_size(MAX_HEAD)
        .pipeline_flush(true);
    let connections = Arc::new(Mutex::new(Connections::default()));
    let mut refused_logged = Instant::now() - Duration::from_secs(60);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(admitted) = admit(&connections, peer.ip(), &limits) else {
            // Closed at once; logged at most once a minute, so a flood does not flood the log.
            if refused_logged.elapsed() > Duration::from_secs(60) {
                refused_logged = Instant::now();
                tracing::warn!(peer = %peer.ip(), "connection limit reached; closing new connections");
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let (watcher, http, tls) = (graceful.watcher(), http.clone(), tls.clone());
        let handshake_timeout = limits.request_timeout;
        tokio::spawn(async move {
            let _admitted = admitted;
            let served = match tls {
                None => {
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    watcher.watch(http.serve_connection(io, service)).await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake timed out");
                                return;
                            }
                        };
                    let io = hyper_util::rt::TokioIo::new(stream);
                    watcher.watch(http.serve_connection(io, service)).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kbs(max_sessions: usize, session_ttl: Duration) -> (tempfile::TempDir, Kbs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = crate::store::RedbStorage::open(&dir.path().join("kbs.redb")).expect("db");
        let cfg = KbsConfig {
            allow_sim: true,
            allow_sample: false,
            snp_chain: None,
            session_ttl,
            token_ttl: Duration::from_secs(60),
            max_sessions,
            admin_key: None,
            quick: None,
            tpm_aks: Vec::new(),
            collateral: None,
            tpm_ak_cas: Vec::new(),
            limits: ServeLimits::default(),
            admin_audience: token::DEFAULT_ADMIN_AUDIENCE.into(),
            sim_keys: Vec::new(),
            metrics_token: None,
        };
        let signer = Es256::from_scalar(&[7u8; 32]).expect("key");
        (dir, Kbs::new(cfg, Box::new(storage), signer))
    }

    fn open_session(k: &Kbs) -> String {
        let req: Request = serde_json::from_value(
            json!({"version": PROTOCOL_VERSION, "tee": "sample", "extra-params": {}}),
        )
        .expect("request");
        k.auth(req).expect("auth").0
    }

    /// A full table makes room by dropping the oldest sessions; the newest stay usable.
    #[test]
    fn full_session_table_drops_the_oldest() {
        let (_dir, k) = kbs(3, Duration::from_secs(60));
        let ids: Vec<String> = (0..5).map(|_| open_session(&k)).collect();
        let sessions = k.sessions();
        assert_eq!(sessions.map.len(), 3);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(sessions.map.contains_key(id), i >= 2, "session {i}");
        }
        // The queues hold entries of dropped sessions only until they are met, and never more
        // than twice the table.
        drop(sessions);
        for _ in 0..100 {
            open_session(&k);
        }
        let sessions = k.sessions();
        assert_eq!(sessions.map.len(), 3);
        assert!(sessions.order.len() <= 6 && sessions.challenged.len() <= 6);
    }

    /// A flood of /auth makes room only among sessions that are merely challenged: a session
    /// whose attestation is being verified, or that is attested, stays; with only such
    /// sessions left, newcomers are refused (503), and nobody is dropped.
    #[test]
    fn a_flood_of_auth_never_drops_attesting_or_attested_sessions() {
        let (_dir, k) = kbs(4, Duration::from_secs(60));
        let attested = open_session(&k);
        let verifying = open_session(&k);
        {
            let mut sessions = k.sessions();
            sessions.map.get_mut(&attested).expect("s").state = SessionState::Attested {
                claims: "{}".into(),
                tee_pubkey: "{}".into(),
            };
            sessions.map.get_mut(&verifying).expect("s").state = SessionState::Verifying;
        }
        for _ in 0..100 {
            open_session(&k);
        }
        {
            let sessions = k.sessions();
            assert_eq!(sessions.map.len(), 4);
            assert!(
                sessions.map.contains_key(&attested),
                "attested session dropped"
            );
            assert!(
                sessions.map.contains_key(&verifying),
                "verifying session dropped"
            );
            assert!(sessions.challenged.len() <= 8 && sessions.order.len() <= 8);
        }
        assert!(k.attested(Some(&attested), None).is_ok());
        // Every slot attesting or attested: the newcomer is refused, nobody is dropped.
        {
            let mut sessions = k.sessions();
            for s in sessions.map.values_mut() {
                s.state = SessionState::Attested {
                    claims: "{}".into(),
                    tee_pubkey: "{}".into(),
                };
            }
        }
        let req: Request = serde_json::from_value(
            json!({"version": PROTOCOL_VERSION, "tee": "sample", "extra-params": {}}),
        )
        .expect("request");
        let err = k
            .auth(req)
            .expect_err("room made by dropping an attested session");
        assert!(matches!(err, KbsError::Busy(_)), "{err}");
        assert_eq!(err.status().0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(k.sessions().map.len(), 4);
    }

    /// Sessions whose attestation failed are spent: a replay on them is refused as such, and a
    /// flood of auth with failing attestations can always make room among them (a newcomer is
    /// never refused because of them), while an attested session stays.
    #[test]
    fn failed_attestations_leave_sessions_that_make_room() {
        let (_dir, k) = kbs(4, Duration::from_secs(60));
        let attested = open_session(&k);
        k.sessions().map.get_mut(&attested).expect("s").state = SessionState::Attested {
            claims: "{}".into(),
            tee_pubkey: "{}".into(),
        };
        let key = jwe::generate_key().expect("key");
        let wrong: Attestation = serde_json::from_value(json!({
            "runtime-data": {"nonce": "not-the-nonce", "tee-pubkey": jwe::public_jwk(&key.public_key())},
            "tee-evidence": {"primary_evidence": {}, "additional_evidence": ""}
        }))
        .expect("attestation");
        for _ in 0..50 {
            let s = open_session(&k);
            let err = k
                .attest(&s, wrong.clone())
                .expect_err("wrong nonce accepted");
            assert!(matches!(err, KbsError::NonceMismatch { .. }), "{err}");
            let err = k.attest(&s, wrong.clone()).expect_err("replay accepted");
            assert!(matches!(err, KbsError::NonceUsed), "{err}");
        }
        let sessions = k.sessions();
        assert_eq!(sessions.map.len(), 4);
        assert!(
            sessions.map.contains_key(&attested),
            "attested session dropped"
        );
        // Compacted to the live sessions when over twice the table, before each new session.
        assert!(sessions.challenged.len() <= 2 * 4 + 2 && sessions.order.len() <= 2 * 4 + 1);
    }

    /// Expired sessions are dropped when new ones open, and refused before that.
    #[test]
    fn expired_sessions_are_dropped() {
        let (_dir, k) = kbs(100, Duration::from_millis(50));
        let old = open_session(&k);
        std::thread::sleep(Duration::from_millis(80));
        let err = k.attested(Some(&old), None).expect_err("expired");
        assert!(matches!(err, KbsError::SessionExpired), "{err}");
        let new = open_session(&k);
        let sessions = k.sessions();
        assert!(!sessions.map.contains_key(&old));
        assert!(sessions.map.contains_key(&new));
        assert_eq!(sessions.order.len(), 1);
    }
}
