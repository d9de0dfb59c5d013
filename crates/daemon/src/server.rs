//! The REST API on a unix socket. Errors map to HTTP statuses in one place ([`ApiError`]).

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use vouch_api::{AttestRequest, CreateContainer, ErrorBody, LoadImage};
use vouch_base::error_chain;
use vouch_image::StoreError;
use vouch_runtime::logframe;

use vouch_launch::engine::{Engine, EngineError};

type Shared = Arc<Engine>;

/// An error response: a status and one clear line.
pub(crate) struct ApiError(StatusCode, String, Option<&'static str>);

impl ApiError {
    fn new(status: StatusCode, message: String) -> Self {
        ApiError(status, message, None)
    }

    /// The message a client shows.
    pub fn message(&self) -> &str {
        &self.1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.1,
            code: self.2.map(str::to_string),
        };
        (self.0, Json(body)).into_response()
    }
}

/// The one mapping from engine errors to HTTP statuses.
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::NoSuchContainer(_) | EngineError::NoSuchExec(_) => StatusCode::NOT_FOUND,
            EngineError::Store(StoreError::NoSuchImage(_)) => StatusCode::NOT_FOUND,
            EngineError::AmbiguousContainer(_)
            | EngineError::Store(StoreError::Ambiguous { .. })
            | EngineError::Store(StoreError::InvalidName(_)) => StatusCode::BAD_REQUEST,
            EngineError::NameInUse { .. }
            | EngineError::Running(_)
            | EngineError::ImageInUse { .. }
            | EngineError::TaskExists(_)
            | EngineError::Transition { .. }
            | EngineError::Cancelled => StatusCode::CONFLICT,
            EngineError::BadRequest(_)
            | EngineError::Refused { .. }
            | EngineError::Spec(_)
            | EngineError::Load(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %error_chain(&e), "request failed");
        }
        ApiError(status, error_chain(&e), e.code())
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg.into())
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("malformed request body: {e}")))
}

fn flag(q: &HashMap<String, String>, key: &str) -> Result<bool, ApiError> {
    match q.get(key).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(bad_request(format!(
            "query parameter {key}={other:?} must be true or false"
        ))),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal task failed: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

pub fn router(engine: Shared) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/info", get(info))
        .route("/v1/tee", get(tee_info))
        .route("/v1/containers", get(list).post(create))
        .route("/v1/containers/{id}", get(inspect).delete(remove))
        .route("/v1/containers/{id}/logs", get(logs))
        .route("/v1/containers/{id}/wait", post(wait))
        .route("/v1/containers/{id}/spec", get(runtime_spec))
        .route("/v1/containers/{id}/stop", post(stop))
        .route("/v1/containers/{id}/start", post(start))
        .route("/v1/containers/{id}/kill", post(kill))
        .route("/v1/containers/{id}/exec", post(exec))
        .route("/v1/containers/{id}/stdin", post(container_stdin))
        .route("/v1/containers/{id}/resize", post(container_resize))
        .route("/v1/execs/{id}", get(exec_inspect))
        .route("/v1/execs/{id}/logs", get(exec_logs))
        .route("/v1/execs/{id}/wait", post(exec_wait))
        .route("/v1/execs/{id}/kill", post(exec_kill))
        .route("/v1/execs/{id}/stdin", post(exec_stdin))
        .route("/v1/execs/{id}/resize", post(exec_resize))
        .route("/v1/events", get(events))
        .route("/v1/images", get(images))
        .route("/v1/images/load", post(load_image))
        .route("/v1/images/load-path", post(load_image_path))
        .route("/v1/images/pull", post(pull_image))
        .route("/v1/images/{reference}", delete(remove_image))
        .route("/v1/volumes", get(volumes))
        .route("/v1/volumes/{name}", delete(remove_volume))
        .route("/v1/attest", post(attest))
        .route("/metrics", get(metrics))
        .route(
            "/sw/api/v1/container",
            post(conker_create).get(conker_get).delete(conker_delete),
        )
        .route("/sw/api/v1/container/cancel", post(conker_cancel))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such API endpoint (see /v1/openapi.json)".into(),
            )
        })
        .with_state(engine)
}

