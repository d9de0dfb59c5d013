//! OCI layout archives as `vouch image load` takes them: the archive, its index.json, the
//! indexes and manifests it names, their configs, digests and layers. A load either fails or
//! stores what the digests say; nothing is written outside the store.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vouch_image::ContentStore;

fuzz_target!(|data: &[u8]| {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let archive = scratch.path().join("image.tar");
    std::fs::write(&archive, data).expect("archive");
    let store = ContentStore::open(&scratch.path().join("store")).expect("store");
    let _ = vouch_image::layout::load(&store, &archive, None);
    let mut beside: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("scratch dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(beside, ["image.tar", "store"], "a load wrote outside its store");
});
