//! The TEE side of the KBS protocol, used by vouchd to fetch a container's declared secrets,
//! and the admin side, used by `vouch-kbs` and tests.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustls::pki_types::ServerName;

use kbs_types::Tee;
use serde_json::{json, Value};
use vouch_api::client::{ClientError, Connection, FullResponse};
use zeroize::Zeroizing;

use crate::jwe::{self, Jwe};
use crate::protocol::{valid_segment, PROTOCOL_VERSION, SESSION_COOKIE};

const MAX_RESPONSE: u64 = 8 << 20;

type Conn = Connection<KbsStream>;

/// How `kbss://` KBSs prove who they are: a certificate for their host name that chains to the
/// CAs given or, with none given, to the system's roots.
#[derive(Clone, Default)]
pub struct KbsTrust {
    cas: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for KbsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.cas.is_some() {
            "KbsTrust(given CAs)"
        } else {
            "KbsTrust(system roots)"
        })
    }
}

impl KbsTrust {
    /// Trust only the CA certificates (PEM) in these files; none: the system's roots.
    pub fn from_ca_files(paths: &[PathBuf]) -> Result<Self, KbsClientError> {
        if paths.is_empty() {
            return Ok(KbsTrust::default());
        }
        let mut roots = rustls::RootCertStore::empty();
        for path in paths {
            let bad = |reason: String| {
                KbsClientError::TlsConfig(format!("KBS CA {}: {reason}", path.display()))
            };
            for cert in crate::tls::certificates(path).map_err(bad)? {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
        }
        Ok(KbsTrust {
            cas: Some(Arc::new(
                crate::tls::client_config(roots).map_err(KbsClientError::TlsConfig)?,
            )),
        })
    }

    fn config(&self) -> Result<Arc<rustls::ClientConfig>, KbsClientError> {
        if let Some(c) = &self.cas {
            return Ok(c.clone());
        }
        static SYSTEM: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err("the system has no CA certificates; give the KBS's CA".into());
                }
                crate::tls::client_config(roots).map(Arc::new)
            })
            .clone()
            .map_err(KbsClientError::TlsConfig)
    }
}

/// A connection to a KBS: plain TCP (`kbs://`) or TLS (`kbss://`), with a deadline for the round
/// trip in progress: each read and write may take the per-operation timeout at most, and none
/// may go past the deadline, so a KBS that answers a byte at a time cannot hold a fetch longer.
pub(crate) struct KbsStream {
    kind: StreamKind,
    /// The socket itself, to change its timeouts and to shut it down on an interrupt.
    tcp: TcpStream,
    per_op: Duration,
    deadline: Option<std::time::Instant>,
    /// Whether the socket's timeouts were lowered for the deadline (and must be restored).
    lowered: bool,
}

enum StreamKind {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl KbsStream {
    /// Until `deadline`, reads and writes proceed; after it they fail with `TimedOut`.
    pub(crate) fn set_deadline(&mut self, deadline: Option<std::time::Instant>) {
        self.deadline = deadline;
        if self.lowered {
            let _ = self.tcp.set_read_timeout(Some(self.per_op));
            let _ = self.tcp.set_write_timeout(Some(self.per_op));
            self.lowered = false;
        }
    }

    /// Bound the next socket operation by the time left before the deadline.
    fn bound(&mut self, write: bool) -> std::io::Result<()> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the KBS did not answer in time",
            ));
        }
        // Only when the deadline is nearer than the usual timeout: no extra system call on a
        // round trip that goes quickly.
        if left < self.per_op {
            self.lowered = true;
            if write {
                self.tcp.set_write_timeout(Some(left))?;
            } else {
                self.tcp.set_read_timeout(Some(left))?;
            }
        }
        Ok(())
    }
}

impl Read for KbsStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.bound(false)?;
        match &mut self.kind {
            StreamKind::Plain(s) => s.read(buf),
            StreamKind::Tls(s) => s.read(buf),
        }
    }
}

impl Write for KbsStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bound(true)?;
        match &mut self.kind {
            StreamKind::Plain(s) => s.write(buf),
            StreamKind::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.kind {
            StreamKind::Plain(s) => s.flush(),
            StreamKind::Tls(s) => s.flush(),
        }
    }
}

