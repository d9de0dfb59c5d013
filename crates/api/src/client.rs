//! A small blocking HTTP/1.1 client: for the daemon's unix socket, one connection per request
//! with the response body streamed to the caller ([`exchange`]); for TCP services, a kept-alive
//! [`Connection`] that can pipeline requests. Bodies with `Content-Length` or chunked.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to vouchd at {socket}: is it running?")]
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
    Api {
        status: u16,
        message: String,
        /// The refusal's code, when vouchd gave one ([`crate::codes`]).
        code: Option<String>,
    },
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
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// One HTTP/1.1 request/response exchange over any connected stream (`Connection: close`).
/// The body is streamed to the caller.
pub fn exchange<S: Read + Write + Send + 'static>(
    mut stream: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<(&str, &[u8])>,
) -> Result<Response, ClientError> {
    let req = request_bytes(host, method, path, headers, body, false)?;
    stream.write_all(&req).map_err(ClientError::Io)?;
    read_response(BufReader::new(stream), method)
}

/// The response on `reader` to a request of `method`, its body streamed as it comes.
fn read_response<S: Read + Send + 'static>(
    mut reader: BufReader<S>,
    method: &str,
) -> Result<Response, ClientError> {
    let (status, headers, framing) = read_head(&mut reader, method)?;
    let content_type = find_header(&headers, "content-type").map(str::to_string);
    let body: Box<dyn Read + Send> = match framing {
        Framing::Chunked => Box::new(ChunkedReader {
            inner: reader,
            remaining: 0,
            done: false,
        }),
        Framing::Length(len) => Box::new(reader.take(len)),
        Framing::UntilClose => Box::new(reader),
    };
    Ok(Response {
        status,
        content_type,
        headers,
        body,
    })
}

/// The bytes of one HTTP/1.1 request.
fn request_bytes(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<(&str, &[u8])>,
    keep_alive: bool,
) -> Result<Vec<u8>, ClientError> {
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
    Ok(req)
}

/// Response headers, names lower-cased, in order.
type Headers = Vec<(String, String)>;

/// The first header called `name` (lower case).
fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// How a response body is delimited (RFC 9112 section 6.3).
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// Read a response's status line and headers (names lower-cased), and how its body ends.
fn read_head(
    reader: &mut impl BufRead,
    method: &str,
) -> Result<(u16, Headers, Framing), ClientError> {
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
    let find = |name: &str| find_header(&headers, name);
    // Responses that never have a body.
    let bodiless =
        method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    let framing = if bodiless {
        Framing::Length(0)
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        Framing::Chunked
    } else if let Some(v) = find("content-length") {
        Framing::Length(
            v.parse::<u64>()
                .map_err(|_| ClientError::Protocol(format!("bad Content-Length {v:?}")))?,
        )
    } else {
        Framing::UntilClose
    };
    Ok((status, headers, framing))
}

/// A response read whole from a [`Connection`].
#[derive(Debug)]
pub struct FullResponse {
    pub status: u16,
    /// All headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl FullResponse {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A kept-alive HTTP/1.1 connection. Requests may be pipelined (several written before their
/// responses are read); responses are read whole and in order through one buffer, so bytes of
/// the next response are never lost.
pub struct Connection<S> {
    host: String,
    reader: BufReader<S>,
    /// Requests sent but not yet written: they go out together, in one write, when the first
    /// of their responses is read.
    pending: Vec<u8>,
    open: bool,
}

impl<S> std::fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.host)
            .field("open", &self.open)
            .finish()
    }
}

impl<S: Read + Write> Connection<S> {
    pub fn new(stream: S, host: impl Into<String>) -> Self {
        Connection {
            host: host.into(),
            reader: BufReader::new(stream),
            pending: Vec::new(),
            open: true,
        }
    }

    /// Whether the server has left the connection usable for another request.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The underlying stream (for timeouts and the like; reading or writing it directly would
    /// break the framing).
    pub fn stream_mut(&mut self) -> &mut S {
        self.reader.get_mut()
    }