async fn metrics(State(e): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, vouch_base::metrics::CONTENT_TYPE)],
        e.metrics_text(),
    )
        .into_response()
}

async fn openapi() -> Json<serde_json::Value> {
    Json(vouch_api::openapi::document(env!("CARGO_PKG_VERSION")))
}

async fn info(State(e): State<Shared>) -> Result<Json<vouch_api::Info>, ApiError> {
    blocking(move || e.info()).await.map(Json)
}

async fn tee_info(State(e): State<Shared>) -> Result<Json<vouch_api::TeeInfo>, ApiError> {
    blocking(move || Ok(e.tee_info())).await.map(Json)
}

async fn list(
    State(e): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let all = flag(&q, "all")?;
    Ok(Json(e.list(all)).into_response())
}

async fn create(State(e): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let req: CreateContainer = parse_body(&body)?;
    if req.image.is_empty() {
        return Err(bad_request("an image is required"));
    }
    let view = if req.wait_for_start {
        e.create_held(req).await?
    } else {
        blocking(move || e.create(req)).await?
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn start(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    blocking(move || e.start(&id))
        .await
        .map(|v| Json(v).into_response())
}

/// A signal by number (`9`) or name (`KILL`, `SIGKILL`).
fn parse_signal(text: &str) -> Option<i32> {
    if let Ok(n) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok().map(|s| s as i32);
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

async fn kill(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let signal = signal_of(&q)?;
    blocking(move || e.kill(&id, signal))
        .await
        .map(|v| Json(v).into_response())
}

/// The `signal=` of a kill: a number or a name; SIGKILL by default.
fn signal_of(q: &HashMap<String, String>) -> Result<i32, ApiError> {
    match q.get("signal") {
        Some(t) => parse_signal(t).ok_or_else(|| {
            bad_request(format!(
                "signal {t:?} is not a signal: give a number or a name such as SIGTERM"
            ))
        }),
        None => Ok(nix::sys::signal::Signal::SIGKILL as i32),
    }
}

async fn inspect(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(e.get(&id)?).into_response())
}

async fn remove(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let force = flag(&q, "force")?;
    blocking(move || e.remove(&id, force))
        .await
        .map(|v| Json(v).into_response())
}

async fn stop(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let max = vouch_api::MAX_STOP_TIMEOUT;
    let timeout = match q.get("timeout") {
        Some(t) => t.parse::<u64>().ok().filter(|t| *t <= max).ok_or_else(|| {
            bad_request(format!(
                "timeout {t:?} must be whole seconds from 0 to {max}"
            ))
        })?,
        None => 10,
    };
    blocking(move || e.stop(&id, Duration::from_secs(timeout)))
        .await
        .map(|v| Json(v).into_response())
}

async fn runtime_spec(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    blocking(move || e.runtime_spec(&id))
        .await
        .map(|v| Json(v).into_response())
}

async fn wait(State(e): State<Shared>, UrlPath(id): UrlPath<String>) -> Result<Response, ApiError> {
    Ok(Json(e.wait(&id).await?).into_response())
}

fn stream_body(rx: mpsc::Receiver<Result<Bytes, io::Error>>) -> Body {
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

fn offset_of(q: &HashMap<String, String>) -> Result<u64, ApiError> {
    match q.get("offset") {
        Some(o) => o
            .parse::<u64>()
            .map_err(|_| bad_request(format!("offset {o:?} must be a byte count"))),
        None => Ok(0),
    }
}

async fn logs(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let follow = flag(&q, "follow")?;
    // Where a reader that was cut off (vouchd restarted) takes up the stream again: a byte
    // offset into it, which is one of the frame boundaries it had read up to.
    let offset = offset_of(&q)?;
    let id = e.resolve(&id)?;
    let watch = e.watch(&id)?;
    Ok(follow_log(e.log_path(&id), offset, follow, watch, |c| {
        c.state.is_final()
    }))
}

async fn exec_logs(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let follow = flag(&q, "follow")?;
    let offset = offset_of(&q)?;
    let watch = e.exec_watch(&id)?;
    Ok(follow_log(
        e.exec_log_path(&id)?,
        offset,
        follow,
        watch,
        |end| end.is_some(),
    ))
}

/// A framed log file as a stream: what it holds from `offset`, and with `follow` what is
/// appended until `ended` says the writer is done (checked before the last read, so
/// everything written before the end is delivered).
fn follow_log<T: Send + Sync + 'static>(
    path: std::path::PathBuf,
    offset: u64,
    follow: bool,
    mut watch: tokio::sync::watch::Receiver<T>,
    ended: fn(&T) -> bool,
) -> Response {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        use tokio::io::AsyncSeekExt as _;
        let mut file: Option<tokio::fs::File> = None;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let finished = !follow || ended(&watch.borrow());
            if file.is_none() {
                file = tokio::fs::File::open(&path).await.ok();
                if let Some(f) = file.as_mut() {
                    if offset > 0 && f.seek(io::SeekFrom::Start(offset)).await.is_err() {
                        return;
                    }
                }
            }
            if let Some(f) = file.as_mut() {
                loop {
                    match f.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            if tx
                                .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(err) => {
                            let _ = tx.send(Err(err)).await;
                            return;
                        }
                    }
                }
            }
            if finished {
                return;
            }
            tokio::select! {
                changed = watch.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    (
        [(header::CONTENT_TYPE, logframe::CONTENT_TYPE)],
        stream_body(rx),
    )
        .into_response()
}

async fn exec(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: vouch_api::ExecRequest = parse_body(&body)?;
    blocking(move || e.exec(&id, &req))
        .await
        .map(|v| Json(v).into_response())
}

async fn exec_inspect(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(e.exec_get(&id)?).into_response())
}

async fn exec_wait(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let mut watch = e.exec_watch(&id)?;
    while watch.borrow_and_update().is_none() {
        if watch.changed().await.is_err() {
            break;
        }
    }
    Ok(Json(e.exec_get(&id)?).into_response())
}

/// A connection to the monitor that takes a process's input.
async fn input_conn(path: &Path) -> Result<tokio::net::UnixStream, ApiError> {
    tokio::net::UnixStream::connect(path).await.map_err(|err| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("the process's input is gone (it ended?): {err}"),
        )
    })
}