/// A way to stop a fetch from another thread (a cancel or a forced removal of the container it
/// is for): the fetch's socket is shut down, so that whatever it is blocked on returns at once,
/// and no new connection is made for it.
#[derive(Debug, Default)]
pub struct Interrupt {
    interrupted: std::sync::atomic::AtomicBool,
    sockets: Mutex<Vec<TcpStream>>,
}

impl Interrupt {
    pub fn new() -> Arc<Self> {
        Arc::new(Interrupt::default())
    }

    /// Stop the fetch now (and any that starts later with this interrupt).
    pub fn interrupt(&self) {
        self.interrupted
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub(crate) fn is_interrupted(&self) -> bool {
        self.interrupted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Watch the socket of `stream`; fails if the fetch was interrupted already.
    fn watch(&self, stream: &KbsStream) -> std::io::Result<()> {
        let clone = stream.tcp.try_clone()?;
        let mut sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_interrupted() {
            let _ = clone.shutdown(std::net::Shutdown::Both);
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the fetch was cancelled",
            ));
        }
        sockets.push(clone);
        Ok(())
    }
}

/// A declared secret: its `kbs://` URL, the KBS to ask, and the resource path.
#[derive(Debug, Clone)]
pub struct SecretRef {
    pub url: String,
    pub client: KbsClient,
    pub path: ResourcePath,
    /// Where the secret appears under `/secret`: `REPO/TYPE/TAG`, or the name given with
    /// `,target=NAME`.
    pub target: String,
}

impl SecretRef {
    /// Parse `kbs://HOST:PORT/REPO/TYPE/TAG[,target=NAME]` (or `kbss://` for TLS, with `trust`
    /// deciding which certificates are the KBS's).
    pub fn parse(spec: &str, trust: &KbsTrust) -> Result<Self, KbsClientError> {
        let (url, target) = match spec.split_once(",target=") {
            Some((u, t)) => (u, Some(t)),
            None => (spec, None),
        };
        let (client, path) = KbsClient::parse_url(url, trust)?;
        let target = match target {
            Some(t) => {
                let ok = !t.is_empty()
                    && t.len() <= 128
                    && t.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
                    })
                    && t.bytes().any(|b| b != b'.');
                if !ok {
                    return Err(KbsClientError::BadUrl(format!(
                        "{spec} (target must be one file name)"
                    )));
                }
                t.to_string()
            }
            None => path.to_string(),
        };
        Ok(SecretRef {
            url: url.to_string(),
            client,
            path,
            target,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KbsClientError {
    #[error("invalid secret reference {0:?}: expected kbs://HOST:PORT/REPO/TYPE/TAG")]
    BadUrl(String),
    #[error("cannot set up TLS: {0}")]
    TlsConfig(String),
    #[error("cannot reach the KBS at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with the KBS at {addr} failed: {source}")]
    Handshake {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("KBS {addr} refused {step} ({status}): {detail}")]
    Refused {
        addr: String,
        step: &'static str,
        status: u16,
        detail: String,
    },
    #[error("KBS {addr} answered {step} with something that is not the KBS protocol: {reason}")]
    Protocol {
        addr: String,
        step: &'static str,
        reason: String,
    },
    #[error("cannot produce evidence: {0}")]
    Evidence(String),
    #[error("the KBS at {addr} did not complete the exchange within {seconds} seconds")]
    TimedOut { addr: String, seconds: u64 },
    #[error("the fetch was cancelled")]
    Cancelled,
    #[error("cannot decrypt the resource")]
    Decrypt(#[source] jwe::JweError),
}

/// `REPO/TYPE/TAG` of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub repo: String,
    pub kind: String,
    pub tag: String,
}

impl ResourcePath {
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() != 3 || parts.iter().any(|p| !valid_segment(p)) {
            return None;
        }
        Some(ResourcePath {
            repo: parts[0].into(),
            kind: parts[1].into(),
            tag: parts[2].into(),
        })
    }
}

impl std::fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.repo, self.kind, self.tag)
    }
}

/// Which evidence a KBS reads: vouch's own (a vouch-kbs), or Confidential Containers' (Trustee).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KbsFlavour {
    Vouch,
    Coco,
}

/// How the client picks the flavour: from the challenge (a vouch-kbs names itself in its
/// `extra-params`; any other KBS is taken for a Confidential Containers one), or as told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlavourChoice {
    #[default]
    Auto,
    Vouch,
    Coco,
}

