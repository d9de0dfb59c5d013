//! `vouch run`: a container started, its output streamed back.

use crate::*;

#[derive(ClapArgs)]
pub(crate) struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    pub(crate) detach: bool,
    /// Remove the container when it ends.
    #[arg(long)]
    pub(crate) rm: bool,
    /// Keep the process's stdin open and feed it this one's (with -d: open, fed by nobody).
    #[arg(short, long)]
    pub(crate) interactive: bool,
    /// Give the process a terminal (this one's size, following it; the output is all stdout);
    /// measured, as `process.terminal` in its spec. Needs a terminal here, unless with -d.
    #[arg(short, long)]
    pub(crate) tty: bool,
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass this shell's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines; # comments).
    #[arg(long, value_name = "FILE")]
    pub(crate) env_file: Vec<PathBuf>,
    /// Memory limit, e.g. 64m or 1g.
    #[arg(short, long)]
    pub(crate) memory: Option<String>,
    /// Maximum number of processes.
    #[arg(long)]
    pub(crate) pids_limit: Option<i64>,
    /// CPU limit, e.g. 0.5.
    #[arg(long)]
    pub(crate) cpus: Option<String>,
    /// Network: none (default: a namespace of its own, loopback only), host, container:NAME
    /// (another running container's namespace) or ns:/PATH (a namespace such as a pod's).
    #[arg(long, value_parser = network_mode)]
    pub(crate) network: Option<String>,
    /// The container's hostname (measured); by default the first 12 characters of its id.
    #[arg(long)]
    pub(crate) hostname: Option<String>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    pub(crate) read_only: bool,
    /// Drop a capability from the default set (NET_RAW, CAP_CHOWN, ALL). Repeatable.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub(crate) cap_drop: Vec<String>,
    /// A DNS server for the container's /etc/resolv.conf (measured). Repeatable.
    #[arg(long, value_name = "IP")]
    pub(crate) dns: Vec<std::net::IpAddr>,
    /// A DNS search domain for the container's /etc/resolv.conf. Repeatable.
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub(crate) dns_search: Vec<String>,
    /// A resolver option for the container's /etc/resolv.conf (ndots:5). Repeatable.
    #[arg(long = "dns-option", value_name = "OPTION")]
    pub(crate) dns_option: Vec<String>,
    /// A kernel parameter of the container's own namespaces (measured): IPC ones
    /// (kernel.shm_rmid_forced=1, kernel.msgmax, kernel.sem, fs.mqueue.*) and, off the host's
    /// network, net.* (net.ipv4.ip_unprivileged_port_start=0). Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) sysctl: Vec<String>,
    /// seccomp=PROFILE.json adds an OCI seccomp profile to vouch's own filter (both apply: it
    /// can only take syscalls away; measured); no-new-privileges is always on. Repeatable.
    #[arg(long = "security-opt", value_name = "seccomp=FILE|no-new-privileges")]
    pub(crate) security_opt: Vec<String>,
    /// Not supported: vouch grants no capability beyond the default set.
    #[arg(long = "cap-add", value_name = "CAP", hide = true)]
    pub(crate) cap_add: Vec<String>,
    /// User: NAME, UID, NAME:GROUP or UID:GID (names from the image's /etc/passwd and /etc/group;
    /// a NAME alone also gets the groups that list it as a member).
    #[arg(short, long)]
    pub(crate) user: Option<String>,
    /// Add the container's process to this group too: a name from the image's /etc/group, or a
    /// GID. Repeatable.
    #[arg(long, value_name = "GROUP")]
    pub(crate) group_add: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub(crate) workdir: Option<String>,
    /// Run this instead of the image's entrypoint (its default command is then not used);
    /// "" runs the command given alone.
    #[arg(long, value_name = "COMMAND")]
    pub(crate) entrypoint: Option<String>,
    /// A secret released by a KBS to this container only after attestation:
    /// kbs://HOST:PORT/REPO/TYPE/TAG (kbss:// for a KBS serving TLS), readable at
    /// /secret/REPO/TYPE/TAG
    /// (or at /secret/NAME with `,target=NAME`).
    #[arg(long, value_name = "URL[,target=NAME]")]
    pub(crate) secret: Vec<String>,
    /// Publish a container port on the host: [IP:]HOST_PORT:CONTAINER_PORT[/tcp]
    /// (the address defaults to vouchd's --publish-address).
    #[arg(short, long, value_name = "[IP:]HOST:CONTAINER")]
    pub(crate) publish: Vec<String>,
    /// Mount a named volume (created empty on first use, the container's user's, or writable
    /// by every user with `shared`; kept until removed): NAME:/PATH[:ro|:rw][,shared];
    /// or give a host file or directory read-only, as a copy measured by its content:
    /// HOST_PATH:/PATH:ro (`vouch volume digest HOST_PATH` prints its digest).
    #[arg(short, long, value_name = "NAME:/PATH[:ro]|HOST_PATH:/PATH:ro")]
    pub(crate) volume: Vec<String>,
    /// A signed golden-value document (a file or an http:// URL) the launch must match
    /// (default: the one attached to the image in its registry, if any).
    #[arg(long, value_name = "FILE|URL")]
    pub(crate) golden: Option<PathBuf>,
    /// When to pull the image from its registry: missing (default: when it is not in the
    /// store and names a registry), always, or never.
    #[arg(long, default_value = "missing", value_parser = ["missing", "always", "never"])]
    pub(crate) pull: String,
    /// Reach the image's registry over plain HTTP when pulling.
    #[arg(long)]
    pub(crate) insecure_registry: bool,
    /// Image name, id or digest (REGISTRY/REPOSITORY[:TAG|@DIGEST] is pulled when missing).
    pub(crate) image: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