    /// Queue one request (asking the server to keep the connection open). Queued requests are
    /// written together when the next response is read.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<(&str, &[u8])>,
    ) -> Result<(), ClientError> {
        let req = request_bytes(&self.host, method, path, headers, body, true)?;
        self.pending.extend_from_slice(&req);
        Ok(())
    }

    /// Read the next response, whose body may be at most `limit` bytes. `method` is the one of
    /// the request it answers.
    pub fn receive(&mut self, method: &str, limit: u64) -> Result<FullResponse, ClientError> {
        let r = self.receive_inner(method, limit);
        if r.is_err() {
            self.open = false;
        }
        r
    }

    /// Write the queued requests now, without waiting for an answer (so that several
    /// connections can have requests in flight at once).
    pub fn flush(&mut self) -> Result<(), ClientError> {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            if let Err(e) = self.reader.get_mut().write_all(&pending) {
                self.open = false;
                return Err(ClientError::Io(e));
            }
        }
        Ok(())
    }

    fn receive_inner(&mut self, method: &str, limit: u64) -> Result<FullResponse, ClientError> {
        self.flush()?;
        let (status, headers, framing) = read_head(&mut self.reader, method)?;
        let too_large =
            || ClientError::Protocol(format!("response body larger than {limit} bytes"));
        let mut body = Vec::new();
        match framing {
            Framing::Length(n) => {
                if n > limit {
                    return Err(too_large());
                }
                body.resize(n as usize, 0);
                self.reader.read_exact(&mut body).map_err(ClientError::Io)?;
            }
            Framing::Chunked => {
                ChunkedReader {
                    inner: &mut self.reader,
                    remaining: 0,
                    done: false,
                }
                .take(limit + 1)
                .read_to_end(&mut body)
                .map_err(ClientError::Io)?;
            }
            Framing::UntilClose => {
                (&mut self.reader)
                    .take(limit + 1)
                    .read_to_end(&mut body)
                    .map_err(ClientError::Io)?;
                self.open = false;
            }
        }
        if body.len() as u64 > limit {
            return Err(too_large());
        }
        let close = headers
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
        if close {
            self.open = false;
        }
        Ok(FullResponse {
            status,
            headers,
            body,
        })
    }
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

    /// Send a request whose body `write_body` streams (chunked, so its length need not be known
    /// in advance), then read the JSON answer. When the daemon answers before the body is
    /// complete (it refused the request), that answer is what is returned.
    pub fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        write_body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<T, ClientError> {
        let stream = self.connect()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(60)))
            .map_err(ClientError::Io)?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: vouchd\r\nConnection: close\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let mut writer = io::BufWriter::with_capacity(
            64 << 10,
            ChunkedWriter {
                inner: stream.try_clone().map_err(ClientError::Io)?,
                framing: false,
            },
        );
        let sent = writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.flush());
        // The head goes out as is; from here on everything written is framed as chunks.
        let sent = sent.and_then(|()| {
            writer.get_mut().framing = true;
            write_body(&mut writer)
        });
        let sent = sent.and_then(|()| {
            writer.flush()?;
            writer.get_mut().framing = false;
            writer.get_mut().inner.write_all(b"0\r\n\r\n")
        });
        let response = match read_response(BufReader::new(stream), "POST") {
            Ok(r) => r,
            // No answer at all: the failure to send is the error.
            Err(e) => return Err(sent.err().map(ClientError::Io).unwrap_or(e)),
        };
        let (status, data) = read_body(response)?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &data));
        }
        sent.map_err(ClientError::Io)?;
        serde_json::from_slice(&data)
            .map_err(|e| ClientError::Protocol(format!("{e} in {path} response")))
    }

    /// [`Client::upload`] of everything `input` gives until its end, each read sent at once
    /// (a process's stdin, typed as it comes).
    pub fn upload_stream<T: DeserializeOwned>(
        &self,
        path: &str,
        mut input: impl Read,
    ) -> Result<T, ClientError> {
        self.upload(path, "application/octet-stream", |w| {
            let mut buf = [0u8; 4096];
            loop {
                let n = input.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                w.write_all(&buf[..n])?;
                w.flush()?;
            }
        })
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
    let (message, code) = match serde_json::from_slice::<ErrorBody>(data) {
        Ok(e) => (e.error, e.code),
        Err(_) => (
            format!(
                "vouchd answered HTTP {status}: {}",
                String::from_utf8_lossy(data).trim()
            ),
            None,
        ),
    };
    ClientError::Api {
        status,
        message,
        code,
    }
}