/// The frame a monitor's input socket reads, as bytes.
fn input_frame(stream: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    let _ = logframe::write_frame(&mut out, stream, data);
    out
}

/// Stream a request body to a process's stdin; the body's end closes it. Until the client
/// ends its body (stdin closed) or the process is gone (its monitor closed the socket).
async fn feed_stdin(mut conn: tokio::net::UnixStream, mut body: Body) {
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncWriteExt as _;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for piece in data.chunks(logframe::MAX_FRAME) {
            if conn
                .write_all(&input_frame(logframe::STDIN, piece))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let _ = conn
        .write_all(&input_frame(logframe::CLOSE_STDIN, &[]))
        .await;
}

/// `cols=` and `rows=` of a resize request, as the input frame carries them.
fn resize_frame(q: &HashMap<String, String>) -> Result<Vec<u8>, ApiError> {
    let size = |k: &str| -> Result<u16, ApiError> {
        q.get(k)
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| bad_request(format!("{k}= must be a number from 1 to 65535")))
    };
    let (cols, rows) = (size("cols")?, size("rows")?);
    let mut data = cols.to_be_bytes().to_vec();
    data.extend_from_slice(&rows.to_be_bytes());
    Ok(input_frame(logframe::RESIZE, &data))
}

async fn send_resize(path: &Path, frame: &[u8]) -> Result<(), ApiError> {
    use tokio::io::AsyncWriteExt as _;
    input_conn(path)
        .await?
        .write_all(frame)
        .await
        .map_err(|err| ApiError::new(StatusCode::CONFLICT, format!("cannot resize: {err}")))
}

