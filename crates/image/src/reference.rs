//! Image names: what may be kept and shown as the name of an image.
//!
//! Names come from outside (an OCI layout's `org.opencontainers.image.ref.name`, a registry
//! reference, a `--name` flag) and are shown in tables and logs, so they are held to the
//! reference grammar of the OCI image layout (`component ("/" component)*`, a component being
//! alphanumerics joined by `-._:@+`), which every docker-style reference also meets
//! (`registry.example:5000/team/app:1.2@sha256:...`). Nothing else is kept: no spaces, no control
//! or non-ASCII characters, no empty components.

/// Longest name kept.
pub(crate) const MAX_NAME: usize = 512;

fn separator(b: u8) -> bool {
    matches!(b, b'-' | b'.' | b'_' | b':' | b'@' | b'+')
}

/// Whether `name` meets the reference grammar.
pub fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('/').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || separator(*x))
        })
}

/// The reason a name is refused, for error messages.
pub(crate) const GRAMMAR: &str =
    "an image name is letters and digits joined by - . _ : @ +, in components separated by /";

/// Nothing if `name` meets the grammar; otherwise the one-line refusal, calling it `what`
/// ("image name", "image reference").
pub fn check(what: &str, name: &str) -> Result<(), String> {
    if valid(name) {
        Ok(())
    } else {
        Err(format!("invalid {what} {name:?}: {GRAMMAR}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_grammar() {
        for good in [
            "busybox",
            "bb",
            "registry.example/team/app:1.2",
            "127.0.0.1:5000/test/bb:latest",
            "localhost/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a__b/c--d/e+f:Tag.1",
        ] {
            assert!(valid(good), "{good}");
        }
        for bad in [
            "",
            "bad name",
            "x\u{1b}[2K",
            "row\nfake",
            "\u{202e}evil",
            "café",
            "/abs",
            "trailing/",
            "a//b",
            "-lead",
            "trail-",
            "tab\there",
            &"a".repeat(MAX_NAME + 1),
        ] {
            assert!(!valid(bad), "{bad:?}");
        }
    }
}
