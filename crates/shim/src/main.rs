//! `containerd-shim-vouch-v2`: containerd's runtime v2 Task API over vouchd.
//!
//! containerd starts one shim per container (per pod, when the CRI groups them), and asks it to
//! create, start, signal, wait for and delete the container. This shim runs nothing itself:
//! every container is a vouchd task, created through vouchd's API, so it is verified, measured,
//! listed (`vouch ps`), attested and verified exactly like `vouch run`'s, in vouchd's one event
//! log. What runs is vouch's own verified copy of the image the pod names (annotation
//! `io.kubernetes.cri.image-name`, or else `io.vouch.image` for `ctr run --annotation`), with the
//! process containerd's spec gives (args, env, cwd, user); containerd's unpacked rootfs is not
//! used (docs/DESIGN.md, "containerd").
//!
//! The shim protocol: `start` (in the bundle) starts the serving shim, or finds the pod's, and
//! prints its address; `delete` cleans up after a serving shim that died; with neither, the
//! process serves the Task API on `-socket` (under both its v2 and v3 service names, so
//! containerd 1.6 and 2.x both find it) until its last container is gone.

mod sandbox;
mod service;
mod spec;

use std::os::fd::IntoRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use containerd_shim as shim;
use containerd_shim_protos::protobuf::Message as _;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().collect();
    let flags = match shim::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-vouch-v2: {e}");
            return ExitCode::FAILURE;
        }
    };
    if flags.version {
        println!("containerd-shim-vouch-v2 {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let result = match flags.action.as_str() {
        "start" => start(&flags),
        "delete" => delete(&flags),
        _ => serve(&flags),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("containerd-shim-vouch-v2: {e}");
            ExitCode::FAILURE
        }
    }
}

fn start(flags: &shim::Flags) -> Result<(), String> {
    if flags.namespace.is_empty() || flags.id.is_empty() {
        return Err("start needs -namespace and -id".into());
    }
    // A pod's containers share its shim: the CRI names the pod in each container's spec.
    let grouping = std::fs::read("config.json")
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|s| spec::annotation(&s, spec::CRI_SANDBOX_ID).map(String::from))
        .unwrap_or_else(|| flags.id.clone());
    let opts = shim::StartOpts {
        id: flags.id.clone(),
        namespace: flags.namespace.clone(),
        address: flags.address.clone(),
        publish_binary: flags.publish_binary.clone(),
        ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        debug: flags.debug,
        ..Default::default()
    };
    // Returns once the serving shim listens (it then releases its stdout).
    let (_pid, address) = shim::spawn(opts, &grouping, Vec::new()).map_err(|e| e.to_string())?;
    std::fs::write("address", &address).map_err(|e| format!("cannot write address: {e}"))?;
    // containerd reads the serving shim's PID from the bundle; the pod's shim wrote it beside
    // its socket.
    let socket = address.strip_prefix("unix://").unwrap_or(&address);
    if let Ok(pid) = std::fs::read_to_string(format!("{socket}.pid")) {
        std::fs::write("shim.pid", pid.trim())
            .map_err(|e| format!("cannot write shim.pid: {e}"))?;
    }
    // The plain address: what containerd 1.6 reads, and what later containerd reads as a
    // task API v2 shim.
    print!("{address}");
    Ok(())
}

fn delete(flags: &shim::Flags) -> Result<(), String> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(|e| e.to_string())?
    } else {
        flags.bundle.clone().into()
    };
    let response = service::delete_after_crash(&bundle);
    let mut out = std::io::stdout().lock();
    response
        .write_to_writer(&mut out)
        .map_err(|e| e.to_string())
}

fn serve(flags: &shim::Flags) -> Result<(), String> {
    let path = flags
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&flags.socket)
        .to_string();
    if path.is_empty() {
        return Err("no -socket to serve".into());
    }
    // SAFETY: setting SIGPIPE's disposition: a reader that went away is an error, not death.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    if let Some(dir) = Path::new(&path).parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        // The pod's shim serves already: its address is the answer.
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(&path).is_ok() {
                release_stdout();
                return Ok(());
            }
            std::fs::remove_file(&path).map_err(|e| format!("cannot remove {path}: {e}"))?;
            UnixListener::bind(&path).map_err(|e| format!("cannot listen on {path}: {e}"))?
        }
        Err(e) => return Err(format!("cannot listen on {path}: {e}")),
    };
    let _ = shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id);
    let ttrpc_address =
        std::env::var("TTRPC_ADDRESS").map_err(|_| "TTRPC_ADDRESS is not set".to_string())?;
    let publisher = shim::publisher::RemotePublisher::new(&ttrpc_address)
        .map_err(|e| format!("cannot reach containerd's events at {ttrpc_address}: {e}"))?;
    let exit = Arc::new(shim::ExitSignal::default());
    let tasks: Arc<dyn shim::Task + Send + Sync> = Arc::new(service::Tasks::new(
        &flags.namespace,
        Arc::clone(&exit),
        publisher,
    ));
    // Task API v3 (containerd 2.x) and v2 (containerd 1.x): the same messages.
    let mut methods = containerd_shim_protos::create_task(Arc::clone(&tasks));
    let v2: Vec<_> = containerd_shim_protos::create_task(tasks)
        .into_iter()
        .map(|(name, handler)| {
            (
                name.replace("/containerd.task.v3.Task/", "/containerd.task.v2.Task/"),
                handler,
            )
        })
        .collect();
    methods.extend(v2);
    let mut server = containerd_shim_protos::ttrpc::Server::new()
        .add_listener(listener.into_raw_fd())
        .map_err(|e| e.to_string())?
        .register_service(methods);
    server.start().map_err(|e| e.to_string())?;
    let pid_file = format!("{path}.pid");
    std::fs::write(&pid_file, std::process::id().to_string())
        .map_err(|e| format!("cannot write {pid_file}: {e}"))?;
    release_stdout();
    exit.wait();
    server.shutdown();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&pid_file);
    Ok(())
}

/// The `start` that spawned this process waits for its stdout to close: pointing it at stderr
/// says the server listens.
fn release_stdout() {
    // SAFETY: dup2 of two descriptors this process has.
    unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
}