async fn exec_stdin(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let conn = input_conn(&e.exec_input(&id)?).await?;
    feed_stdin(conn, body).await;
    Ok(Json(e.exec_get(&id)?).into_response())
}

async fn exec_resize(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let frame = resize_frame(&q)?;
    if !e.exec_get(&id)?.tty {
        return Err(bad_request(
            "the exec has no terminal to resize".to_string(),
        ));
    }
    send_resize(&e.exec_input(&id)?, &frame).await?;
    Ok(Json(e.exec_get(&id)?).into_response())
}

async fn container_stdin(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let (path, view) = e.container_input(&id)?;
    if !view.stdin {
        return Err(bad_request(format!(
            "container {} was created without stdin: run it with -i",
            &view.id[..12]
        )));
    }
    feed_stdin(input_conn(&path).await?, body).await;
    Ok(Json(e.get(&view.id)?).into_response())
}

async fn container_resize(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let frame = resize_frame(&q)?;
    let (path, view) = e.container_input(&id)?;
    if !view.tty {
        return Err(bad_request(format!(
            "container {} has no terminal to resize",
            &view.id[..12]
        )));
    }
    send_resize(&path, &frame).await?;
    Ok(Json(e.get(&view.id)?).into_response())
}

async fn exec_kill(
    State(e): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let signal = signal_of(&q)?;
    blocking(move || e.exec_kill(&id, signal))
        .await
        .map(|v| Json(v).into_response())
}

async fn events(
    State(e): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if !flag(&q, "follow")? {
        return Ok(Json(e.all_events()).into_response());
    }
    let mut sub = e.subscribe_events();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                msg = sub.recv() => match msg {
                    Ok(m) => {
                        let mut line = serde_json::to_vec(&m).unwrap_or_default();
                        line.push(b'\n');
                        if tx.send(Ok(Bytes::from(line))).await.is_err() { return }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        stream_body(rx),
    )
        .into_response())
}

async fn images(State(e): State<Shared>) -> Result<Response, ApiError> {
    blocking(move || e.images())
        .await
        .map(|v| Json(v).into_response())
}

/// Largest archive a client may upload.
const MAX_UPLOAD: u64 = 64 << 30;
/// How long an upload may stall between two pieces.
const UPLOAD_STALL: Duration = Duration::from_secs(60);

/// `POST /v1/images/load[?name=NAME]`: the body is an OCI archive (tar or tar.gz) streamed by
/// the client, as `docker load` does; it goes to a private temporary file in the store and is
/// loaded from there. The daemon never opens a client's path.
async fn load_image(
    State(e): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncWriteExt as _;
    let name = q.get("name").cloned();
    // Checked before the upload is received, not only after.
    if let Some(n) = name.as_deref() {
        vouch_image::reference::check("image name", n).map_err(bad_request)?;
    }
    let engine = e.clone();
    let (path, file) = blocking(move || engine.upload_file()).await?;
    // Written in 1 MiB pieces: each write of a tokio file is a trip to the blocking pool.
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
    let mut body = body;
    let mut size: u64 = 0;
    let received: Result<(), ApiError> = async {
        loop {
            let frame = match tokio::time::timeout(UPLOAD_STALL, body.frame()).await {
                Err(_) => {
                    return Err(ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        format!("the upload stalled for {}s", UPLOAD_STALL.as_secs()),
                    ))
                }
                Ok(None) => return Ok(()),
                Ok(Some(f)) => f.map_err(|err| bad_request(format!("upload failed: {err}")))?,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            size += data.len() as u64;
            if size > MAX_UPLOAD {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the archive is over {MAX_UPLOAD} bytes"),
                ));
            }
            file.write_all(&data).await.map_err(|err| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot keep the upload: {err}"),
                )
            })?;
        }
    }
    .await;
    let flushed = file.flush().await;
    drop(file);
    if let Err(err) = received {
        let _ = std::fs::remove_file(&path);
        return Err(err);
    }
    if size == 0 {
        let _ = std::fs::remove_file(&path);
        return Err(bad_request(
            "no archive came with the request: send an OCI archive (tar or tar.gz) as the body",
        ));
    }
    if let Err(err) = flushed {
        let _ = std::fs::remove_file(&path);
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot keep the upload: {err}"),
        ));
    }
    blocking(move || e.load_uploaded(&path, name.as_deref()))
        .await
        .map(|v| Json(v).into_response())
}

