//! The hints the libraries and vouchd leave to the CLI: a refusal's fix in vouch's flags.

/// What to do about a refusal, in vouch's own flags (the libraries and vouchd name none).
pub(crate) fn hint(e: &anyhow::Error) -> Option<&'static str> {
    use vouch_tee::{snp::SnpError, VerifyError};
    e.chain().find_map(|cause| {
        if let Some(v) = cause.downcast_ref::<VerifyError>() {
            return match v {
                VerifyError::SimNotAllowed => Some("pass --allow-sim to accept it for development"),
                VerifyError::NoCollateral => {
                    Some("give --collateral FILE, --collateral-dir DIR or --pccs URL")
                }
                VerifyError::UntrustedAk { .. } => Some(
                    "pin it with --tpm-ak, or trust the CA that certifies it with --tpm-ak-ca \
                     when the evidence carries its certificate",
                ),
                _ => None,
            };
        }
        match cause.downcast_ref() {
            Some(vouch_api::client::ClientError::NotRunning { .. }) => {
                return Some(
                    "start it with `vouchd`, or point --socket / VOUCH_SOCKET at its socket",
                )
            }
            Some(vouch_api::client::ClientError::Api {
                code: Some(code), ..
            }) => {
                use vouch_api::codes::*;
                return match code.as_str() {
                    CONTAINER_RUNNING => Some("`vouch stop` it first, or `vouch rm --force`"),
                    PORTS_WITH_HOST_NETWORK => Some("drop -p, or run without --network host"),
                    PIDS_LIMIT => Some("give --pids-limit a positive number"),
                    GOLDEN_REQUIRED => {
                        Some("attach one with `vouch golden sign --push`, or pass --golden FILE")
                    }
                    _ => None,
                };
            }
            _ => {}
        }
        match cause.downcast_ref::<SnpError>() {
            Some(SnpError::UnpinnedArk { .. }) => Some("trust it with --trust-ark SHA256"),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::hint;
    use vouch_tee::{snp::SnpError, VerifyError};

    /// The libraries' refusals name no flag; the CLI adds its own, also through context.
    #[test]
    fn refusals_get_this_commands_flags_as_hints() {
        let with = |e: anyhow::Error| hint(&e.context("verification FAILED"));
        assert_eq!(
            with(VerifyError::SimNotAllowed.into()),
            Some("pass --allow-sim to accept it for development")
        );
        assert!(with(VerifyError::NoCollateral.into())
            .is_some_and(|h| h.contains("--collateral-dir DIR")));
        assert!(with(
            VerifyError::UntrustedAk {
                fingerprint: "sha256:00".into()
            }
            .into()
        )
        .is_some_and(|h| h.starts_with("pin it with --tpm-ak")));
        assert_eq!(
            with(
                SnpError::UnpinnedArk {
                    sha256: "00".into(),
                    pinned: "ARK-Milan".into()
                }
                .into()
            ),
            Some("trust it with --trust-ark SHA256")
        );
        let down = vouch_api::client::ClientError::NotRunning {
            socket: "/run/vouch.sock".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert!(with(down.into()).is_some_and(|h| h.contains("--socket / VOUCH_SOCKET")));
        let refused = |code: &str| vouch_api::client::ClientError::Api {
            status: 400,
            message: "refused".into(),
            code: Some(code.into()),
        };
        assert!(with(refused(vouch_api::codes::CONTAINER_RUNNING).into())
            .is_some_and(|h| h.contains("rm --force")));
        assert!(with(refused(vouch_api::codes::PIDS_LIMIT).into())
            .is_some_and(|h| h.contains("--pids-limit")));
        assert!(with(refused(vouch_api::codes::GOLDEN_REQUIRED).into())
            .is_some_and(|h| h.contains("--golden FILE")));
        assert!(
            with(refused(vouch_api::codes::PORTS_WITH_HOST_NETWORK).into())
                .is_some_and(|h| h.contains("--network host"))
        );
        assert_eq!(with(refused("something-new").into()), None);
        assert_eq!(with(VerifyError::BadSignature.into()), None);
        assert_eq!(with(anyhow::anyhow!("other")), None);
    }
}