impl std::str::FromStr for FlavourChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(FlavourChoice::Auto),
            "vouch" => Ok(FlavourChoice::Vouch),
            "coco" => Ok(FlavourChoice::Coco),
            other => Err(format!("KBS flavour {other:?} is not auto, vouch or coco")),
        }
    }
}

/// The key a vouch-kbs puts in its challenge's `extra-params` (CoCo's clients ignore it).
pub const VOUCH_KBS_MARK: &str = "vouch-kbs";

/// What a round trip's evidence must bind, for the KBS it talks to.
#[derive(Debug, Clone)]
pub struct Binding {
    pub flavour: KbsFlavour,
    /// vouch: `{nonce, tee-pubkey}` (and vouchd adds the requester); CoCo:
    /// `{additional-evidence: "", nonce, tee-pubkey}`, as CoCo's attester binds it.
    pub runtime_data: Value,
}

/// The flavour of the KBS whose challenge this is, and a check of what it asks for.
fn flavour_of(challenge: &Value, choice: FlavourChoice) -> Result<KbsFlavour, String> {
    // Trustee sends `"extra-params": ""`; vouch-kbs an object.
    let extra = challenge.get("extra-params");
    if let Some(alg) = extra
        .and_then(|e| e.get("selected-hash-algorithm"))
        .and_then(Value::as_str)
    {
        if !alg.eq_ignore_ascii_case("sha384") {
            return Err(format!(
                "the KBS selects the {alg} hash for the binding; vouch binds with sha384 only"
            ));
        }
    }
    Ok(match choice {
        FlavourChoice::Vouch => KbsFlavour::Vouch,
        FlavourChoice::Coco => KbsFlavour::Coco,
        FlavourChoice::Auto if extra.and_then(|e| e.get(VOUCH_KBS_MARK)).is_some() => {
            KbsFlavour::Vouch
        }
        FlavourChoice::Auto => KbsFlavour::Coco,
    })
}

#[derive(Debug, Clone)]
pub struct KbsClient {
    addr: String,
    /// Whose evidence the KBS reads, or how to tell.
    flavour: FlavourChoice,
    /// For `kbss://`: how the KBS's certificate is checked.
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    /// How long one round trip (or admin call) may take in all.
    round_trip: Duration,
    /// The connection the last round trip left open, for the next one (clones share it).
    idle: Arc<Mutex<Option<Conn>>>,
}

/// How long a whole round trip may take unless the client is told otherwise.
pub(crate) const DEFAULT_ROUND_TRIP: Duration = Duration::from_secs(30);

impl KbsClient {
    pub fn new(addr: impl Into<String>) -> Self {
        KbsClient {
            addr: addr.into(),
            tls: None,
            timeout: Duration::from_secs(5),
            round_trip: DEFAULT_ROUND_TRIP,
            idle: Arc::default(),
            flavour: FlavourChoice::Auto,
        }
    }

    /// The same client, presenting the evidence of this flavour (or telling it from the
    /// challenge).
    pub fn with_flavour(mut self, flavour: FlavourChoice) -> Self {
        self.flavour = flavour;
        self
    }

    /// The same client with another bound on a whole round trip.
    pub fn with_round_trip(mut self, limit: Duration) -> Self {
        self.round_trip = limit;
        self
    }

    /// A client for the same KBS, with the same trust, and a connection of its own.
    pub fn fresh(&self) -> Self {
        KbsClient {
            idle: Arc::default(),
            ..self.clone()
        }
    }

