//! A process's input, owned by its monitor: a pty's master side or a stdin pipe, fed through
//! the monitor's attach socket (a 0700 directory only vouchd reaches) in input frames: stdin
//! data, a terminal resize, the end of stdin. Several connections may come over the process's
//! life (vouchd opens one per request, and again after it restarts).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::logframe::{FrameDecoder, CLOSE_STDIN, RESIZE, STDIN};

/// Where the process's input goes.
pub(crate) enum Input {
    /// A terminal's master side; `stdin` false (docker's `-t` without `-i`): resizes only.
    Tty { master: File, stdin: bool },
    /// The write end of the process's stdin pipe.
    Pipe(File),
}

/// Set a terminal's size (columns, rows) on its master side; zero means the default 80x24.
pub(crate) fn set_size(master: &impl AsRawFd, cols: u16, rows: u16) {
    let size = libc::winsize {
        ws_col: if cols == 0 { 80 } else { cols },
        ws_row: if rows == 0 { 24 } else { rows },
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ on a descriptor with a winsize that lives across the call.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
}

/// Removes a socket's path when dropped, so that a monitor leaves none behind on any return.
pub(crate) struct Unlink(pub(crate) std::path::PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Bind a listening socket at `path`, replacing a stale one.
pub(crate) fn listen(path: &Path) -> io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// The pty master libcontainer's init sent on the console socket (runc's protocol: one
/// message, the master as SCM_RIGHTS), waiting at most `timeout` for the connection.
pub(crate) fn receive_console(listener: &UnixListener, timeout: Duration) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the container's terminal was not handed over",
                ))
            }
            Err(e) => return Err(e),
        }
    };
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(timeout))?;
    let mut name = [0u8; 256];
    let mut iov = [io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut master = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in this process for us alone.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if master.is_none() {
                    master = Some(owned);
                }
            }
        }
    }
    let master = master.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the console socket sent no terminal",
        )
    })?;
    // It must be a pty's master side (as runc checks): TIOCGPTN answers only on one.
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int into `n`, which lives across the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the console socket sent something that is not a terminal's master",
        ));
    }
    Ok(master)
}

/// Serve the process's input on the attach socket, each connection on a thread of its own.
pub(crate) fn serve(listener: UnixListener, input: Input) {
    let input = Arc::new(Mutex::new(Some(input)));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let input = Arc::clone(&input);
            std::thread::spawn(move || connection(conn, &input));
        }
    });
}

fn connection(mut conn: std::os::unix::net::UnixStream, input: &Mutex<Option<Input>>) {
    let mut dec = FrameDecoder::for_input();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        dec.push(&buf[..n]);
        loop {
            let (stream, data) = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                // A malformed or oversized frame ends this connection.
                Err(_) => return,
            };
            let mut guard = input.lock().unwrap_or_else(|p| p.into_inner());
            match (stream, guard.as_mut()) {
                (
                    STDIN,
                    Some(Input::Tty {
                        master: f,
                        stdin: true,
                    })
                    | Some(Input::Pipe(f)),
                ) if (&*f).write_all(&data).is_err() => {
                    *guard = None;
                }
                (RESIZE, Some(Input::Tty { master, .. })) if data.len() == 4 => {
                    set_size(
                        master,
                        u16::from_be_bytes([data[0], data[1]]),
                        u16::from_be_bytes([data[2], data[3]]),
                    );
                }
                // The end of stdin: a pipe is closed; a terminal gets its EOF character, as a
                // user typing ^D would send.
                (CLOSE_STDIN, Some(Input::Pipe(_))) => *guard = None,
                (
                    CLOSE_STDIN,
                    Some(Input::Tty {
                        master: f,
                        stdin: true,
                    }),
                ) => {
                    let _ = f.write_all(&[4]);
                }
                _ => {}
            }
        }
    }
}
