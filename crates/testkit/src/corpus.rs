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

/// An SEV-SNP report (the firmware's 1184 bytes) as the `sev` crate (6.x) serializes it into
/// Confidential Containers' `snp` evidence (`attestation_report`), written from the firmware
/// layout: what CoCo's SNP attester sends for that report.
pub fn sev_report_json(b: &[u8]) -> serde_json::Value {
    use serde_json::json;
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
    let bytes = |at: usize, n: usize| json!(b[at..at + n].to_vec());
    let tcb = |at: usize| json!({"fmc": null, "bootloader": b[at], "tee": b[at + 1], "snp": b[at + 6], "microcode": b[at + 7]});
    let version = |at: usize| json!({"major": b[at + 2], "minor": b[at + 1], "build": b[at]});
    json!({
        "version": u32_at(0), "guest_svn": u32_at(4), "policy": u64_at(8),
        "family_id": bytes(0x10, 16), "image_id": bytes(0x20, 16), "vmpl": u32_at(0x30),
        "sig_algo": u32_at(0x34), "current_tcb": tcb(0x38), "plat_info": u64_at(0x40),
        "key_info": u32_at(0x48), "report_data": bytes(0x50, 64), "measurement": bytes(0x90, 48),
        "host_data": bytes(0xC0, 32), "id_key_digest": bytes(0xE0, 48),
        "author_key_digest": bytes(0x110, 48), "report_id": bytes(0x140, 32),
        "report_id_ma": bytes(0x160, 32), "reported_tcb": tcb(0x180),
        "cpuid_fam_id": null, "cpuid_mod_id": null, "cpuid_step": null,
        "chip_id": bytes(0x1A0, 64), "committed_tcb": tcb(0x1E0), "current": version(0x1E8),
        "committed": version(0x1EC), "launch_tcb": tcb(0x1F0),
        "launch_mit_vector": null, "current_mit_vector": null,
        "signature": {"r": bytes(0x2A0, 72), "s": bytes(0x2E8, 72)},
    })
}