    /// A client for a KBS that serves TLS, its certificate checked against `trust`.
    pub fn new_tls(addr: impl Into<String>, trust: &KbsTrust) -> Result<Self, KbsClientError> {
        Ok(KbsClient {
            tls: Some(trust.config()?),
            ..KbsClient::new(addr)
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Parse `kbs://HOST:PORT/REPO/TYPE/TAG` (plain HTTP) or `kbss://...` (TLS).
    pub fn parse_url(
        url: &str,
        trust: &KbsTrust,
    ) -> Result<(KbsClient, ResourcePath), KbsClientError> {
        let (rest, tls) = match (url.strip_prefix("kbs://"), url.strip_prefix("kbss://")) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            (None, None) => return Err(KbsClientError::BadUrl(url.into())),
        };
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| KbsClientError::BadUrl(url.into()))?;
        if host.is_empty() || !host.contains(':') {
            return Err(KbsClientError::BadUrl(url.into()));
        }
        let path = ResourcePath::parse(path).ok_or_else(|| KbsClientError::BadUrl(url.into()))?;
        let client = if tls {
            KbsClient::new_tls(host, trust)?
        } else {
            KbsClient::new(host)
        };
        Ok((client, path))
    }

    /// A new connection; the TLS handshake, if any, must end by `deadline` (a KBS that sends its
    /// handshake a byte at a time is bounded like one that sends its answers so).
    fn connect(&self, deadline: std::time::Instant) -> Result<KbsStream, KbsClientError> {
        let connect_err = |source| KbsClientError::Connect {
            addr: self.addr.clone(),
            source,
        };
        let sock = self
            .addr
            .to_socket_addrs()
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| KbsClientError::BadUrl(self.addr.clone()))?;
        let mut stream = TcpStream::connect_timeout(&sock, self.timeout).map_err(connect_err)?;
        let _ = stream.set_read_timeout(Some(self.timeout));
        let _ = stream.set_write_timeout(Some(self.timeout));
        let _ = stream.set_nodelay(true);
        let tcp = stream.try_clone().map_err(connect_err)?;
        let wrap = |kind| KbsStream {
            kind,
            tcp,
            per_op: self.timeout,
            deadline: None,
            lowered: false,
        };
        let Some(config) = &self.tls else {
            return Ok(wrap(StreamKind::Plain(stream)));
        };
        let handshake_err = |source| KbsClientError::Handshake {
            addr: self.addr.clone(),
            source,
        };
        // The host part of HOST:PORT ([V6]:PORT): a DNS name or an IP address.
        let host = self
            .addr
            .rsplit_once(':')
            .map_or(self.addr.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| KbsClientError::BadUrl(self.addr.clone()))?;
        let mut conn = rustls::ClientConnection::new(config.clone(), name)
            .map_err(|e| handshake_err(std::io::Error::other(e)))?;
        // Completed here, so that a certificate the client does not trust is reported as such.
        // Record by record rather than with `complete_io` (which keeps reading while bytes
        // trickle in), so that the deadline is checked before every read.
        let late = || {
            handshake_err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the KBS did not complete the handshake in time",
            ))
        };
        // A socket timeout (no byte for the time left) is the same lateness.
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => late(),
            _ => handshake_err(e),
        };
        while conn.is_handshaking() || conn.wants_write() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(late());
            }
            let op = Some(left.min(self.timeout));
            let _ = stream.set_read_timeout(op);
            let _ = stream.set_write_timeout(op);
            if conn.wants_write() {
                conn.write_tls(&mut stream).map_err(io)?;
                continue;
            }
            if conn.read_tls(&mut stream).map_err(io)? == 0 {
                return Err(handshake_err(std::io::Error::from(
                    std::io::ErrorKind::UnexpectedEof,
                )));
            }
            if let Err(e) = conn.process_new_packets() {
                // Tell the KBS why (an alert), as rustls would.
                let _ = conn.write_tls(&mut stream);
                return Err(handshake_err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e,
                )));
            }
        }
        let _ = stream.set_read_timeout(Some(self.timeout));
        let _ = stream.set_write_timeout(Some(self.timeout));
        Ok(wrap(StreamKind::Tls(Box::new(rustls::StreamOwned::new(
            conn, stream,
        )))))
    }

    /// A kept-alive connection: the one left idle by this client's last round trip, or a new one.
    fn connection(&self, deadline: std::time::Instant) -> Result<(Conn, bool), KbsClientError> {
        match self.idle.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(c) if c.is_open() => Ok((c, true)),
            _ => Ok((
                Connection::new(self.connect(deadline)?, self.addr.clone()),
                false,
            )),
        }
    }

    /// Keep `conn` for this client's next round trip if the server left it open.
    fn keep(&self, conn: Conn) {
        if conn.is_open() {
            *self.idle.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
        }
    }

    fn protocol(&self, step: &'static str, e: ClientError) -> KbsClientError {
        let reason = match e {
            // The transport's own wording names vouchd, its other peer.
            ClientError::Protocol(m) => m,
            ClientError::Io(e) => format!("the connection was lost or timed out ({e})"),
            other => other.to_string(),
        };
        KbsClientError::Protocol {
            addr: self.addr.clone(),
            step,
            reason,
        }
    }

    /// A response with a status other than 2xx is the KBS's refusal of `step`.
    fn accepted(
        &self,
        step: &'static str,
        resp: FullResponse,
    ) -> Result<FullResponse, KbsClientError> {
        if (200..300).contains(&resp.status) {
            return Ok(resp);
        }
        let body = serde_json::from_slice::<Value>(&resp.body).ok();
        let kind = body
            .as_ref()
            .and_then(|v| v.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        // Trustee answers every refused attestation alike ("RCAR handshake Attest failed"); the
        // cause is in its own log.
        let causeless = kind.ends_with("/AttestationError");
        let detail = body
            .as_ref()
            .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_string))
            .map(|d| {
                if causeless {
                    format!(
                        "{d} (this KBS gives no cause; its log says why it refused the evidence)"
                    )
                } else {
                    d
                }
            })
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&resp.body)
                    .chars()
                    .take(200)
                    .collect()
            });
        Err(KbsClientError::Refused {
            addr: self.addr.clone(),
            step,
            status: resp.status,
            detail,
        })
    }

    /// Read the response to `step`, which was sent on `conn`.
    fn receive(
        &self,
        conn: &mut Conn,
        step: &'static str,
        method: &str,
    ) -> Result<FullResponse, KbsClientError> {
        let resp = conn
            .receive(method, MAX_RESPONSE)
            .map_err(|e| self.protocol(step, e))?;
        self.accepted(step, resp)
    }

    /// Write the first request of a round trip, on the connection the last one left open or
    /// on a new one.
    fn send_first(&self, req: FirstRequest) -> Result<Sent, KbsClientError> {
        let (mut conn, reused) = self.connection(req.deadline)?;
        self.arm(&mut conn, &req)?;
        match req.write(&mut conn) {
            Ok(()) => Ok(Sent { conn, reused, req }),
            // The server closed the kept-alive connection meanwhile.
            Err(_) if reused => Ok(Sent {
                conn: self.write_on_new(&req)?,
                reused: false,
                req,
            }),
            Err(e) => Err(self.protocol(req.step, e)),
        }
    }

    /// `req` written on a new connection, for when a kept-alive one turned out closed.
    fn write_on_new(&self, req: &FirstRequest) -> Result<Conn, KbsClientError> {
        if req.interrupt.as_ref().is_some_and(|i| i.is_interrupted()) {
            return Err(KbsClientError::Cancelled);
        }
        let mut conn = Connection::new(self.connect(req.deadline)?, self.addr.clone());
        self.arm(&mut conn, req)?;
        req.write(&mut conn)
            .map_err(|e| self.protocol(req.step, e))?;
        Ok(conn)
    }

    /// Give the connection the round trip's deadline, and let its interrupt reach the socket.
    fn arm(&self, conn: &mut Conn, req: &FirstRequest) -> Result<(), KbsClientError> {
        conn.stream_mut().set_deadline(Some(req.deadline));
        if let Some(i) = &req.interrupt {
            i.watch(conn.stream_mut())
                .map_err(|_| KbsClientError::Cancelled)?;
        }
        Ok(())
    }

    /// An error of a round trip that ran out of time or was interrupted, named as such.
    fn outcome<T>(
        &self,
        r: Result<T, KbsClientError>,
        deadline: std::time::Instant,
        interrupt: Option<&Interrupt>,
    ) -> Result<T, KbsClientError> {
        match r {
            Err(_) if interrupt.is_some_and(Interrupt::is_interrupted) => {
                Err(KbsClientError::Cancelled)
            }
            Err(KbsClientError::Protocol { .. }) if std::time::Instant::now() >= deadline => {
                Err(KbsClientError::TimedOut {
                    addr: self.addr.clone(),
                    seconds: self.round_trip.as_secs(),
                })
            }
            other => other,
        }
    }

    /// The answer to a round trip's first request. A kept-alive connection that the server
    /// closed before answering is replaced, once, by a new one and the request written again.
    fn answer(&self, sent: Sent) -> Result<(Conn, FullResponse), KbsClientError> {
        let Sent {
            mut conn,
            reused,
            req,
        } = sent;
        let resp = match conn.receive(req.method, MAX_RESPONSE) {
            Ok(r) => r,
            Err(ClientError::Io(_) | ClientError::Protocol(_)) if reused => {
                conn = self.write_on_new(&req)?;
                conn.receive(req.method, MAX_RESPONSE)
                    .map_err(|e| self.protocol(req.step, e))?
            }
            Err(e) => return Err(self.protocol(req.step, e)),
        };
        Ok((conn, self.accepted(req.step, resp)?))
    }

    /// Start a round trip for a resource: write the `auth` request. The steps that follow
    /// ([`AuthSent::challenge`], [`Challenged::attest`], [`AttestSent::finish`]) each read
    /// what the one before sent, so one thread can keep several round trips in flight;
    /// [`KbsClient::get_resource`] runs them in a row.
    pub fn start(&self, tee: Tee) -> Result<AuthSent<'_>, KbsClientError> {
        self.start_with(tee, None)
    }

    fn start_with(
        &self,
        tee: Tee,
        interrupt: Option<Arc<Interrupt>>,
    ) -> Result<AuthSent<'_>, KbsClientError> {
        let body = json!({"version": PROTOCOL_VERSION, "tee": tee, "extra-params": {}}).to_string();
        let sent = self.send_first(FirstRequest {
            step: "auth",
            method: "POST",
            path: "/kbs/v0/auth".into(),
            headers: Vec::new(),
            body: Some(("application/json", body.into_bytes())),
            deadline: std::time::Instant::now() + self.round_trip,
            interrupt,
        })?;
        // A fresh key for this round trip alone, made while the KBS answers.
        let key = jwe::EphemeralKey::generate().map_err(KbsClientError::Decrypt)?;
        Ok(AuthSent {
            client: self,
            sent,
            key,
        })
    }

    /// Run auth, attest and resource for one resource. `evidence` gets the runtime data to bind
    /// and returns vouch evidence for it. The value is zeroized when dropped.
    pub fn get_resource(
        &self,
        tee: Tee,
        path: &ResourcePath,
        evidence: impl FnOnce(&Binding) -> Result<Value, String>,
    ) -> Result<Zeroizing<Vec<u8>>, KbsClientError> {
        self.fetch(tee, path, evidence, None)
    }

    /// [`KbsClient::get_resource`], stopped at once (whatever it is waiting on) when `interrupt`
    /// fires. Either way the whole round trip takes at most the client's round-trip limit.
    pub fn get_resource_interruptible(
        &self,
        tee: Tee,
        path: &ResourcePath,
        evidence: impl FnOnce(&Binding) -> Result<Value, String>,
        interrupt: &Arc<Interrupt>,
    ) -> Result<Zeroizing<Vec<u8>>, KbsClientError> {
        self.fetch(tee, path, evidence, Some(interrupt))
    }

    fn fetch(
        &self,
        tee: Tee,
        path: &ResourcePath,
        evidence: impl FnOnce(&Binding) -> Result<Value, String>,
        interrupt: Option<&Arc<Interrupt>>,
    ) -> Result<Zeroizing<Vec<u8>>, KbsClientError> {
        let deadline = std::time::Instant::now() + self.round_trip;
        let r = (|| {
            let challenged = self.start_with(tee, interrupt.cloned())?.challenge()?;
            let ev = evidence(challenged.binding()).map_err(KbsClientError::Evidence)?;
            challenged.attest(ev, path)?.finish()
        })();
        self.outcome(r, deadline, interrupt.map(|i| i.as_ref()))
    }

    fn bad(&self, step: &'static str, reason: String) -> KbsClientError {
        KbsClientError::Protocol {
            addr: self.addr.clone(),
            step,
            reason,
        }
    }

    /// An authenticated admin call.
    pub fn admin(
        &self,
        token: &str,
        method: &'static str,
        path: &str,
        body: Option<(&'static str, &[u8])>,
    ) -> Result<Vec<u8>, KbsClientError> {
        let deadline = std::time::Instant::now() + self.round_trip;
        let r = (|| {
            let sent = self.send_first(FirstRequest {
                step: "admin",
                method,
                path: path.to_string(),
                headers: vec![("Authorization", format!("Bearer {token}"))],
                body: body.map(|(t, b)| (t, b.to_vec())),
                deadline,
                interrupt: None,
            })?;
            let (conn, resp) = self.answer(sent)?;
            self.keep(conn);
            Ok(resp.body)
        })();
        self.outcome(r, deadline, None)
    }
}

