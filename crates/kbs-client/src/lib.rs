//! vouch-kbs-client: what a TEE needs to fetch a secret from a KBS, and nothing of the broker.
//!
//! The TEE side of the CoCo KBS protocol (`/kbs/v0/auth`, `/kbs/v0/attest`,
//! `/kbs/v0/resource/...`) over plain TCP or TLS, with an ephemeral P-256 key whose public half
//! is bound into the evidence, and JWE decryption of the resource sent to that key. The admin
//! calls that `vouch-kbs` makes are here too: they are a client of the same listener.
//!
//! It must never log a resource value or a token, and never send evidence that is not bound to
//! the session's nonce and its own key. vouchd, the process inside the TEE, links this crate and
//! not the broker (sessions, policy engine, databases).

pub mod client;
pub mod jwe;
pub mod protocol;
pub mod tls;

pub use client::{
    Binding, FlavourChoice, KbsClient, KbsClientError, KbsFlavour, KbsTrust, ResourcePath,
    SecretRef,
};
pub use protocol::{PROTOCOL_VERSION, QUICK_RESOURCE, SESSION_COOKIE};
