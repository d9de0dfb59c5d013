//! Image layer tars, unpacked as vouchd unpacks them: whatever the entries say (`..`, absolute
//! paths, symlinks and hard links pointing out, whiteouts, devices), nothing appears outside
//! the destination.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vouch_image::unpack::{unpack_layer, UnpackLimits};

fuzz_target!(|data: &[u8]| {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let dest = scratch.path().join("rootfs");
    std::fs::create_dir(&dest).expect("rootfs dir");
    let limits = UnpackLimits {
        max_entry_size: 1 << 20,
        max_total_size: 4 << 20,
        max_entries: 1000,
    };
    let _ = unpack_layer(data, &dest, &limits);
    let beside: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("scratch dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("rootfs")], "a layer wrote outside its rootfs");
});