/// The first request of a round trip, kept so that it can be written again on a new connection.
struct FirstRequest {
    step: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<(&'static str, Vec<u8>)>,
    /// When the whole round trip must be done.
    deadline: std::time::Instant,
    interrupt: Option<Arc<Interrupt>>,
}

impl FirstRequest {
    fn write(&self, conn: &mut Conn) -> Result<(), ClientError> {
        let body = self.body.as_ref().map(|(t, b)| (*t, b.as_slice()));
        conn.send(self.method, &self.path, &self.headers, body)?;
        conn.flush()
    }
}

/// A first request written, its answer not read yet.
struct Sent {
    conn: Conn,
    reused: bool,
    req: FirstRequest,
}

/// A round trip whose `auth` request is on its way.
pub struct AuthSent<'a> {
    client: &'a KbsClient,
    sent: Sent,
    key: jwe::EphemeralKey,
}

impl<'a> AuthSent<'a> {
    /// Read the KBS's challenge.
    pub fn challenge(self) -> Result<Challenged<'a>, KbsClientError> {
        let client = self.client;
        let (conn, resp) = client.answer(self.sent)?;
        let challenge: Value =
            serde_json::from_slice(&resp.body).map_err(|e| client.bad("auth", e.to_string()))?;
        let nonce = challenge
            .get("nonce")
            .and_then(Value::as_str)
            .ok_or_else(|| client.bad("auth", "no nonce".into()))?;
        let cookie = resp
            .headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .find_map(|(_, v)| {
                v.split(';')
                    .next()
                    .filter(|c| c.starts_with(&format!("{SESSION_COOKIE}=")))
                    .map(str::to_string)
            })
            .ok_or_else(|| client.bad("auth", format!("no {SESSION_COOKIE} cookie")))?;
        let flavour = flavour_of(&challenge, client.flavour).map_err(|e| client.bad("auth", e))?;
        let tee_pubkey = jwe::public_jwk(self.key.public_key());
        let runtime_data = json!({"nonce": nonce, "tee-pubkey": tee_pubkey});
        let binding = Binding {
            flavour,
            runtime_data: match flavour {
                KbsFlavour::Vouch => runtime_data.clone(),
                KbsFlavour::Coco => json!({
                    "additional-evidence": "",
                    "nonce": nonce,
                    "tee-pubkey": tee_pubkey,
                }),
            },
        };
        Ok(Challenged {
            client,
            conn,
            cookie,
            key: self.key,
            runtime_data,
            binding,
        })
    }
}