/// `POST /v1/images/load-path`: an archive on the daemon's own host, named explicitly
/// (`vouch image load --daemon-path`).
async fn load_image_path(State(e): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let req: LoadImage = parse_body(&body)?;
    if !Path::new(&req.path).is_absolute() {
        return Err(bad_request(format!(
            "image path {:?} must be absolute",
            req.path
        )));
    }
    blocking(move || e.load_host_archive(&req.path, req.name.as_deref()))
        .await
        .map(|v| Json(v).into_response())
}

async fn pull_image(
    State(e): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: vouch_api::PullImage = parse_body(&body)?;
    if !flag(&q, "progress")? {
        return blocking(move || e.pull_image(&req, &|_| {}))
            .await
            .map(|v| Json(v).into_response());
    }
    // NDJSON: one line per progress event, then {"status":"done","image":...} or
    // {"status":"error","message":...}.
    let (tx, rx) = mpsc::channel(256);
    tokio::task::spawn_blocking(move || {
        let line = |v: &serde_json::Value| {
            let mut l = serde_json::to_vec(v).unwrap_or_default();
            l.push(b'\n');
            Ok(Bytes::from(l))
        };
        let progress = |ev: vouch_image::registry::PullEvent| {
            let v = serde_json::to_value(&ev).unwrap_or_default();
            let _ = tx.blocking_send(line(&v));
        };
        let end = match e.pull_image(&req, &progress) {
            Ok(image) => serde_json::json!({"status": "done", "image": image}),
            Err(err) => {
                serde_json::json!({"status": "error", "message": ApiError::from(err).message()})
            }
        };
        let _ = tx.blocking_send(line(&end));
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        stream_body(rx),
    )
        .into_response())
}

async fn volumes(State(e): State<Shared>) -> Result<Response, ApiError> {
    blocking(move || e.volumes())
        .await
        .map(|v| Json(v).into_response())
}

async fn remove_volume(
    State(e): State<Shared>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    blocking(move || e.remove_volume(&name))
        .await
        .map(|v| Json(v).into_response())
}

async fn remove_image(
    State(e): State<Shared>,
    UrlPath(reference): UrlPath<String>,
) -> Result<Response, ApiError> {
    blocking(move || e.remove_image(&reference))
        .await
        .map(|v| Json(v).into_response())
}

async fn attest(State(e): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let req: AttestRequest = parse_body(&body)?;
    blocking(move || e.attest(&req.nonce))
        .await
        .map(|v| Json(v).into_response())
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another vouchd is already listening on {0}")]
    InUse(String),
    #[error("cannot listen on {path}")]
    Bind {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Bind the socket (mode 0600), refusing to steal one another daemon is serving.
pub fn bind(socket: &Path) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Bind {
        path: socket.display().to_string(),
        source,
    };
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(ServeError::InUse(socket.display().to_string()));
        }
        std::fs::remove_file(socket).map_err(err)?;
    }
    let listener = UnixListener::bind(socket).map_err(err)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Serve until SIGINT or SIGTERM. Containers keep running; their monitors record their exits.
pub async fn serve(listener: UnixListener, engine: Shared) -> io::Result<()> {
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
    };
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(shutdown)
        .await
}

// ---- Conker's API ---------------------------------------------------------------------------