pub(crate) fn parse_env(args: &RunArgs) -> Result<Vec<String>> {
    let mut env = Vec::new();
    let mut push = |entry: &str, origin: &str| -> Result<()> {
        if entry.contains('=') {
            if entry.starts_with('=') {
                bail!("invalid environment variable {entry:?} in {origin}: the name is empty");
            }
            env.push(entry.to_string());
        } else if let Ok(v) = std::env::var(entry) {
            env.push(format!("{entry}={v}"));
        }
        Ok(())
    };
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read env file {}", file.display()))?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            push(line, &file.display().to_string())?;
        }
    }
    for e in &args.env {
        push(e, "--env")?;
    }
    Ok(env)
}

/// `vouch create`: the container is verified, measured and created; its process waits for
/// `vouch start`.
pub(crate) fn create_container(client: &Client, args: RunArgs) -> Result<u8> {
    if args.rm || args.detach {
        bail!("--rm and --detach are for `vouch run`: a created container waits for `vouch start`, then `vouch rm` removes it");
    }
    let mut req = request(&args)?;
    req.wait_for_start = true;
    req.attach = false;
    let created = create_pulling(client, &args, &req)?;
    println!("{}", created.id);
    Ok(0)
}

fn request(args: &RunArgs) -> Result<CreateContainer> {
    if let Some(cap) = args.cap_add.first() {
        bail!("--cap-add {cap}: vouch grants no capability beyond docker's default set (its seccomp profile and measurement assume it); drop --cap-add");
    }
    let env = parse_env(args)?;
    Ok(CreateContainer {
        image: args.image.clone(),
        name: args.name.clone(),
        cmd: args.command.clone(),
        entrypoint: args.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        env,
        memory: args.memory.clone(),
        pids_limit: args.pids_limit,
        cpus: args.cpus.clone(),
        network: args.network.clone(),
        hostname: args.hostname.clone(),
        read_only: args.read_only,
        cap_drop: args.cap_drop.clone(),
        resolv_conf: resolv_conf(args)?,
        seccomp: added_seccomp(&args.security_opt)?,
        sysctls: args
            .sysctl
            .iter()
            .map(|s| {
                s.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| anyhow::anyhow!("--sysctl {s:?}: expected KEY=VALUE"))
            })
            .collect::<Result<_>>()?,
        user: args.user.clone(),
        group_add: args.group_add.clone(),
        workdir: args.workdir.clone(),
        auto_remove: args.rm,
        attach: !args.detach,
        secrets: args.secret.clone(),
        publish: args.publish.clone(),
        volumes: args
            .volume
            .iter()
            .map(|v| absolute_source(v))
            .collect::<Result<_>>()?,
        tty: args.tty,
        stdin: args.interactive,
        golden: match &args.golden {
            Some(p) => {
                let text = p.to_string_lossy();
                let bytes = if text.starts_with("http://") {
                    vouch_image::simplesign::http_get(&text, 1 << 20)
                        .map_err(|e| anyhow::anyhow!("cannot fetch the golden value: {e}"))?
                        .with_context(|| format!("{text}: not found"))?
                } else {
                    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?
                };
                Some(
                    serde_json::from_slice(&bytes)
                        .with_context(|| format!("{text} is not a signed golden value (JSON)"))?,
                )
            }
            None => None,
        },
        ..Default::default()
    })
}