/// A round trip that has its challenge: evidence must now bind [`Challenged::runtime_data`].
pub struct Challenged<'a> {
    client: &'a KbsClient,
    conn: Conn,
    cookie: String,
    key: jwe::EphemeralKey,
    /// What the attestation's `runtime-data` says: `{nonce, tee-pubkey}`.
    runtime_data: Value,
    binding: Binding,
}

impl<'a> Challenged<'a> {
    /// What the evidence's report data must bind, for the KBS's flavour.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// Write the attestation with `evidence`, and the request for `path` pipelined behind it:
    /// the KBS answers them in order, and the resource answer counts only when the attestation
    /// was accepted.
    pub fn attest(
        self,
        evidence: Value,
        path: &ResourcePath,
    ) -> Result<AttestSent<'a>, KbsClientError> {
        let Challenged {
            client,
            mut conn,
            cookie,
            key,
            runtime_data,
            binding: _,
        } = self;
        let attestation = json!({
            "runtime-data": runtime_data,
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
        })
        .to_string();
        let cookie_header = [("Cookie", cookie)];
        let resource = format!("/kbs/v0/resource/{path}");
        conn.send(
            "POST",
            "/kbs/v0/attest",
            &cookie_header,
            Some(("application/json", attestation.as_bytes())),
        )
        .and_then(|()| conn.send("GET", &resource, &cookie_header, None))
        .and_then(|()| conn.flush())
        .map_err(|e| client.protocol("attest", e))?;
        Ok(AttestSent { client, conn, key })
    }
}