/// Conker's envelope around a result: `{code, message, data}`, with the HTTP status mirrored.
fn conker_reply(result: Result<(String, serde_json::Value), ApiError>) -> Response {
    match result {
        Ok((message, data)) => {
            Json(vouch_launch::conker::envelope(200, &message, data)).into_response()
        }
        Err(ApiError(status, message, _)) => (
            status,
            Json(vouch_launch::conker::envelope(
                status.as_u16(),
                &message,
                serde_json::Value::Null,
            )),
        )
            .into_response(),
    }
}

fn conker_current(e: &Engine) -> Result<(vouch_api::Container, serde_json::Value, bool), ApiError> {
    e.conker_task().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no task: create one with POST /sw/api/v1/container".into(),
        )
    })
}

async fn conker_create(State(e): State<Shared>, body: Bytes) -> Response {
    let req: Result<vouch_launch::conker::ConkerRequest, _> = parse_body(&body);
    conker_reply(match req {
        Ok(req) => blocking(move || e.conker_create(&req))
            .await
            .map(|c| ("task created".to_string(), serde_json::json!({"Id": c.id}))),
        Err(err) => Err(err),
    })
}

async fn conker_get(State(e): State<Shared>) -> Response {
    conker_reply(conker_current(&e).map(|(c, conf, cancel)| {
        (
            "success".to_string(),
            vouch_launch::conker::task_view(&c, &conf, cancel),
        )
    }))
}

async fn conker_delete(State(e): State<Shared>) -> Response {
    let result = match conker_current(&e) {
        Ok((c, _, _)) => blocking(move || e.remove(&c.id, true))
            .await
            .map(|c| ("task deleted".to_string(), serde_json::json!({"Id": c.id}))),
        Err(err) => Err(err),
    };
    conker_reply(result)
}

async fn conker_cancel(State(e): State<Shared>) -> Response {
    let result = match conker_current(&e) {
        Ok((c, _, _)) => blocking(move || e.cancel(&c.id)).await.map(|c| {
            (
                "task cancel requested".to_string(),
                serde_json::json!({"Id": c.id}),
            )
        }),
        Err(err) => Err(err),
    };
    conker_reply(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn router_serves_every_documented_route() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = vouch_launch::DaemonConfig {
            state_dir: dir.path().join("state"),
            socket: dir.path().join("sock"),
            exe: std::path::PathBuf::from("/nonexistent"),
            cgroup_parent: "/vouch-test".into(),
            publish_address: std::net::Ipv4Addr::LOCALHOST.into(),
            image_policy: None,
            registry_timeout: std::time::Duration::from_secs(30),
            golden_keys: Vec::new(),
            require_golden: false,
            registries_d: "/nonexistent".into(),
            insecure_registries: Vec::new(),
            kbs_cas: Vec::new(),
            kbs_timeout: std::time::Duration::from_secs(30),
            kbs_flavour: Default::default(),
            exec_denied: false,
        };
        let sim = std::sync::Arc::new(
            vouch_tee::sim::SimAttester::open(&dir.path().join("sim")).expect("sim"),
        );
        let engine = Engine::open(cfg, sim).expect("engine");
        for (method, path, _) in vouch_api::ROUTES {
            let uri = path
                .replace("{id}", "nosuch")
                .replace("{reference}", "nosuch");
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .body(Body::from("{}"))
                .expect("request");
            let resp = router(engine.clone()).oneshot(req).await.expect("response");
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .expect("body");
            let text = String::from_utf8_lossy(&body);
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not served"
            );
            assert!(
                !text.contains("no such API endpoint"),
                "{method} {path} is documented but not served"
            );
        }
        // And something undocumented is not.
        let req = Request::builder()
            .uri("/v1/nope")
            .body(Body::empty())
            .expect("request");
        assert_eq!(
            router(engine)
                .oneshot(req)
                .await
                .expect("response")
                .status(),
            StatusCode::NOT_FOUND
        );
    }
}
