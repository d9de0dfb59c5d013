//! The TEE side of the KBS protocol, used by vouchd to fetch a container's declared secrets,
//! and the admin side, used by `vouch-kbs` and tests.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kbs_types::Tee;
use serde_json::{json, Value};
use vouch_api::client::{ClientError, Connection, FullResponse};
use zeroize::Zeroizing;

use crate::jwe::{self, Jwe};
use crate::server::{check_segment, SESSION_COOKIE};
use crate::PROTOCOL_VERSION;

const MAX_RESPONSE: u64 = 8 << 20;

type Conn = Connection<TcpStream>;

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
    /// Parse `kbs://HOST:PORT/REPO/TYPE/TAG[,target=NAME]`.
    pub fn parse(spec: &str) -> Result<Self, KbsClientError> {
        let (url, target) = match spec.split_once(",target=") {
            Some((u, t)) => (u, Some(t)),
            None => (spec, None),
        };
        let (client, path) = KbsClient::parse_url(url)?;
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
    #[error("https KBS URLs (kbss://) are not supported yet; use kbs:// on a trusted network")]
    Tls,
    #[error("cannot reach the KBS at {addr}")]
    Connect {
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
        if parts.len() != 3 || parts.iter().any(|p| check_segment(p).is_err()) {
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

#[derive(Debug, Clone)]
pub struct KbsClient {
    addr: String,
    timeout: Duration,
    /// The connection the last round trip left open, for the next one (clones share it).
    idle: Arc<Mutex<Option<Conn>>>,
}

impl KbsClient {
    pub fn new(addr: impl Into<String>) -> Self {
        KbsClient {
            addr: addr.into(),
            timeout: Duration::from_secs(5),
            idle: Arc::default(),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Parse `kbs://HOST:PORT/REPO/TYPE/TAG`.
    pub fn parse_url(url: &str) -> Result<(KbsClient, ResourcePath), KbsClientError> {
        if url.starts_with("kbss://") || url.starts_with("https://") {
            return Err(KbsClientError::Tls);
        }
        let rest = url
            .strip_prefix("kbs://")
            .ok_or_else(|| KbsClientError::BadUrl(url.into()))?;
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| KbsClientError::BadUrl(url.into()))?;
        if host.is_empty() || !host.contains(':') {
            return Err(KbsClientError::BadUrl(url.into()));
        }
        let path = ResourcePath::parse(path).ok_or_else(|| KbsClientError::BadUrl(url.into()))?;
        Ok((KbsClient::new(host), path))
    }

    fn connect(&self) -> Result<TcpStream, KbsClientError> {
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
        let stream = TcpStream::connect_timeout(&sock, self.timeout).map_err(connect_err)?;
        let _ = stream.set_read_timeout(Some(self.timeout));
        let _ = stream.set_write_timeout(Some(self.timeout));
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// A kept-alive connection: the one left idle by this client's last round trip, or a new one.
    fn connection(&self) -> Result<(Conn, bool), KbsClientError> {
        match self.idle.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(c) if c.is_open() => Ok((c, true)),
            _ => Ok((Connection::new(self.connect()?, self.addr.clone()), false)),
        }
    }

    /// Keep `conn` for this client's next round trip if the server left it open.
    fn keep(&self, conn: Conn) {
        if conn.is_open() {
            *self.idle.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
        }
    }

    fn protocol(&self, step: &'static str, e: ClientError) -> KbsClientError {
        KbsClientError::Protocol {
            addr: self.addr.clone(),
            step,
            reason: e.to_string(),
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
        let detail = serde_json::from_slice::<Value>(&resp.body)
            .ok()
            .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_string))
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

    /// The first request of a round trip. On a kept-alive connection, which the server may have
    /// closed meanwhile, it is retried once on a new connection.
    fn first_request(
        &self,
        step: &'static str,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<(&str, &[u8])>,
    ) -> Result<(Conn, FullResponse), KbsClientError> {
        let (mut conn, reused) = self.connection()?;
        let exchange = |conn: &mut Conn| {
            conn.send(method, path, headers, body)
                .and_then(|()| conn.receive(method, MAX_RESPONSE))
        };
        let resp = match exchange(&mut conn) {
            Ok(r) => r,
            Err(ClientError::Io(_) | ClientError::Protocol(_)) if reused => {
                conn = Connection::new(self.connect()?, self.addr.clone());
                exchange(&mut conn).map_err(|e| self.protocol(step, e))?
            }
            Err(e) => return Err(self.protocol(step, e)),
        };
        Ok((conn, self.accepted(step, resp)?))
    }

    /// Run auth, attest and resource for one resource. `evidence` gets the runtime data to bind
    /// and returns vouch evidence for it. The value is zeroized when dropped.
    pub fn get_resource(
        &self,
        tee: Tee,
        path: &ResourcePath,
        evidence: impl FnOnce(Value) -> Result<Value, String>,
    ) -> Result<Zeroizing<Vec<u8>>, KbsClientError> {
        let bad = |step: &'static str, reason: String| KbsClientError::Protocol {
            addr: self.addr.clone(),
            step,
            reason,
        };
        let req = json!({"version": PROTOCOL_VERSION, "tee": tee, "extra-params": {}}).to_string();
        let (mut conn, resp) = self.first_request(
            "auth",
            "POST",
            "/kbs/v0/auth",
            &[],
            Some(("application/json", req.as_bytes())),
        )?;
        let challenge: Value =
            serde_json::from_slice(&resp.body).map_err(|e| bad("auth", e.to_string()))?;
        let nonce = challenge
            .get("nonce")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("auth", "no nonce".into()))?
            .to_string();
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
            .ok_or_else(|| bad("auth", format!("no {SESSION_COOKIE} cookie")))?;

        let key = jwe::EphemeralKey::generate().map_err(KbsClientError::Decrypt)?;
        let runtime_data = json!({"nonce": nonce, "tee-pubkey": jwe::public_jwk(key.public_key())});
        let ev = evidence(runtime_data.clone()).map_err(KbsClientError::Evidence)?;
        let attestation = json!({
            "runtime-data": runtime_data,
            "tee-evidence": {"primary_evidence": ev, "additional_evidence": ""},
        })
        .to_string();
        // The resource request is pipelined behind the attestation: the KBS answers them in
        // order, and the resource answer counts only when the attestation was accepted.
        let cookie_header = [("Cookie", cookie)];
        let resource = format!("/kbs/v0/resource/{path}");
        conn.send(
            "POST",
            "/kbs/v0/attest",
            &cookie_header,
            Some(("application/json", attestation.as_bytes())),
        )
        .and_then(|()| conn.send("GET", &resource, &cookie_header, None))
        .map_err(|e| self.protocol("attest", e))?;
        self.receive(&mut conn, "attest", "POST")?;
        let resp = self.receive(&mut conn, "resource", "GET")?;
        self.keep(conn);
        let jwe: Jwe =
            serde_json::from_slice(&resp.body).map_err(|e| bad("resource", e.to_string()))?;
        key.decrypt(&jwe).map_err(KbsClientError::Decrypt)
    }

    /// An authenticated admin call.
    pub fn admin(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Vec<u8>, KbsClientError> {
        let (conn, resp) = self.first_request(
            "admin",
            method,
            path,
            &[("Authorization", format!("Bearer {token}"))],
            body,
        )?;
        self.keep(conn);
        Ok(resp.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let (c, p) = KbsClient::parse_url("kbs://127.0.0.1:8080/default/key/app").expect("url");
        assert_eq!(c.addr(), "127.0.0.1:8080");
        assert_eq!(p.to_string(), "default/key/app");
        for bad in [
            "kbs://h/a/b/c",
            "kbs://h:1/a/b",
            "kbs://h:1/a/../c",
            "http://h:1/a/b/c",
            "kbs://h:1/a/b/c/d",
        ] {
            assert!(KbsClient::parse_url(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            KbsClient::parse_url("kbss://h:1/a/b/c"),
            Err(KbsClientError::Tls)
        ));
    }
}
