//! Container networking for the private network namespace: the loopback interface, and published
//! ports relayed from the host into the namespace.
//!
//! A published port is a listening socket in the host's namespace. Each accepted connection is
//! relayed by a thread that has joined the container's network namespace (`setns` is per thread)
//! and connected to `127.0.0.1:PORT` there, so the container needs no virtual interface, no
//! address and no firewall rule: the namespace stays closed to everything but its published ports.

use std::fmt;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Connections relayed at once per container; more wait in the listen backlog.
pub(crate) const MAX_CONNECTIONS: usize = 512;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    #[error("invalid published port {0:?}: expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp]")]
    Syntax(String),
    #[error("invalid published port {spec:?}: {reason}")]
    Value { spec: String, reason: String },
}

/// `[IP:]HOST_PORT:CONTAINER_PORT[/tcp]`, as `docker run -p` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

impl PortMapping {
    /// Parse a mapping; `default_ip` is used when none is given.
    pub fn parse(spec: &str, default_ip: IpAddr) -> Result<Self, PortError> {
        let value = |reason: &str| PortError::Value {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let body = match spec.rsplit_once('/') {
            Some((b, "tcp")) => b,
            Some((_, proto)) => {
                return Err(value(&format!(
                    "protocol {proto:?} is not supported (tcp only)"
                )))
            }
            None => spec,
        };
        // IPv6 addresses come in brackets: [::1]:8080:80.
        let (ip, rest) = if let Some(r) = body.strip_prefix('[') {
            let (ip, rest) = r
                .split_once("]:")
                .ok_or_else(|| PortError::Syntax(spec.into()))?;
            (Some(ip), rest)
        } else {
            match body.matches(':').count() {
                1 => (None, body),
                2 => {
                    let (ip, rest) = body.split_once(':').unwrap_or(("", body));
                    (Some(ip), rest)
                }
                _ => return Err(PortError::Syntax(spec.into())),
            }
        };
        let host_ip = match ip {
            None | Some("") => default_ip,
            Some(ip) => ip
                .parse()
                .map_err(|_| value(&format!("{ip:?} is not an IP address")))?,
        };
        let (host, container) = rest
            .split_once(':')
            .ok_or_else(|| PortError::Syntax(spec.into()))?;
        let port = |p: &str, what: &str| -> Result<u16, PortError> {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(value(&format!("{what} port must be 1-65535"))),
                Ok(n) => Ok(n),
            }
        };
        Ok(PortMapping {
            host_ip,
            host_port: port(host, "host")?,
            container_port: port(container, "container")?,
        })
    }

    /// The form [`PortMapping::parse`] reads back, with the address explicit.
    pub fn to_arg(&self) -> String {
        match self.host_ip {
            IpAddr::V6(ip) => format!("[{ip}]:{}:{}", self.host_port, self.container_port),
            IpAddr::V4(ip) => format!("{ip}:{}:{}", self.host_port, self.container_port),
        }
    }

    pub(crate) fn host_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host_ip, self.host_port)
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            IpAddr::V6(ip) => write!(f, "[{ip}]")?,
            IpAddr::V4(ip) => write!(f, "{ip}")?,
        }
        write!(f, ":{}->{}/tcp", self.host_port, self.container_port)
    }
}