/// A round trip whose attestation and resource request are on their way.
pub struct AttestSent<'a> {
    client: &'a KbsClient,
    conn: Conn,
    key: jwe::EphemeralKey,
}

impl AttestSent<'_> {
    /// Read the attestation's answer and the resource, and decrypt the resource.
    pub fn finish(mut self) -> Result<Zeroizing<Vec<u8>>, KbsClientError> {
        let client = self.client;
        client.receive(&mut self.conn, "attest", "POST")?;
        let resp = client.receive(&mut self.conn, "resource", "GET")?;
        client.keep(self.conn);
        let jwe: Jwe = serde_json::from_slice(&resp.body)
            .map_err(|e| client.bad("resource", e.to_string()))?;
        self.key.decrypt(&jwe).map_err(KbsClientError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vouch-kbs names itself in its challenge; Trustee's challenge (`"extra-params": ""`,
    /// as captured) and any other are taken for CoCo KBSs, unless told; a hash other than
    /// SHA-384 for the binding is refused.
    #[test]
    fn the_flavour_comes_from_the_challenge_unless_told() {
        let trustee =
            json!({"nonce": "dt1hjKQ+ZPwACfTZuLIkEAp7cR1ie5tnTHkifFmicmQ=", "extra-params": ""});
        let vouch = json!({"nonce": "n", "extra-params": {VOUCH_KBS_MARK: {"evidence": ["vouch", "coco"]}}});
        let bare = json!({"nonce": "n"});
        for (challenge, choice, want) in [
            (&trustee, FlavourChoice::Auto, KbsFlavour::Coco),
            (&bare, FlavourChoice::Auto, KbsFlavour::Coco),
            (&vouch, FlavourChoice::Auto, KbsFlavour::Vouch),
            (&vouch, FlavourChoice::Coco, KbsFlavour::Coco),
            (&trustee, FlavourChoice::Vouch, KbsFlavour::Vouch),
        ] {
            assert_eq!(
                flavour_of(challenge, choice),
                Ok(want),
                "{challenge} {choice:?}"
            );
        }
        let sha384 = json!({"nonce": "n", "extra-params": {"selected-hash-algorithm": "SHA384"}});
        assert_eq!(
            flavour_of(&sha384, FlavourChoice::Auto),
            Ok(KbsFlavour::Coco)
        );
        let sha512 = json!({"nonce": "n", "extra-params": {"selected-hash-algorithm": "sha512"}});
        assert_eq!(
            flavour_of(&sha512, FlavourChoice::Auto),
            Err(
                "the KBS selects the sha512 hash for the binding; vouch binds with sha384 only"
                    .into()
            )
        );
        assert_eq!("coco".parse(), Ok(FlavourChoice::Coco));
        assert!("trustee".parse::<FlavourChoice>().is_err());
    }

    /// Trustee's answer to evidence it refused (captured) says where the cause is; a refusal
    /// that gives its cause is passed on as it is.
    #[test]
    fn a_causeless_refusal_says_where_the_cause_is() {
        let Some(v) = vouch_testkit::corpus::vectors() else {
            return;
        };
        let client = KbsClient::new("127.0.0.1:1");
        let refused = |body: Vec<u8>| match client.accepted(
            "attest",
            FullResponse {
                status: 401,
                headers: Vec::new(),
                body,
            },
        ) {
            Err(KbsClientError::Refused { detail, .. }) => detail,
            other => panic!("not a refusal: {other:?}"),
        };
        let trustee = std::fs::read(v.join("coco/trustee-attest-error.json")).expect("vector");
        assert_eq!(
            refused(trustee),
            "Attestation error: RCAR handshake Attest failed (this KBS gives no cause; its log says why it refused the evidence)"
        );
        let vouch = br#"{"type":"https://github.com/confidential-containers/kbs/errors/AttestationFailed","detail":"nonce mismatch"}"#;
        assert_eq!(refused(vouch.to_vec()), "nonce mismatch");
    }

    #[test]
    fn urls() {
        let trust = KbsTrust::default();
        let (c, p) =
            KbsClient::parse_url("kbs://127.0.0.1:8080/default/key/app", &trust).expect("url");
        assert_eq!(c.addr(), "127.0.0.1:8080");
        assert_eq!(p.to_string(), "default/key/app");
        for bad in [
            "kbs://h/a/b/c",
            "kbs://h:1/a/b",
            "kbs://h:1/a/../c",
            "http://h:1/a/b/c",
            "kbs://h:1/a/b/c/d",
        ] {
            assert!(KbsClient::parse_url(bad, &trust).is_err(), "{bad}");
        }
    }
}
