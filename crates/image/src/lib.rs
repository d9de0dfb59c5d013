//! Images: a content-addressed store, OCI layout import, and safe layer unpacking.
//!
//! Everything here handles untrusted bytes. Every blob is checked against its digest while it is
//! written; every layer is unpacked into a private temporary directory and renamed into place only
//! when complete; no entry may write outside its layer directory, create a device node, or keep a
//! setuid/setgid bit. This crate must never follow a symlink that came from an image.

pub(crate) mod beneath;
pub mod cosign;
pub mod digest;
pub mod golden;
pub mod layout;
pub mod oci;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod simplesign;
pub mod store;
pub mod unpack;

pub use digest::{OciDigest, OciDigestError};
pub use layout::{load, LoadError};
pub use store::{ContentStore, ImageRecord, LayerRecord, RuntimeDefaults, StoreError};
pub use unpack::{unpack_layer, UnpackError, UnpackLimits, UnpackStats};
