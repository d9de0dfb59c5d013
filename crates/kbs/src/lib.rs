//! vouch-kbs: a key broker that releases secrets only to attested containers.
//!
//! It speaks the CoCo KBS protocol (`/kbs/v0/auth`, `/kbs/v0/attest`, `/kbs/v0/resource/...`):
//! a session gets a single-use nonce; the TEE answers with evidence whose report data is
//! SHA-384 of the canonical runtime data (nonce + the TEE's ephemeral public key); the KBS
//! verifies it through the `tee` crate, issues an ES256 attestation token, and releases a
//! resource — encrypted to the TEE key as JWE — only when the resource's Rego policy allows it.
//!
//! It must never log a resource value or a token, never release a resource without a policy
//! decision, and never accept `sim` evidence unless started with `--allow-sim`.

pub mod metrics;
pub mod policy;
pub mod server;
pub mod store;
pub mod tls;
pub mod token;

pub use server::{Kbs, KbsConfig, KbsError, QuickMode, QUICK_RESOURCE};

pub use vouch_kbs_client::PROTOCOL_VERSION;
