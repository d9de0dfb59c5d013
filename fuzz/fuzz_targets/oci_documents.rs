//! Image indexes, manifests and configs as a registry or a layout serves them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vouch_image::oci;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = serde_json::from_slice::<oci::Index>(data) {
        for m in &index.manifests {
            let _ = oci::layer_compression(&m.media_type);
        }
    }
    if let Ok(manifest) = serde_json::from_slice::<oci::Manifest>(data) {
        for l in &manifest.layers {
            let _ = oci::layer_compression(&l.media_type);
        }
    }
    let _ = serde_json::from_slice::<oci::ImageConfig>(data);
});