pub(crate) fn run_container(client: &Client, args: RunArgs) -> Result<u8> {
    let mut req = request(&args)?;
    if req.tty && !args.detach {
        (req.cols, req.rows) = local_terminal(req.stdin)?.unzip();
    }
    let created = create_pulling(client, &args, &req)?;
    follow_and_wait(client, &args, created)
}

/// Create, pulling the image first when `--pull` says so.
fn create_pulling(client: &Client, args: &RunArgs, req: &CreateContainer) -> Result<Container> {
    // `host[:port]/...` or `localhost/...` names a registry (as docker decides it).
    let from_registry = vouch_image::registry::registry_host(&args.image).is_some();
    let pull_args = || PullArgs {
        reference: args.image.clone(),
        insecure_registry: args.insecure_registry,
        username: None,
        password_stdin: false,
        quiet: false,
        json: false,
        report_on_stderr: true,
    };
    if args.pull == "always" {
        pull(client, pull_args())?;
    }
    Ok(match client.call("POST", "/v1/containers", Some(req)) {
        Err(vouch_api::ClientError::Api { message, .. })
            if args.pull == "missing" && from_registry && message.starts_with("no such image") =>
        {
            pull(client, pull_args())?;
            client.call("POST", "/v1/containers", Some(req))?
        }
        other => other?,
    })
}

/// The terminal's size (columns, rows), if fd is a terminal.
fn terminal_size(fd: i32) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct it is given, which lives across it.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// Check that this process has a terminal to lend a remote one that takes input (as docker,
/// a remote terminal without input needs none here), and block SIGWINCH for the resize thread
/// (before any thread starts); this terminal's size, if it has one.
fn local_terminal(input: bool) -> Result<Option<(u16, u16)>> {
    use std::io::IsTerminal as _;
    if !io::stdin().is_terminal() {
        if input {
            bail!("the input device is not a TTY: run without -t, or from a terminal");
        }
        return Ok(None);
    }
    let _ = winch().thread_block();
    Ok(local_size())
}