/// Move the calling thread into the network namespace `ns` (a `/proc/PID/ns/net` file).
fn enter(ns: &File) -> io::Result<()> {
    // SAFETY: setns on a valid namespace descriptor; it only changes this thread's namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A network namespace's identity: the device and inode of its nsfs file.
pub type NamespaceId = (u64, u64);

/// The identity of the network namespace at `path` (a `/proc/PID/ns/net` or a bind mount of
/// one); an error that says so when the path is not a network namespace.
pub fn network_namespace(path: &std::path::Path) -> Result<NamespaceId, String> {
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // Non-blocking and never a controlling terminal: whatever the path names (a FIFO, a
    // device), opening it neither waits nor takes it over.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open the network namespace {}: {e}", path.display()))?;
    // NS_GET_NSTYPE, _IO(0xb7, 0x3): the namespace type of an nsfs descriptor.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl with no argument on a descriptor owned here; it fails on any other file.
    let typ = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if typ != libc::CLONE_NEWNET {
        return Err(format!("{} is not a network namespace", path.display()));
    }
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok((meta.dev(), meta.ino()))
}

/// The network namespace of process `pid` (`self` for this one).
pub fn network_namespace_of(pid: &str) -> Result<NamespaceId, String> {
    network_namespace(std::path::Path::new(&format!("/proc/{pid}/ns/net")))
}

/// Bring up the loopback interface of the network namespace `ns`.
pub(crate) fn loopback_up(ns: &File) -> io::Result<()> {
    let ns = ns.try_clone()?;
    // A thread of its own, so this thread's namespace never changes.
    std::thread::spawn(move || -> io::Result<()> {
        enter(&ns)?;
        // SAFETY: a plain datagram socket; the descriptor is owned and closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket() and is owned by nothing else.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq passed by pointer, which
        // lives for the whole call.
        unsafe {
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
                return Err(io::Error::last_os_error());
            }
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("loopback set-up thread panicked"))?
}

/// Bind every published port on the host. Nothing is accepted until [`relay`] runs.
pub fn bind(ports: &[PortMapping]) -> Result<Vec<(PortMapping, TcpListener)>, String> {
    ports
        .iter()
        .map(|p| {
            TcpListener::bind(p.host_addr())
                .map(|l| (*p, l))
                .map_err(|e| match e.kind() {
                    io::ErrorKind::AddrInUse => {
                        format!("cannot publish {p}: {} is already in use", p.host_addr())
                    }
                    _ => format!("cannot publish {p}: {e}"),
                })
        })
        .collect()
}

/// Relay connections on each listener into the namespace `ns`, on background threads, for as
/// long as this process lives.
pub(crate) fn relay(listeners: Vec<(PortMapping, TcpListener)>, ns: File) {
    let ns = Arc::new(ns);
    let active = Arc::new(AtomicUsize::new(0));
    for (port, listener) in listeners {
        let ns = Arc::clone(&ns);
        let active = Arc::clone(&active);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    eprintln!("monitor: {port}: too many connections, refusing one");
                    continue;
                }
                let ns = Arc::clone(&ns);
                let active = Arc::clone(&active);
                std::thread::spawn(move || {
                    if let Err(e) = relay_one(conn, &ns, port.container_port) {
                        eprintln!("monitor: {port}: {e}");
                    }
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
    }
}

/// One connection: join the namespace, connect to the container's port, copy both ways.
fn relay_one(outside: TcpStream, ns: &File, port: u16) -> io::Result<()> {
    enter(ns)?;
    let inside = TcpStream::connect_timeout(
        &SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        Duration::from_secs(5),
    )?;
    let _ = outside.set_nodelay(true);
    let _ = inside.set_nodelay(true);
    let (mut out_r, mut in_w) = (outside.try_clone()?, inside.try_clone()?);
    let upstream = std::thread::spawn(move || {
        let _ = io::copy(&mut out_r, &mut in_w);
        let _ = in_w.shutdown(Shutdown::Write);
    });
    let (mut in_r, mut out_w) = (inside, outside);
    let _ = io::copy(&mut in_r, &mut out_w);
    let _ = out_w.shutdown(Shutdown::Write);
    let _ = upstream.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

    #[test]
    fn docker_port_syntax() {
        let p = PortMapping::parse("8080:80", ANY).expect("parse");
        assert_eq!((p.host_ip, p.host_port, p.container_port), (ANY, 8080, 80));
        let p = PortMapping::parse("127.0.0.1:30001:8080/tcp", ANY).expect("parse");
        assert_eq!(p.to_string(), "127.0.0.1:30001->8080/tcp");
        let p = PortMapping::parse("[::1]:9000:90", ANY).expect("parse");
        assert_eq!(p.to_string(), "[::1]:9000->90/tcp");
        assert_eq!(PortMapping::parse(&p.to_arg(), ANY), Ok(p));
        let p = PortMapping::parse(":9000:90", ANY).expect("parse");
        assert_eq!(p.host_ip, ANY);
        for bad in [
            "80",
            "a:b",
            "1:2:3:4",
            "0:80",
            "80:70000",
            "x.y:1:2",
            "80:80/udp",
            "",
        ] {
            assert!(PortMapping::parse(bad, ANY).is_err(), "{bad} accepted");
        }
    }
}
