//! AMD SEV-SNP attestation reports, verified against the VCEK <- ASK <- ARK chain: RSA-PSS
//! (SHA-384) certificate signatures, an ECDSA P-384 report signature by the VCEK, the VCEK's TCB
//! extensions equal to the report's `reported_tcb`, and a policy that refuses debug guests and can
//! require a minimum TCB. AMD VCEK certificates carry serial number 0, which the parser accepts.

use der::{Decode, Encode};
use num_bigint::BigUint;
use serde::Serialize;
use sha2::Digest as _;
use x509_cert::Certificate;

use crate::asn1::der_tlv;

pub(crate) const REPORT_LEN: usize = 0x4A0;
const SIGNED_LEN: usize = 0x2A0;
const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const TCB_OIDS: [(&str, &str); 4] = [
    ("1.3.6.1.4.1.3704.1.3.1", "bootloader"),
    ("1.3.6.1.4.1.3704.1.3.2", "tee"),
    ("1.3.6.1.4.1.3704.1.3.3", "snp"),
    ("1.3.6.1.4.1.3704.1.3.8", "microcode"),
];
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnpError {
    #[error("attestation report is {0} bytes, expected {REPORT_LEN}")]
    ReportLength(usize),
    #[error("attestation report: {0}")]
    Report(String),
    #[error("certificate {which}: {reason}")]
    Certificate { which: &'static str, reason: String },
    #[error("{which} signature does not verify")]
    Signature { which: &'static str },
    #[error("VCEK {field} TCB is {vcek}, the report's reported_tcb says {report}")]
    Tcb {
        field: &'static str,
        vcek: u64,
        report: u64,
    },
    #[error("policy refused the report: {0}")]
    Policy(String),
    #[error("certificate ARK: not a pinned AMD root key (its SHA-256 is {sha256}; vouch pins {pinned}): trust another product's ARK by its SHA-256")]
    UnpinnedArk { sha256: String, pinned: String },
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl std::fmt::Display for Tcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bootloader {}, tee {}, snp {}, microcode {}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

impl Tcb {
    fn from_u64(v: u64) -> Tcb {
        let b = v.to_le_bytes();
        Tcb {
            bootloader: b[0],
            tee: b[1],
            snp: b[6],
            microcode: b[7],
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SnpClaims {
    pub version: u32,
    pub guest_svn: u32,
    pub policy: String,
    pub debug: bool,
    pub vmpl: u32,
    pub measurement: String,
    pub report_data: String,
    pub host_data: String,
    pub chip_id: String,
    pub reported_tcb: Tcb,
    /// The key that signed the report, as the report says (SIGNING_KEY, bits 2-4 at 0x48):
    /// `vcek` (chip-unique) or `vlek` (a cloud provider's, certified through the ASVK).
    pub signing_key: String,
}

impl SnpClaims {
    /// The claims under the names a KBS policy reads them by (`input.tee.platform`), the same
    /// as in `vouch verify --snp-report --json`'s `platform`: `measurement` (the default KBS
    /// policy's boot measurement), `vmpl`, `signing_key`, `debug`, `policy`, `host_data`,
    /// `chip_id`, `guest_svn`, and the reported TCB as `tcb_bootloader`, `tcb_tee`, `tcb_snp`,
    /// `tcb_microcode`; every value a string.
    pub fn platform_claims(&self) -> std::collections::BTreeMap<String, String> {
        let t = self.reported_tcb;
        [
            ("measurement", self.measurement.to_ascii_lowercase()),
            ("vmpl", self.vmpl.to_string()),
            ("signing_key", self.signing_key.clone()),
            ("debug", self.debug.to_string()),
            ("policy", self.policy.clone()),
            ("host_data", self.host_data.to_ascii_lowercase()),
            ("chip_id", self.chip_id.to_ascii_lowercase()),
            ("guest_svn", self.guest_svn.to_string()),
            ("tcb_bootloader", t.bootloader.to_string()),
            ("tcb_tee", t.tee.to_string()),
            ("tcb_snp", t.snp.to_string()),
            ("tcb_microcode", t.microcode.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// A report given as hex text (as some tools print it) instead of raw bytes: decoded; raw bytes
/// are returned as they are.
pub(crate) fn report_bytes(input: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let text: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if input.len() != REPORT_LEN && text.len() == 2 * REPORT_LEN {
        if let Ok(raw) = hex::decode(&text) {
            return std::borrow::Cow::Owned(raw);
        }
    }
    std::borrow::Cow::Borrowed(input)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parse the fields of a report (no verification).
pub fn parse_report(report: &[u8]) -> Result<SnpClaims, SnpError> {
    if report.len() != REPORT_LEN {
        return Err(SnpError::ReportLength(report.len()));
    }
    let version = le32(report, 0);
    if !(2..=5).contains(&version) {
        return Err(SnpError::Report(format!(
            "unsupported report version {version}"
        )));
    }
    let sig_algo = le32(report, 0x34);
    if sig_algo != 1 {
        return Err(SnpError::Report(format!(
            "signature algorithm {sig_algo} is not ECDSA P-384 with SHA-384"
        )));
    }
    let policy = le64(report, 0x08);
    Ok(SnpClaims {
        version,
        guest_svn: le32(report, 0x04),
        policy: format!("{policy:#x}"),
        // Policy bit 19: debugging allowed.
        debug: policy & (1 << 19) != 0,
        vmpl: le32(report, 0x30),
        measurement: hex::encode(&report[0x90..0xC0]),
        report_data: hex::encode(&report[0x50..0x90]),
        host_data: hex::encode(&report[0xC0..0xE0]),
        chip_id: hex::encode(&report[0x1A0..0x1E0]),
        reported_tcb: Tcb::from_u64(le64(report, 0x180)),
        signing_key: match (le32(report, 0x48) >> 2) & 0x7 {
            0 => "vcek".into(),
            1 => "vlek".into(),
            other => {
                return Err(SnpError::Report(format!(
                    "signing key {other} is neither the VCEK (0) nor a VLEK (1)"
                )))
            }
        },
    })
}

fn cert_err(which: &'static str) -> impl Fn(String) -> SnpError {
    move |reason| SnpError::Certificate { which, reason }
}

/// (n, e) of an RSA SubjectPublicKeyInfo (DER RSAPublicKey: SEQUENCE { INTEGER, INTEGER }).
fn rsa_key(cert: &Certificate, which: &'static str) -> Result<(BigUint, BigUint), SnpError> {
    let raw = cert
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes();
    let bad = || cert_err(which)("subject key is not a DER RSAPublicKey".into());
    let (tag, seq, _) = der_tlv(raw).ok_or_else(bad)?;
    let (t1, n, rest) = der_tlv(seq).ok_or_else(bad)?;
    let (t2, e, _) = der_tlv(rest).ok_or_else(bad)?;
    if tag != 0x30 || t1 != 0x02 || t2 != 0x02 {
        return Err(bad());
    }
    Ok((BigUint::from_bytes_be(n), BigUint::from_bytes_be(e)))
}

fn mgf1_sha384(seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 48);
    let mut counter: u32 = 0;
    while out.len() < len {
        out.extend_from_slice(
            &sha2::Sha384::new()
                .chain_update(seed)
                .chain_update(counter.to_be_bytes())
                .finalize(),
        );
        counter += 1;
    }
    out.truncate(len);
    out
}

/// RSASSA-PSS verification (RFC 8017 9.1.2) with SHA-384, MGF1-SHA-384 and a 48-byte salt.
fn rsa_pss_sha384_verify(n: &BigUint, e: &BigUint, message: &[u8], sig: &[u8]) -> bool {
    const H: usize = 48;
    const SALT: usize = 48;
    let mod_bits = n.bits() as usize;
    let k = mod_bits.div_ceil(8);
    if sig.len() != k {
        return false;
    }
    let s = BigUint::from_bytes_be(sig);
    if &s >= n {
        return false;
    }
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    let m = s.modpow(e, n).to_bytes_be();
    if m.len() > em_len {
        return false;
    }
    let mut em = vec![0u8; em_len - m.len()];
    em.extend_from_slice(&m);
    if em_len < H + SALT + 2 || em[em_len - 1] != 0xbc {
        return false;
    }
    let (masked_db, rest) = em.split_at(em_len - H - 1);
    let h = &rest[..H];
    let zero_bits = 8 * em_len - em_bits;
    if zero_bits > 0 && masked_db[0] >> (8 - zero_bits) != 0 {
        return false;
    }
    let mut db: Vec<u8> = masked_db
        .iter()
        .zip(mgf1_sha384(h, masked_db.len()))
        .map(|(a, b)| a ^ b)
        .collect();
    if zero_bits > 0 {
        db[0] &= 0xff >> zero_bits;
    }
    let ps_len = em_len - H - SALT - 2;
    if db[..ps_len].iter().any(|b| *b != 0) || db[ps_len] != 0x01 {
        return false;
    }
    let salt = &db[db.len() - SALT..];
    let m_hash = sha2::Sha384::digest(message);
    let h2 = sha2::Sha384::new()
        .chain_update([0u8; 8])
        .chain_update(m_hash)
        .chain_update(salt)
        .finalize();
    h2.as_slice() == h
}

fn verify_cert_signature(
    cert: &Certificate,
    issuer: &Certificate,
    which: &'static str,
) -> Result<(), SnpError> {
    if cert.signature_algorithm().oid.to_string() != OID_RSASSA_PSS {
        return Err(cert_err(which)(format!(
            "signature algorithm {} is not RSASSA-PSS",
            cert.signature_algorithm().oid
        )));
    }
    // The outer algorithm is not covered by the signature; RFC 5280 requires it to equal the
    // signed copy inside the TBS certificate.
    if cert.signature_algorithm() != cert.tbs_certificate().signature() {
        return Err(cert_err(which)(
            "signature algorithm differs from the one inside the signed certificate".into(),
        ));
    }
    if cert.tbs_certificate().issuer() != issuer.tbs_certificate().subject() {
        return Err(cert_err(which)(
            "issuer does not match the signing certificate's subject".into(),
        ));
    }
    let (n, e) = rsa_key(issuer, which)?;
    let tbs = cert
        .tbs_certificate()
        .to_der()
        .map_err(|e| cert_err(which)(e.to_string()))?;
    let sig = cert.signature().raw_bytes();
    if rsa_pss_sha384_verify(&n, &e, &tbs, sig) {
        Ok(())
    } else {
        Err(SnpError::Signature { which })
    }
}

fn check_validity(cert: &Certificate, which: &'static str, now: u64) -> Result<(), SnpError> {
    let v = cert.tbs_certificate().validity();
    let (from, to) = (
        v.not_before.to_unix_duration().as_secs(),
        v.not_after.to_unix_duration().as_secs(),
    );
    if now < from || now > to {
        return Err(cert_err(which)(format!(
            "not valid at {now} (valid {from}..{to})"
        )));
    }
    Ok(())
}

/// A small non-negative DER INTEGER.
fn small_uint(der_bytes: &[u8]) -> Option<u64> {
    let (tag, b, rest) = der_tlv(der_bytes)?;
    (tag == 0x02 && rest.is_empty() && !b.is_empty() && b.len() <= 9 && b[0] & 0x80 == 0)
        .then(|| b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64))
}

/// AMD root keys (ARK) vouch trusts, by product: SHA-256 of the certificate's DER.
pub(crate) const AMD_ARKS: &[(&str, &str)] = &[(
    "Milan",
    "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
)];

/// Verify a report against its VCEK (DER) and the ASK/ARK chain (PEM, ASK first), at `now`.
/// The ARK must be one of [`AMD_ARKS`].
pub fn verify_report(
    report: &[u8],
    vcek_der: &[u8],
    chain_pem: &[u8],
    now: u64,
) -> Result<SnpClaims, SnpError> {
    verify_report_with_roots(report, vcek_der, chain_pem, now, &[])
}

/// Like [`verify_report`], also trusting the ARKs whose DER SHA-256 (hex) is in `extra_arks`
/// (for products vouch does not pin yet).
pub fn verify_report_with_roots(
    report: &[u8],
    vcek_der: &[u8],
    chain_pem: &[u8],
    now: u64,
    extra_arks: &[String],
) -> Result<SnpClaims, SnpError> {
    let report = &*report_bytes(report);
    let claims = parse_report(report)?;
    let vcek = Certificate::from_der(vcek_der).map_err(|e| cert_err("VCEK")(e.to_string()))?;
    // The report says which kind of key signed it; AMD names the certificate of each kind
    // (CN SEV-VCEK, issued by the ASK; CN SEV-VLEK, issued by the ASVK): they must agree.
    let want = if claims.signing_key == "vlek" {
        "SEV-VLEK"
    } else {
        "SEV-VCEK"
    };
    let subject = vcek.tbs_certificate().subject().to_string();
    let cn = subject
        .split(',')
        .find_map(|rdn| rdn.trim().strip_prefix("CN="))
        .unwrap_or_default();
    if cn != want {
        return Err(cert_err("VCEK")(format!(
            "the report says it is signed by a {}, but the certificate given is {cn:?}, not {want}",
            claims.signing_key.to_ascii_uppercase()
        )));
    }
    // A bundle of AMD certificates in any order (ASK, ARK, ASVK, as AMD's KDS and Trustee ship
    // them): the intermediate is the one whose subject is the signing key's issuer, the root the
    // self-issued one whose subject is the intermediate's issuer.
    let mut chain = Vec::new();
    for der in crate::pem::certificates(chain_pem) {
        let c = Certificate::from_der(&der).map_err(|e| cert_err("ASK/ARK")(e.to_string()))?;
        chain.push((der, c));
    }
    let name = |c: &Certificate| c.tbs_certificate().subject().to_string();
    let issuer = |c: &Certificate| c.tbs_certificate().issuer().to_string();
    let (_, ask) = chain
        .iter()
        .find(|(_, c)| name(c) == issuer(&vcek) && name(c) != issuer(c))
        .cloned()
        .ok_or_else(|| {
            cert_err("ASK")(format!(
                "none of the {} certificates of the chain is the signing key's issuer {:?} (give the ASK, or the ASVK for a VLEK, with the ARK)",
                chain.len(),
                issuer(&vcek)
            ))
        })?;
    let (ark_der, ark) = chain
        .iter()
        .find(|(_, c)| name(c) == issuer(&ask) && name(c) == issuer(c))
        .cloned()
        .ok_or_else(|| {
            cert_err("ARK")(format!(
                "none of the certificates of the chain is the self-signed root {:?} that issued the intermediate",
                issuer(&ask)
            ))
        })?;
    let ark_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&ark_der));
    let pinned = AMD_ARKS.iter().any(|(_, h)| *h == ark_sha256)
        || extra_arks
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&ark_sha256));
    if !pinned {
        return Err(SnpError::UnpinnedArk {
            sha256: ark_sha256,
            pinned: AMD_ARKS
                .iter()
                .map(|(p, _)| format!("ARK-{p}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    for (c, which) in [(&vcek, "VCEK"), (&ask, "ASK"), (&ark, "ARK")] {
        check_validity(c, which, now)?;
    }
    verify_cert_signature(&ark, &ark, "ARK")?;
    verify_cert_signature(&ask, &ark, "ASK")?;
    verify_cert_signature(&vcek, &ask, "VCEK")?;

    // The report's signature by the VCEK: ECDSA P-384 over the first 0x2A0 bytes; r and s are
    // 72-byte little-endian fields of which only the low 48 bytes may be used.
    let spki = vcek.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid.to_string() != OID_EC_PUBLIC_KEY {
        return Err(cert_err("VCEK")("key is not an EC key".into()));
    }
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
        .map_err(|e| cert_err("VCEK")(format!("P-384 key: {e}")))?;
    let scalar = |at: usize| -> Result<[u8; 48], SnpError> {
        let field = &report[at..at + 72];
        if field[48..].iter().any(|b| *b != 0) {
            return Err(SnpError::Signature { which: "report" });
        }
        let mut be = [0u8; 48];
        for (i, b) in field[..48].iter().enumerate() {
            be[47 - i] = *b;
        }
        Ok(be)
    };
    let (r, s) = (scalar(0x2A0)?, scalar(0x2E8)?);
    let sig = p384::ecdsa::Signature::from_scalars(r, s)
        .map_err(|_| SnpError::Signature { which: "report" })?;
    use p384::ecdsa::signature::Verifier as _;
    key.verify(&report[..SIGNED_LEN], &sig)
        .map_err(|_| SnpError::Signature { which: "report" })?;

    // The VCEK was issued for exactly this TCB (and this chip).
    let exts = vcek
        .tbs_certificate()
        .extensions()
        .ok_or_else(|| cert_err("VCEK")("no extensions".into()))?;
    let ext = |oid: &str| {
        exts.iter()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes().to_vec())
    };
    let t = claims.reported_tcb;
    for ((oid, field), report_value) in
        TCB_OIDS
            .iter()
            .zip([t.bootloader, t.tee, t.snp, t.microcode])
    {
        let v = ext(oid)
            .and_then(|b| small_uint(&b))
            .ok_or_else(|| cert_err("VCEK")(format!("no {field} TCB extension")))?;
        if v != report_value as u64 {
            return Err(SnpError::Tcb {
                field,
                vcek: v,
                report: report_value as u64,
            });
        }
    }
    if let Some(hwid) = ext(OID_HWID) {
        let id = der::asn1::OctetString::from_der(&hwid)
            .map(|o| o.as_bytes().to_vec())
            .unwrap_or(hwid);
        if hex::encode(&id) != claims.chip_id {
            return Err(cert_err("VCEK")(
                "hwID does not match the report's chip_id".into(),
            ));
        }
    }
    Ok(claims)
}

/// Which verified reports are acceptable.
#[derive(Debug, Clone, Default)]
pub struct SnpPolicy {
    pub allow_debug: bool,
    pub min_tcb: Option<Tcb>,
    pub measurement: Option<String>,
    /// The highest VMPL a report may come from (Trustee requires 0; some clouds' guests run
    /// at VMPL 1 under a paravisor). None: any.
    pub max_vmpl: Option<u32>,
}

impl SnpPolicy {
    pub fn check(&self, c: &SnpClaims) -> Result<(), SnpError> {
        if c.debug && !self.allow_debug {
            return Err(SnpError::Policy("the guest policy allows debugging".into()));
        }
        if let Some(max) = self.max_vmpl {
            if c.vmpl > max {
                return Err(SnpError::Policy(format!(
                    "the report comes from VMPL {}, above the maximum VMPL {max}",
                    c.vmpl
                )));
            }
        }
        if let Some(min) = self.min_tcb {
            let t = c.reported_tcb;
            if t.bootloader < min.bootloader
                || t.tee < min.tee
                || t.snp < min.snp
                || t.microcode < min.microcode
            {
                return Err(SnpError::Policy(format!(
                    "reported TCB {t:?} is below the minimum {min:?}"
                )));
            }
        }
        if let Some(m) = &self.measurement {
            if !m.eq_ignore_ascii_case(&c.measurement) {
                return Err(SnpError::Policy(format!(
                    "measurement is {}, the golden value is {m}",
                    c.measurement
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vouch_testkit::corpus::vectors;

    const NOW: u64 = 1_750_400_000;

    fn load() -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let v = vectors()?;
        let r = |n: &str| std::fs::read(v.join("snp").join(n)).expect("vector");
        Some((r("attestation.bin"), r("vcek.der"), r("ask_ark_milan.pem")))
    }

    fn pem_of(der: &[u8]) -> Vec<u8> {
        use base64::Engine as _;
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
        .into_bytes()
    }

    /// Evidence in the shapes tools produce: the certificates in any order and with others
    /// beside them, the report as hex text; the claims say which key signed and from which VMPL.
    #[test]
    fn bundles_in_any_order_and_hex_reports_verify() {
        let Some((report, vcek, chain)) = load() else {
            return;
        };
        let certs = crate::pem::certificates(&chain);
        let (ask, ark) = (&certs[0], &certs[1]);
        let reference = verify_report(&report, &vcek, &chain, NOW).expect("as shipped");
        let platform = reference.platform_claims();
        assert_eq!(platform["vmpl"], reference.vmpl.to_string());
        assert_eq!(platform["signing_key"], "vcek");
        assert_eq!(platform["tcb_snp"], "5");
        assert_eq!(platform["tcb_microcode"], "68");
        assert_eq!(platform["measurement"], reference.measurement);
        assert_eq!(reference.signing_key, "vcek");
        // ARK first, as KDS's cert_chain and Trustee ship it; and with another certificate
        // (an unrelated root) in the bundle.
        let other = crate::pem::certificates(
            &std::fs::read(
                vectors()
                    .expect("vectors")
                    .join("roots/Intel_SGX_Root_CA.pem"),
            )
            .expect("root"),
        );
        for bundle in [
            [pem_of(ark), pem_of(ask)].concat(),
            [pem_of(&other[0]), pem_of(ark), pem_of(ask)].concat(),
            [pem_of(ask), pem_of(&other[0]), pem_of(ark)].concat(),
        ] {
            assert_eq!(
                verify_report(&report, &vcek, &bundle, NOW).expect("reordered"),
                reference
            );
        }
        // Without the intermediate, or without the root: named.
        let err = verify_report(&report, &vcek, &pem_of(ark), NOW).expect_err("no ASK");
        assert!(err.to_string().contains("signing key's issuer"), "{err}");
        let err = verify_report(&report, &vcek, &pem_of(ask), NOW).expect_err("no ARK");
        assert!(err.to_string().contains("self-signed root"), "{err}");
        // The report as hex, with line breaks, as `xxd -p` or `snpguest` print it.
        let hex_text: Vec<u8> = hex::encode(&report)
            .into_bytes()
            .chunks(60)
            .flat_map(|l| l.iter().copied().chain([b'\n']))
            .collect();
        assert_eq!(
            verify_report(&hex_text, &vcek, &chain, NOW).expect("hex"),
            reference
        );
        // A hex copy with a flipped digit still fails its signature.
        let mut bad = hex::encode(&report).into_bytes();
        bad[0x100] = if bad[0x100] == b'0' { b'1' } else { b'0' };
        assert!(verify_report(&bad, &vcek, &chain, NOW).is_err());
    }

    /// The VMPL is a claim, and a maximum is enforced when asked for.
    #[test]
    fn a_maximum_vmpl_is_enforced_on_request() {
        let Some((report, vcek, chain)) = load() else {
            return;
        };
        let mut c = parse_report(&report).expect("parse");
        let allow = SnpPolicy {
            allow_debug: true,
            ..Default::default()
        };
        c.vmpl = 1;
        assert!(allow.check(&c).is_ok(), "any VMPL by default");
        let strict = SnpPolicy {
            max_vmpl: Some(0),
            ..allow.clone()
        };
        let err = strict.check(&c).expect_err("VMPL 1");
        assert_eq!(
            err.to_string(),
            SnpError::Policy("the report comes from VMPL 1, above the maximum VMPL 0".into())
                .to_string()
        );
        c.vmpl = 0;
        assert!(strict.check(&c).is_ok());
        // A report's signing-key field says VLEK: labelled so.
        let mut vlek = report.clone();
        vlek[0x48] = (vlek[0x48] & !0x1c) | (1 << 2);
        assert_eq!(parse_report(&vlek).expect("parse").signing_key, "vlek");
        // ... and is refused with a VCEK certificate, for the kind, before any signature check.
        let err = verify_report(&vlek, &vcek, &chain, NOW).expect_err("VLEK report, VCEK cert");
        assert!(
            err.to_string().contains(
                "the report says it is signed by a VLEK, but the certificate given is \"SEV-VCEK\", not SEV-VLEK"
            ),
            "{err}"
        );
        vlek[0x48] = (vlek[0x48] & !0x1c) | (5 << 2);
        assert!(parse_report(&vlek).is_err());
    }

    #[test]
    fn only_pinned_amd_roots_are_trusted() {
        let Some((report, vcek, chain)) = load() else {
            return;
        };
        let Some(v) = vouch_testkit::corpus::vectors() else {
            return;
        };
        // A valid self-signed root that is not AMD's, in the ARK's place.
        let ask = crate::pem::certificates(&chain).remove(0);
        let other = std::fs::read(v.join("roots/Intel_SGX_Root_CA.pem")).expect("root");
        let b64 = |der: &[u8]| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(der)
        };
        let forged = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            b64(&ask)
        )
        .into_bytes()
        .into_iter()
        .chain(other)
        .collect::<Vec<u8>>();
        let err = verify_report(&report, &vcek, &forged, NOW).expect_err("foreign root");
        assert!(
            err.to_string()
                .contains("none of the certificates of the chain is the self-signed root"),
            "{err}"
        );
        // The real chain passes, also with an extra root trusted.
        assert!(verify_report_with_roots(&report, &vcek, &chain, NOW, &["00".repeat(32)]).is_ok());
    }

    #[test]
    fn milan_report_verifies_against_its_vcek_and_chain() {
        let Some((report, vcek, chain)) = load() else {
            return;
        };
        let c = verify_report(&report, &vcek, &chain, NOW).expect("verify");
        assert_eq!(c.version, 2);
        assert_eq!(c.policy, "0xb0000");
        // Policy bit 19: this guest allows debugging, so the default policy refuses it.
        assert!(c.debug);
        let err = SnpPolicy::default().check(&c).expect_err("debug guest");
        assert!(err.to_string().contains("debugging"), "{err}");
        assert_eq!(
            c.reported_tcb,
            Tcb {
                bootloader: 2,
                tee: 0,
                snp: 5,
                microcode: 68
            }
        );
        assert!(c.report_data.starts_with("0102030405"));
        SnpPolicy {
            allow_debug: true,
            ..Default::default()
        }
        .check(&c)
        .expect("allowed explicitly");
        let strict = SnpPolicy {
            allow_debug: true,
            min_tcb: Some(Tcb {
                bootloader: 3,
                tee: 0,
                snp: 5,
                microcode: 68,
            }),
            ..Default::default()
        };
        assert!(strict.check(&c).is_err());
        // Outside the VCEK's validity.
        assert!(verify_report(&report, &vcek, &chain, 1_600_000_000).is_err());
    }

    #[test]
    fn any_flipped_byte_of_the_signed_report_or_certificates_fails() {
        let Some((report, vcek, chain)) = load() else {
            return;
        };
        for i in
            (0..SIGNED_LEN)
                .step_by(11)
                .chain([0x2A0, 0x2A0 + 47, 0x2E8, 0x2E8 + 47, 0x2A0 + 60])
        {
            let mut t = report.clone();
            t[i] ^= 0x01;
            assert!(
                verify_report(&t, &vcek, &chain, NOW).is_err(),
                "report byte {i:#x}"
            );
        }
        for i in (0..vcek.len()).step_by(13) {
            let mut t = vcek.clone();
            t[i] ^= 0x01;
            assert!(
                verify_report(&report, &t, &chain, NOW).is_err(),
                "VCEK byte {i}"
            );
        }
        // Inside the PEM bodies (base64 characters).
        let text = String::from_utf8(chain.clone()).expect("pem");
        for (i, ch) in text
            .char_indices()
            .filter(|(_, c)| c.is_ascii_alphanumeric())
            .step_by(97)
        {
            let mut t = chain.clone();
            t[i] = if ch == 'A' { b'B' } else { b'A' };
            assert!(
                verify_report(&report, &vcek, &t, NOW).is_err(),
                "chain byte {i}"
            );
        }
        assert_eq!(
            verify_report(&report[..100], &vcek, &chain, NOW),
            Err(SnpError::ReportLength(100))
        );
    }
}