/// The seccomp profile `--security-opt seccomp=FILE` adds, if one does; the other options
/// vouch has (no-new-privileges, always on) or refuses.
fn added_seccomp(options: &[String]) -> Result<Option<serde_json::Value>> {
    let mut profile = None;
    for o in options {
        let (key, value) = o.split_once(['=', ':']).unwrap_or((o.as_str(), ""));
        match (key, value) {
            ("no-new-privileges", "" | "true") => {}
            ("seccomp", "unconfined") => bail!(
                "--security-opt seccomp=unconfined: vouch's seccomp filter always applies (a profile given is added to it)"
            ),
            ("seccomp", path) if !path.is_empty() => {
                if profile.is_some() {
                    bail!("--security-opt seccomp= is given twice");
                }
                let text = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("--security-opt seccomp={path}: {e}"))?;
                profile = Some(serde_json::from_slice(&text).map_err(|e| {
                    anyhow::anyhow!("--security-opt seccomp={path}: not JSON: {e}")
                })?);
            }
            _ => bail!(
                "--security-opt {o}: vouch takes seccomp=FILE and no-new-privileges (its other settings are its own, measured)"
            ),
        }
    }
    Ok(profile)
}

/// The /etc/resolv.conf that `--dns`, `--dns-search` and `--dns-option` say, if any do.
fn resolv_conf(args: &RunArgs) -> Result<Option<String>> {
    if args.dns.is_empty() && args.dns_search.is_empty() && args.dns_option.is_empty() {
        return Ok(None);
    }
    for word in args.dns_search.iter().chain(&args.dns_option) {
        if word.is_empty() || word.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("--dns-search and --dns-option take one word each, got {word:?}");
        }
    }
    let mut text = String::new();
    for ip in &args.dns {
        text.push_str(&format!("nameserver {ip}\n"));
    }
    if !args.dns_search.is_empty() {
        text.push_str(&format!("search {}\n", args.dns_search.join(" ")));
    }
    if !args.dns_option.is_empty() {
        text.push_str(&format!("options {}\n", args.dns_option.join(" ")));
    }
    Ok(Some(text))
}

/// A `--network` value of a form vouchd knows (vouchd checks what it names).
fn network_mode(s: &str) -> Result<String, String> {
    vouch_api::NetworkMode::parse(s).map(|_| s.to_string())
}

/// This terminal's size, from stdout or else stdin.
fn local_size() -> Option<(u16, u16)> {
    terminal_size(1).or_else(|| terminal_size(0))
}

/// The signal a terminal's size change sends.
fn winch() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGWINCH);
    set
}

/// Feed this process's stdin to the process at `base` (`/v1/execs/ID` or
/// `/v1/containers/ID`), and with a terminal, this terminal's size as it changes; the local
/// terminal is raw until the guard returned drops.
fn attach_input(
    client: &Client,
    base: &str,
    tty: bool,
    stdin: bool,
) -> Result<Option<RawTerminal>> {
    use std::io::IsTerminal as _;
    let tty = tty && io::stdin().is_terminal();
    let raw = if tty {
        Some(RawTerminal::enter()?)
    } else {
        None
    };
    if stdin {
        let client = client.clone();
        let path = format!("{base}/stdin");
        std::thread::spawn(move || {
            let _ = client.upload_stream::<serde_json::Value>(&path, io::stdin().lock());
        });
    }
    if tty {
        let client = client.clone();
        let base = base.to_string();
        std::thread::spawn(move || {
            let winch = winch();
            while winch.wait().is_ok() {
                if let Some((cols, rows)) = local_size() {
                    let _ = client.call::<serde_json::Value>(
                        "POST",
                        &format!("{base}/resize?cols={cols}&rows={rows}"),
                        None::<&()>,
                    );
                }
            }
        });
    }
    Ok(raw)
}

/// The local terminal in raw mode while a remote terminal is attached; restored on drop.
struct RawTerminal(nix::sys::termios::Termios);

impl RawTerminal {
    fn enter() -> Result<RawTerminal> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = io::stdin();
        let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).context("cannot set the terminal raw")?;
        Ok(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(io::stdin(), SetArg::TCSANOW, &self.0);
    }
}

