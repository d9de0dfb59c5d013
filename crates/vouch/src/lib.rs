//! Shared pieces of the vouch binaries (`vouch`, `vouchd`, `vouch-kbs`): presentation only; the
//! logic lives in the library crates.

/// An error and its causes on one line, each cause once.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}
