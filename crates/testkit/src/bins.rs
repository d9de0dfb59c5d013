//! The workspace's binaries, as the tests run them.
//!
//! Each binary is its own package, so a test of one package cannot ask cargo for another's
//! binary (`CARGO_BIN_EXE_*` names only its own). The tests run the binaries cargo built beside
//! the test executable, and refuse one that is older than any source file cargo says it was
//! built from (its `.d` file), so a test never passes or fails on a stale build.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

/// The directory cargo puts binaries in (`target/<profile>`): `$VOUCH_BIN_DIR`, else the parent
/// of the test executable's `deps/` directory.
fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VOUCH_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's directory");
    match deps.file_name() {
        Some(n) if n == "deps" => deps.parent().expect("target dir").to_path_buf(),
        _ => deps.to_path_buf(),
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The source files cargo's dep-info file lists for the binary (`a.rs b\ c.rs` after `bin:`).
fn sources(dep_info: &str) -> Vec<PathBuf> {
    let Some((_, list)) = dep_info.lines().next().and_then(|l| l.split_once(": ")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ' ' => {
                if !cur.is_empty() {
                    out.push(PathBuf::from(std::mem::take(&mut cur)));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(PathBuf::from(cur));
    }
    out
}

/// Why `bin` cannot be used as the build of its current sources, if it cannot.
pub fn stale(bin: &Path) -> Option<String> {
    let Some(built) = modified(bin) else {
        return Some(format!("{} is not built", bin.display()));
    };
    let dep_info = bin.with_extension("d");
    let Ok(text) = std::fs::read_to_string(&dep_info) else {
        return Some(format!("{} is missing", dep_info.display()));
    };
    sources(&text)
        .into_iter()
        .find(|src| modified(src).is_some_and(|m| m > built))
        .map(|src| format!("{} is older than {}", bin.display(), src.display()))
}

/// The path of the workspace binary `name`, checked to be built from the current sources.
pub fn path(name: &str) -> PathBuf {
    let bin = bin_dir().join(name);
    if let Some(why) = stale(&bin) {
        panic!("{why}: run `cargo build --workspace --bins` first (scripts/test does)");
    }
    bin
}

macro_rules! binary {
    ($fn:ident, $name:literal) => {
        #[doc = concat!("`", $name, "`, built from the current sources.")]
        pub fn $fn() -> &'static Path {
            static P: OnceLock<PathBuf> = OnceLock::new();
            P.get_or_init(|| path($name))
        }
    };
}

binary!(vouch, "vouch");
binary!(vouchd, "vouchd");
binary!(vouch_kbs, "vouch-kbs");
binary!(vouch_kbs_bench, "vouch-kbs-bench");
binary!(containerd_shim_vouch, "containerd-shim-vouch-v2");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_paths_with_escaped_spaces() {
        let d = "/t/debug/vouchd: /src/a.rs /src/my\\ dir/b.rs\n\n/src/a.rs:\n";
        assert_eq!(
            sources(d),
            vec![
                PathBuf::from("/src/a.rs"),
                PathBuf::from("/src/my dir/b.rs")
            ]
        );
        assert!(sources("no separator").is_empty());
    }

    #[test]
    fn a_binary_older_than_a_source_is_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("tool");
        let src = dir.path().join("main.rs");
        std::fs::write(&src, "fn main() {}").expect("src");
        assert!(stale(&bin).expect("missing").contains("is not built"));
        std::fs::write(&bin, "").expect("bin");
        assert!(stale(&bin).expect("no .d").ends_with("tool.d is missing"));
        std::fs::write(
            dir.path().join("tool.d"),
            format!("{}: {}\n", bin.display(), src.display()),
        )
        .expect("d");
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&bin)
            .and_then(|f| f.set_modified(old))
            .expect("age the binary");
        assert!(stale(&bin).expect("stale").contains("is older than"));
        std::fs::File::options()
            .write(true)
            .open(&bin)
            .and_then(|f| f.set_modified(SystemTime::now() + std::time::Duration::from_secs(60)))
            .expect("touch the binary");
        assert_eq!(stale(&bin), None);
    }
}
