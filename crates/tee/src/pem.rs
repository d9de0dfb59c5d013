//! PEM certificate blocks, as DCAP quotes embed them and AMD serves the ASK/ARK chain.

/// DER certificates of every PEM block in `bytes`, in order.
pub fn certificates(bytes: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(start) = rest.windows(BEGIN.len()).position(|w| w == BEGIN) {
        let body_start = start + BEGIN.len();
        let Some(len) = rest[body_start..].windows(END.len()).position(|w| w == END) else {
            break;
        };
        let body: Vec<u8> = rest[body_start..body_start + len]
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        out.push(
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap_or_default(),
        );
        rest = &rest[body_start + len + END.len()..];
    }
    out
}
