// Shared by the fuzz targets: the real evidence corpus, read once ($VOUCH_VECTORS or
// ../shared/vectors), for the verification paths that need collateral or certificates.

pub fn vector(file: &str) -> Option<Vec<u8>> {
    let dir = std::env::var_os("VOUCH_VECTORS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    std::fs::read(dir.join(file)).ok()
}
