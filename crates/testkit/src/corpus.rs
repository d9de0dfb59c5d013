//! The captured evidence corpus the tests read (never copied into the repository).

use std::path::{Path, PathBuf};

/// The evidence vector corpus: `$VOUCH_VECTORS`, else `../shared/vectors` beside the
/// repository. Missing under `CI=true` is a failure; elsewhere callers skip and this says why.
pub fn vectors() -> Option<PathBuf> {
    let dir = std::env::var_os("VOUCH_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"));
    if dir.join("README.md").is_file() {
        return Some(dir);
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "vector corpus missing at {}",
        dir.display()
    );
    eprintln!(
        "SKIPPED: vector corpus not found at {} (set VOUCH_VECTORS)",
        dir.display()
    );
    None
}
