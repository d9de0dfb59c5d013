//! The Intel TDX backend: vouch's register is RTMR3, quotes are DCAP quotes.
//!
//! - `attester` (feature `attest`): quotes through configfs-tsm, RTMR3 extension through the
//!   kernel's measurement-register files or `/dev/tdx_guest`;
//! - [`dcap`], [`collateral`] and the verifier (feature `verify`): the DCAP quote with its
//!   collateral (PCCS or a directory), the TD policy, the CCEL firmware log against RTMR0..2.

#[cfg(feature = "attest")]
mod attester;
#[cfg(feature = "verify")]
pub mod collateral;
#[cfg(feature = "verify")]
pub mod dcap;
#[cfg(feature = "verify")]
mod dcap_tcb;
#[cfg(feature = "verify")]
mod verifier;

#[cfg(feature = "attest")]
pub use attester::{
    request, rtmr_from_tdreport, TdxAttester, DEFAULT_CCEL, DEFAULT_GUEST_DEVICE,
    DEFAULT_MEASUREMENTS, DEFAULT_TSM_REPORT, TDX_CMD_EXTEND_RTMR, TDX_CMD_GET_REPORT0,
};
#[cfg(feature = "verify")]
pub use verifier::check_firmware_log;
#[cfg(feature = "verify")]
pub(crate) use verifier::TdxVerifier;
