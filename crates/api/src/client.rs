//! A small blocking HTTP/1.1 client for the daemon's unix socket. One connection per request;
//! responses with `Content-Length` or chunked bodies, streamed to the caller.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to vouchd at {socket}: is it running? (start it with `vouchd`, or point --socket / VOUCH_SOCKET at its socket)")]
    NotRunning {
        socket: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "permission denied on {socket}: the vouchd socket is only open to its owner (run as root)"
    )]
    PermissionDenied { socket: String },
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("the connection was lost or timed out")]
    Io(#[source] io::Error),
    #[error("vouchd sent a malformed response: {0}")]
    Protocol(String),
}

/// A response whose body is read on demand.
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    /// All headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Box<dyn Read + Send>,
}

impl Response {
    /// Whether the connection can carry another request once this body is read: the server
    /// did not close it, and the body is delimited by `Content-Length`.
    pub fn reusable(&self) -> bool {
        (self.header("content-length").is_some() || self.status == 204 || self.status == 304)
            && self.header("transfer-encoding").is_none()
            && !self
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request/response exchange over any connected stream (`Connection: close`).
pub fn exchange<S: Read + Write + Send + 'static>(
    stream: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<(&str, &[u8])>,
) -> Result<Response, ClientError> {
    exchange_on(stream, host, method, path, headers, body, false)
}

/// Like [`exchange`]; with `keep_alive` the server is asked to keep the connection open, and
/// [`Response::reusable`] says whether it did (the caller reads the whole body, then sends the
/// next request on a clone of the same stream).
pub fn exchange_on<S: Read + Write + Send + 'static>(
    mut stream: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<(&str, &[u8])>,
    keep_alive: bool,
) -> Result<Response, ClientError> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\n");
    for (name, value) in headers {
        if value.contains(['\r', '\n']) {
            return Err(ClientError::Protocol(format!(
                "header {name} contains a line break"
            )));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match body {
        Some((content_type, b)) => head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            b.len()
        )),
        None if method != "GET" && method != "HEAD" => head.push_str("Content-Length: 0\r\n"),
        None => {}
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    if let Some((_, b)) = body {
        req.extend_from_slice(b);
    }
    stream.write_all(&req).map_err(ClientError::Io)?;
    let mut reader = BufReader::new(stream);
    let mut raw = Vec::new();
    loop {
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(ClientError::Io)?;
        if n == 0 {
            return Err(ClientError::Protocol(
                "connection closed before the response headers ended".into(),
            ));
        }
        if raw.ends_with(b"\r\n\r\n") {
            break;
        }
        if raw.len() > 64 * 1024 {
            return Err(ClientError::Protocol("response headers too large".into()));
        }
    }
    let mut parsed_headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut parsed_headers);
    parsed
        .parse(&raw)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let status = parsed
        .code
        .ok_or_else(|| ClientError::Protocol("no status code".into()))?;
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let content_type = find("content-type");
    let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    // Responses that never have a body (RFC 9112 section 6.3).
    let bodiless =
        method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    let length = if bodiless {
        Some(0)
    } else {
        find("content-length").and_then(|v| v.parse::<u64>().ok())
    };
    let body: Box<dyn Read + Send> = if chunked && !bodiless {
        Box::new(ChunkedReader {
            inner: reader,
            remaining: 0,
            done: false,
        })
    } else if let Some(len) = length {
        Box::new(reader.take(len))
    } else {
        Box::new(reader)
    };
    Ok(Response {
        status,
        content_type,
        headers,
        body,
    })
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn connect(&self) -> Result<UnixStream, ClientError> {
        UnixStream::connect(&self.socket).map_err(|source| {
            let socket = self.socket.display().to_string();
            if source.kind() == io::ErrorKind::PermissionDenied {
                ClientError::PermissionDenied { socket }
            } else {
                ClientError::NotRunning { socket, source }
            }
        })
    }

    /// Send a request and return the response, whatever its status.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let stream = self.connect()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .map_err(ClientError::Io)?;
        exchange(
            stream,
            "vouchd",
            method,
            path,
            &[],
            body.map(|b| ("application/json", b)),
        )
    }

    /// Send a request; on a 2xx status decode the JSON body, otherwise return the API error.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let bytes = match body {
            Some(b) => {
                Some(serde_json::to_vec(b).map_err(|e| ClientError::Protocol(e.to_string()))?)
            }
            None => None,
        };
        let resp = self.send(method, path, bytes.as_deref())?;
        let (status, data) = read_body(resp)?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &data));
        }
        serde_json::from_slice(&data)
            .map_err(|e| ClientError::Protocol(format!("{e} in {path} response")))
    }

    /// Like [`Client::send`], turning non-2xx statuses into errors.
    pub fn stream(&self, method: &str, path: &str) -> Result<Response, ClientError> {
        let resp = self.send(method, path, None)?;
        if !(200..300).contains(&resp.status) {
            let (status, data) = read_body(resp)?;
            return Err(api_error(status, &data));
        }
        Ok(resp)
    }
}

/// Read a whole response body (bounded by `limit` bytes).
pub fn read_body_limited(resp: Response, limit: u64) -> Result<(u16, Vec<u8>), ClientError> {
    let status = resp.status;
    let mut data = Vec::new();
    resp.body
        .take(limit + 1)
        .read_to_end(&mut data)
        .map_err(ClientError::Io)?;
    if data.len() as u64 > limit {
        return Err(ClientError::Protocol(format!(
            "response body larger than {limit} bytes"
        )));
    }
    Ok((status, data))
}

fn read_body(mut resp: Response) -> Result<(u16, Vec<u8>), ClientError> {
    let mut data = Vec::new();
    resp.body.read_to_end(&mut data).map_err(ClientError::Io)?;
    Ok((resp.status, data))
}

pub fn api_error(status: u16, data: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<ErrorBody>(data)
        .map(|e| e.error)
        .unwrap_or_else(|_| {
            format!(
                "vouchd answered HTTP {status}: {}",
                String::from_utf8_lossy(data).trim()
            )
        });
    ClientError::Api { status, message }
}

/// Decodes `Transfer-Encoding: chunked`.
struct ChunkedReader<R> {
    inner: R,
    remaining: u64,
    done: bool,
}

impl<R: BufRead> Read for ChunkedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            let mut line = String::new();
            if self.inner.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "chunked body ended early",
                ));
            }
            let size_text = line.trim().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.remaining = size;
        }
        let want = buf.len().min(self.remaining as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "chunk truncated",
            ));
        }
        self.remaining -= n as u64;
        if self.remaining == 0 {
            let mut crlf = [0u8; 2];
            self.inner.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_decoding() {
        let raw = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\n";
        let mut r = ChunkedReader {
            inner: &raw[..],
            remaining: 0,
            done: false,
        };
        let mut out = String::new();
        r.read_to_string(&mut out).expect("read");
        assert_eq!(out, "hello!");
        let mut bad = ChunkedReader {
            inner: &b"zz\r\n"[..],
            remaining: 0,
            done: false,
        };
        assert!(bad.read_to_string(&mut String::new()).is_err());
    }

    #[test]
    fn missing_socket_says_daemon_not_running() {
        let c = Client::new("/nonexistent/vouchd.sock");
        let err = c
            .call::<serde_json::Value>("GET", "/v1/info", None::<&()>)
            .expect_err("no daemon there");
        assert!(err.to_string().contains("is it running"), "{err}");
    }
}