/// `vouch exec`: run the process, relay its output (and with -i its input, with -t through a
/// terminal that follows this one's size), exit with its exit code.
pub(crate) fn exec(
    client: &Client,
    container: &str,
    req: &vouch_api::ExecRequest,
    detach: bool,
) -> Result<u8> {
    let mut req = req.clone();
    if req.tty {
        (req.cols, req.rows) = local_terminal(req.stdin)?.unzip();
    }
    if detach && (req.tty || req.stdin) {
        bail!("-d does not go with -i or -t: nothing would feed the process's input");
    }
    let started: vouch_api::Exec = client.call(
        "POST",
        &format!("/v1/containers/{}/exec", crate::seg(container)),
        Some(&req),
    )?;
    if detach {
        println!("{}", started.id);
        return Ok(0);
    }
    let raw = attach_input(
        client,
        &format!("/v1/execs/{}", started.id),
        req.tty,
        req.stdin,
    )?;
    let resp = client.stream("GET", &format!("/v1/execs/{}/logs?follow=true", started.id))?;
    demux(resp.body)?;
    let done: vouch_api::Exec = client.call(
        "POST",
        &format!("/v1/execs/{}/wait", started.id),
        None::<&()>,
    )?;
    drop(raw);
    match done.exit_code {
        Some(code) => Ok(code.clamp(0, 255) as u8),
        None => bail!(
            "exec {} ended without an exit status",
            format::short_id(&done.id)
        ),
    }
}

fn follow_and_wait(client: &Client, args: &RunArgs, created: Container) -> Result<u8> {
    if args.detach {
        println!("{}", created.id);
        return Ok(0);
    }
    let raw = attach_input(
        client,
        &format!("/v1/containers/{}", created.id),
        args.tty,
        args.interactive,
    )?;
    let resp = client.stream(
        "GET",
        &format!("/v1/containers/{}/logs?follow=true", created.id),
    )?;
    demux(resp.body)?;
    let done: WaitResponse = client.call(
        "POST",
        &format!("/v1/containers/{}/wait", created.id),
        None::<&()>,
    )?;
    drop(raw);
    if done.oom_killed {
        eprintln!(
            "vouch: container {} was killed by the OOM killer (memory limit reached)",
            format::short_id(&created.id)
        );
    }
    match (done.state, done.exit_code) {
        (TaskState::Exited, Some(code)) => Ok(code.clamp(0, 255) as u8),
        (_, _) => {
            bail!(
                "container {} ended without an exit status: {}",
                format::short_id(&created.id),
                done.error.unwrap_or_default()
            )
        }
    }
}

/// Copy a multiplexed log stream to stdout and stderr.
pub(crate) fn demux(mut body: Box<dyn Read + Send>) -> Result<()> {
    let mut dec = FrameDecoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    let stdout = io::stdout();
    let stderr = io::stderr();
    loop {
        let n = body
            .read(&mut buf)
            .context("reading the container's output")?;
        if n == 0 {
            break;
        }
        dec.push(&buf[..n]);
        while let Some((stream, data)) = dec.next_frame()? {
            if stream == STDERR {
                let mut e = stderr.lock();
                e.write_all(&data)?;
                e.flush()?;
            } else {
                let mut o = stdout.lock();
                o.write_all(&data)?;
                o.flush()?;
            }
        }
    }
    Ok(())
}

/// A `-v` whose source is a relative host path (`./conf:/etc/app:ro`), with the source made
/// absolute (vouchd resolves nothing against the client's directory); others as given.
fn absolute_source(volume: &str) -> Result<String> {
    let Some((source, rest)) = volume.split_once(':') else {
        return Ok(volume.to_string());
    };
    if !(source == "." || source == ".." || source.starts_with("./") || source.starts_with("../")) {
        return Ok(volume.to_string());
    }
    let path = std::path::absolute(source)
        .map_err(|e| anyhow::anyhow!("cannot resolve the volume source {source}: {e}"))?;
    // Normalized: `..` and `.` components resolved lexically, as docker does.
    let mut clean = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::CurDir => {}
            other => clean.push(other),
        }
    }
    Ok(format!("{}:{rest}", clean.display()))
}
