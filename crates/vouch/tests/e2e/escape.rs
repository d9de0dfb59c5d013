//! A container trying to get out through the runtime itself: the runtime binary reached
//! through `/proc/self/exe` (CVE-2019-5736), and the kernel surface of new user namespaces.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A stand-in for `ld-linux-x86-64.so.2` with no C library: it reports what `/proc/self/exe`
/// is (its link text, device and inode) and whether it can be opened for writing.
const FAKE_LD_SO: &str = r#"
typedef unsigned long u64;
static long sys(long n, long a, long b, long c) {
    long r;
    __asm__ volatile ("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
static long len(const char *s) { long n = 0; while (s[n]) n++; return n; }
static void put(const char *s) { sys(1, 1, (long)s, len(s)); }
static void putn(u64 v) {
    char b[24]; int i = 23; b[i] = 0;
    do { b[--i] = '0' + v % 10; v /= 10; } while (v);
    put(b + i);
}
struct kstat { u64 dev, ino, nlink; unsigned mode, uid, gid, pad; u64 rdev; long size, blksize, blocks; u64 t[6]; long unused[3]; };
void _start(void) {
    char link[256];
    long n = sys(89, (long)"/proc/self/exe", (long)link, 255);
    if (n < 0) n = 0;
    link[n] = 0;
    struct kstat st;
    long r = sys(4, (long)"/proc/self/exe", (long)&st, 0);
    put("exe "); put(link);
    put(" dev "); putn(r == 0 ? st.dev : 0);
    put(" ino "); putn(r == 0 ? st.ino : 0);
    put("\n");
    sys(60, 0, 0, 0);
}
"#;

/// Compile a C program with no C library (gcc is part of the build tool chain).
fn compile_static(dir: &Path, name: &str, source: &str) -> Option<PathBuf> {
    let src = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    std::fs::write(&src, source).expect("source");
    let out = Command::new("gcc")
        .args([
            "-static",
            "-nostdlib",
            "-no-pie",
            "-O1",
            "-fno-stack-protector",
            "-fno-builtin",
            "-mgeneral-regs-only",
            "-o",
        ])
        .arg(&bin)
        .arg(&src)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(bin),
        other => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "gcc is needed to build the test's ELF interpreter: {other:?}"
            );
            eprintln!("SKIPPED: gcc cannot build a static program here: {other:?}");
            None
        }
    }
}

/// An entrypoint `#!/proc/self/exe` with the image's own ELF interpreter makes the kernel run
/// whatever executable the container's first process came from, with the image's code in it:
/// that must be the sealed copy vouchd made of itself, never the host's vouchd file.
#[test]
fn the_runtime_binary_is_never_reachable_from_a_container() {
    if !require_root("the_runtime_binary_is_never_reachable_from_a_container") {
        return;
    }
    let env = TestEnv::new();
    let Some(fake_ld) = compile_static(env.path(), "fake-ld", FAKE_LD_SO) else {
        return;
    };
    let ld = std::fs::read(&fake_ld).expect("fake ld.so");
    let layout = env.path().join("layout-exe");
    write_layout(
        &layout,
        "exe",
        &[
            busybox_layer(),
            Layer::new()
                .dir("lib64/")
                .file("lib64/ld-linux-x86-64.so.2", 0o755, &ld)
                .file("evil", 0o755, b"#!/proc/self/exe\n")
                .finish(),
        ],
        &["/evil"],
        &[],
    );
    let d = env.start();
    d.ok(&["image", "load", "-i", layout.to_str().expect("utf8")]);
    let out = d.vouch(&["run", "--rm", "exe"]);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("exe "))
        .unwrap_or_else(|| panic!("the interpreter did not run: {text} {}", stderr(&out)));
    // "exe LINK dev N ino N" (the link text may hold spaces: "/memfd:vouchd (deleted)").
    let rest = line.strip_prefix("exe ").expect("exe");
    let (link, numbers) = rest.rsplit_once(" dev ").expect("dev");
    let (dev, ino) = numbers.split_once(" ino ").expect("ino");
    let host = std::fs::metadata(VOUCHD).expect("vouchd");
    assert_ne!(
        (
            dev.parse::<u64>().expect("dev"),
            ino.parse::<u64>().expect("ino")
        ),
        (host.dev(), host.ino()),
        "the container ran inside the host's vouchd binary ({link})"
    );
    assert!(
        link.starts_with("/memfd:vouchd"),
        "the container's first process came from {link}, not the sealed copy"
    );
}