/// Writes what it is given as `Transfer-Encoding: chunked` pieces once `framing` is set.
struct ChunkedWriter {
    inner: UnixStream,
    framing: bool,
}

impl Write for ChunkedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.framing {
            return self.inner.write(buf);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        self.inner
            .write_all(format!("{:x}\r\n", buf.len()).as_bytes())?;
        self.inner.write_all(buf)?;
        self.inner.write_all(b"\r\n")?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
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

    /// A stream that serves canned bytes and records what is written to it.
    struct Canned {
        input: io::Cursor<Vec<u8>>,
        written: Vec<u8>,
        writes: usize,
    }

    impl Read for Canned {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Canned {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn canned(responses: &[u8]) -> Connection<Canned> {
        Connection::new(
            Canned {
                input: io::Cursor::new(responses.to_vec()),
                written: Vec::new(),
                writes: 0,
            },
            "kbs",
        )
    }

    /// Pipelined requests go out in one write; responses that arrive in one read (one with a
    /// length, one chunked, one bodiless) are each read whole and in order.
    #[test]
    fn pipelined_requests_and_responses() {
        let mut c = canned(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst\
              HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n\
              HTTP/1.1 204 No Content\r\n\r\n",
        );
        c.send("POST", "/a", &[], Some(("application/json", b"{}")))
            .expect("send");
        c.send("GET", "/b", &[("Cookie", "s=1".into())], None)
            .expect("send");
        c.send("DELETE", "/c", &[], None).expect("send");
        assert_eq!(
            c.reader.get_ref().writes,
            0,
            "nothing written before a read"
        );
        let first = c.receive("POST", 100).expect("first");
        assert_eq!((first.status, first.body.as_slice()), (200, &b"first"[..]));
        assert_eq!(
            c.reader.get_ref().writes,
            1,
            "the three requests in one write"
        );
        let written = String::from_utf8(c.reader.get_ref().written.clone()).expect("utf8");
        assert_eq!(written.matches("Connection: keep-alive").count(), 3);
        assert!(written.find("POST /a").expect("a") < written.find("GET /b").expect("b"));
        assert!(written.contains("Cookie: s=1\r\n"));
        let second = c.receive("GET", 100).expect("second");
        assert_eq!(second.body, b"second");
        let third = c.receive("DELETE", 100).expect("third");
        assert_eq!((third.status, third.body.len()), (204, 0));
        assert!(c.is_open());
        // Nothing more: reading again is an error, and the connection is no longer usable.
        assert!(c.receive("GET", 100).is_err());
        assert!(!c.is_open());
    }

    #[test]
    fn connection_close_bounds_and_bad_lengths() {
        let mut c = canned(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
        c.send("GET", "/", &[], None).expect("send");
        assert_eq!(c.receive("GET", 10).expect("ok").body, b"ok");
        assert!(!c.is_open(), "the server said it closes");

        let mut c = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n");
        c.send("GET", "/", &[], None).expect("send");
        let err = c.receive("GET", 10).expect_err("too large");
        assert!(err.to_string().contains("larger than 10 bytes"), "{err}");

        let mut c = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort");
        c.send("GET", "/", &[], None).expect("send");
        assert!(
            c.receive("GET", 100).is_err(),
            "a truncated body is an error"
        );

        let mut c = canned(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n");
        c.send("GET", "/", &[], None).expect("send");
        let err = c.receive("GET", 100).expect_err("bad length");
        assert!(err.to_string().contains("Content-Length"), "{err}");

        let mut c = canned(b"");
        let err = c
            .send("GET", "/", &[("X", "a\r\nInjected: 1".into())], None)
            .expect_err("header injection");
        assert!(err.to_string().contains("line break"), "{err}");
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
