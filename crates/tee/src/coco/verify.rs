//! Verification of CoCo evidence through vouch's own verifiers, into the same [`Verdict`] (and
//! so the same policy claims) as vouch's evidence.

use base64::Engine as _;
use serde_json::Value;
use vouch_measure::{canonicalize, sha384, Digest384};

use super::SampleEvidence;
use crate::verify::{EvidenceFormat, InitDataClaim, Verdict};
use crate::{TeeType, VerifyError, VerifyOptions};

/// Which of CoCo's evidence formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CocoTee {
    /// `sample`: unsigned, development only.
    Sample,
    /// `tdx`: a DCAP quote with the TCG2 event log.
    Tdx,
    /// `tpm`: a TPM quote by a pinned attestation key, with the SHA-256 PCRs.
    Tpm,
    /// `snp`: an SEV-SNP report with its certificates.
    Snp,
    /// `az-snp-vtpm`: an Azure SNP VM's vTPM quote, its key certified by the paravisor's SNP
    /// report.
    AzSnpVtpm,
    /// `az-tdx-vtpm`: an Azure TDX VM's vTPM quote, its key certified by the paravisor's TD
    /// quote.
    AzTdxVtpm,
}

/// What the warnings of a verdict on sample evidence say.
pub const SAMPLE_WARNING: &str = "Confidential Containers sample evidence: UNSIGNED, anyone can write it (weaker than vouch's sim evidence, which its instance key signs); for development only";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InitDataError {
    #[error("init-data format {0:?} is not supported (only \"toml\", as Confidential Containers writes it)")]
    Format(String),
    #[error("init-data is not TOML: {0}")]
    Toml(String),
    #[error("init-data names no `algorithm` (sha256, sha384 or sha512)")]
    NoAlgorithm,
    #[error("init-data algorithm {0:?} is not supported (sha256, sha384 or sha512)")]
    Algorithm(String),
}

/// The digest of an init-data document, as CoCo computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitDataDigest {
    pub algorithm: &'static str,
    pub digest: Vec<u8>,
    /// What the document says (see [`init_data_claims`]).
    pub claims: Value,
}

/// The digest of CoCo init-data: its body, hashed whole with the algorithm its top-level
/// `algorithm` key names.
pub fn init_data_digest(format: &str, body: &str) -> Result<InitDataDigest, InitDataError> {
    use sha2::Digest as _;
    if format != "toml" {
        return Err(InitDataError::Format(format.to_string()));
    }
    let doc = toml_edit::Document::parse(body).map_err(|e| {
        InitDataError::Toml(e.message().lines().next().unwrap_or_default().to_string())
    })?;
    let algorithm = doc
        .get("algorithm")
        .and_then(|i| i.as_str())
        .ok_or(InitDataError::NoAlgorithm)?;
    let (algorithm, digest) = match algorithm {
        "sha256" => ("sha256", sha2::Sha256::digest(body.as_bytes()).to_vec()),
        "sha384" => ("sha384", sha2::Sha384::digest(body.as_bytes()).to_vec()),
        "sha512" => ("sha512", sha2::Sha512::digest(body.as_bytes()).to_vec()),
        other => return Err(InitDataError::Algorithm(other.to_string())),
    };
    Ok(InitDataDigest {
        algorithm,
        digest,
        claims: init_data_claims(&doc),
    })
}

/// What an init-data document says, as a policy reads it (the same shape as Trustee's
/// `init_data_claims`): its `data` table as JSON; the `aa.toml` and `cdh.toml` entries, TOML
/// documents in a string, as JSON too when they parse; and when a `policy.rego` entry declares
/// `policy_data := {...}`, that object as `agent_policy_claims` (the entry itself is dropped).
/// Null when the document has no `data` table.
fn init_data_claims(doc: &toml_edit::Document<&str>) -> Value {
    let Some(data) = doc.get("data") else {
        return Value::Null;
    };
    let mut claims = toml_item_json(data);
    if let Value::Object(map) = &mut claims {
        for key in ["aa.toml", "cdh.toml"] {
            let parsed = map
                .get(key)
                .and_then(Value::as_str)
                .and_then(|text| toml_edit::Document::parse(text).ok())
                .map(|d| toml_table_json(d.as_table()));
            if let Some(v) = parsed {
                map.insert(key.to_string(), v);
            }
        }
        let policy_data = map
            .get("policy.rego")
            .and_then(Value::as_str)
            .and_then(|rego| {
                let at = rego.find("policy_data := {")? + "policy_data := ".len();
                serde_json::Deserializer::from_str(&rego[at..])
                    .into_iter::<Value>()
                    .next()?
                    .ok()
            });
        if let Some(v) = policy_data {
            map.remove("policy.rego");
            map.insert("agent_policy_claims".to_string(), v);
        }
    }
    claims
}

fn toml_table_json(t: &toml_edit::Table) -> Value {
    Value::Object(
        t.iter()
            .map(|(k, v)| (k.to_string(), toml_item_json(v)))
            .collect(),
    )
}

fn toml_item_json(item: &toml_edit::Item) -> Value {
    match item {
        toml_edit::Item::None => Value::Null,
        toml_edit::Item::Value(v) => toml_value_json(v),
        toml_edit::Item::Table(t) => toml_table_json(t),
        toml_edit::Item::ArrayOfTables(a) => Value::Array(a.iter().map(toml_table_json).collect()),
    }
}

fn toml_value_json(v: &toml_edit::Value) -> Value {
    use toml_edit::Value as T;
    match v {
        T::String(s) => Value::String(s.value().clone()),
        T::Integer(i) => Value::from(*i.value()),
        T::Float(f) => serde_json::Number::from_f64(*f.value())
            .map(Value::Number)
            .unwrap_or(Value::Null),
        T::Boolean(b) => Value::Bool(*b.value()),
        T::Datetime(d) => Value::String(d.value().to_string()),
        T::Array(a) => Value::Array(a.iter().map(toml_value_json).collect()),
        T::InlineTable(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.to_string(), toml_value_json(v)))
                .collect(),
        ),
    }
}

/// Verify CoCo evidence of `tee` for `runtime_data` (the JSON the client bound, see
/// [`super::runtime_data`]) and, when the client sent init-data, its digest.
pub fn verify_coco(
    tee: CocoTee,
    evidence: &Value,
    runtime_data: &Value,
    init_data: Option<&InitDataDigest>,
    opts: &VerifyOptions,
) -> Result<Verdict, VerifyError> {
    let expected = sha384(&canonicalize(runtime_data).map_err(VerifyError::RuntimeData)?);
    match tee {
        CocoTee::Sample => sample(evidence, &expected, runtime_data, init_data, opts),
        #[cfg(feature = "tdx")]
        CocoTee::Tdx => tdx::tdx(evidence, &expected, runtime_data, init_data, opts),
        #[cfg(not(feature = "tdx"))]
        CocoTee::Tdx => Err(VerifyError::UnsupportedTee(TeeType::Tdx)),
        #[cfg(feature = "tpm")]
        CocoTee::Tpm => tpm::tpm(evidence, &expected, runtime_data, init_data, opts),
        #[cfg(not(feature = "tpm"))]
        CocoTee::Tpm => Err(VerifyError::UnsupportedTee(TeeType::Tpm)),
        #[cfg(feature = "snp")]
        CocoTee::Snp => snp::snp(evidence, &expected, runtime_data, init_data, opts),
        #[cfg(not(feature = "snp"))]
        CocoTee::Snp => Err(VerifyError::UnsupportedTee(TeeType::Snp)),
        #[cfg(all(feature = "tpm", feature = "snp"))]
        CocoTee::AzSnpVtpm => super::azure::verify_azure(
            super::azure::HwReport::Snp,
            evidence,
            expected.as_bytes(),
            runtime_data,
            init_data,
            opts,
        ),
        #[cfg(not(all(feature = "tpm", feature = "snp")))]
        CocoTee::AzSnpVtpm => Err(VerifyError::UnsupportedTee(TeeType::Snp)),
        #[cfg(all(feature = "tpm", feature = "tdx"))]
        CocoTee::AzTdxVtpm => super::azure::verify_azure(
            super::azure::HwReport::Tdx,
            evidence,
            expected.as_bytes(),
            runtime_data,
            init_data,
            opts,
        ),
        #[cfg(not(all(feature = "tpm", feature = "tdx")))]
        CocoTee::AzTdxVtpm => Err(VerifyError::UnsupportedTee(TeeType::Tdx)),
    }
}

pub(super) fn format_error(tee: TeeType, reason: impl std::fmt::Display) -> VerifyError {
    VerifyError::CocoFormat {
        tee,
        reason: reason.to_string(),
    }
}

fn base64(tee: TeeType, what: &str, text: &str) -> Result<Vec<u8>, VerifyError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|_| format_error(tee, format!("{what} is not base64")))
}

fn sample(
    evidence: &Value,
    expected: &Digest384,
    runtime_data: &Value,
    init_data: Option<&InitDataDigest>,
    opts: &VerifyOptions,
) -> Result<Verdict, VerifyError> {
    if !opts.allow_sample {
        return Err(VerifyError::SampleNotAllowed);
    }
    let ev: SampleEvidence =
        serde_json::from_value(evidence.clone()).map_err(|e| format_error(TeeType::Sample, e))?;
    let rd = base64(TeeType::Sample, "report_data", &ev.report_data)?;
    // The digest itself, or padded with zeros to a 64-byte report.
    let bound = rd.len() >= 48 && rd.len() <= 64 && rd[48..].iter().all(|b| *b == 0);
    if !bound || &rd[..48] != expected.as_bytes() {
        return Err(VerifyError::ReportDataMismatch {
            computed: expected.to_hex(),
            quoted: hex::encode(&rd),
        });
    }
    let mut platform = std::collections::BTreeMap::new();
    platform.insert("svn".to_string(), ev.svn);
    Ok(Verdict {
        tee: TeeType::Sample,
        format: EvidenceFormat::Coco,
        nonce_required: false,
        nonce_checked: false,
        hardware: false,
        signer: "none: sample evidence is unsigned".into(),
        registers: Vec::new(),
        records: 0,
        runtime_data: runtime_data.clone(),
        platform,
        containers: Vec::new(),
        requester: None,
        events: Vec::new(),
        // Nothing in sample evidence carries the init-data: it is reported, never bound.
        init_data: init_data.map(|d| InitDataClaim::of(d, false)),
        warnings: vec![SAMPLE_WARNING.to_string()],
        firmware_log_events: None,
    })
}

/// TPM: the quote (`TPMS_ATTEST`, `TPMT_SIGNATURE`) by an attestation key given as a
/// SubjectPublicKeyInfo, which must be pinned (CoCo's form carries no AK certificate); the
/// SHA-256 PCR values it covers; init-data through PCR 8.
#[cfg(feature = "tpm")]
pub(super) mod tpm {
    use super::*;
    use crate::coco::TpmEvidence;
    use crate::tcg::ALG_SHA256;

    /// The PCR CoCo's TPM attester extends with the init-data digest.
    pub(crate) const INIT_DATA_PCR: usize = 8;

    /// The RSA key of a DER SubjectPublicKeyInfo (rsaEncryption), as a TPM AK.
    pub(super) fn ak_of_spki(spki: &[u8]) -> Option<crate::tpm::AkPublic> {
        use crate::asn1::der_tlv;
        let (0x30, body, []) = der_tlv(spki)? else {
            return None;
        };
        let (0x30, algorithm, rest) = der_tlv(body)? else {
            return None;
        };
        // OID 1.2.840.113549.1.1.1 (rsaEncryption).
        let (0x06, oid, _) = der_tlv(algorithm)? else {
            return None;
        };
        if oid != [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01] {
            return None;
        }
        let (0x03, bits, []) = der_tlv(rest)? else {
            return None;
        };
        let (0, key) = bits.split_first()? else {
            return None;
        };
        let (0x30, key, []) = der_tlv(key)? else {
            return None;
        };
        let (0x02, n, rest) = der_tlv(key)? else {
            return None;
        };
        let (0x02, e, []) = der_tlv(rest)? else {
            return None;
        };
        let n = match n.split_first() {
            Some((0, tail)) => tail,
            _ => n,
        };
        let e = e.iter().try_fold(0u32, |acc, b| {
            acc.checked_mul(256).map(|a| a | u32::from(*b))
        })?;
        let bits = n.len() * 8;
        ((2048..=4096).contains(&bits) && e > 1).then(|| crate::tpm::AkPublic {
            modulus: n.to_vec(),
            exponent: e,
            scheme_hash: ALG_SHA256,
        })
    }

    pub(super) fn tpm(
        evidence: &Value,
        expected: &Digest384,
        runtime_data: &Value,
        init_data: Option<&InitDataDigest>,
        opts: &VerifyOptions,
    ) -> Result<Verdict, VerifyError> {
        let ev: TpmEvidence =
            serde_json::from_value(evidence.clone()).map_err(|e| format_error(TeeType::Tpm, e))?;
        let spki = base64(TeeType::Tpm, "ak_public", &ev.ak_public)?;
        let fingerprint = crate::tpm::spki_fingerprint(&spki);
        let ak = ak_of_spki(&spki).ok_or_else(|| {
            format_error(
                TeeType::Tpm,
                "ak_public is not an RSA SubjectPublicKeyInfo (2048 to 4096 bits)",
            )
        })?;
        if !opts
            .tpm_aks
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&fingerprint))
        {
            return Err(VerifyError::UntrustedAk { fingerprint });
        }
        let pcrs = ev
            .tpm_quote
            .pcrs
            .iter()
            .enumerate()
            .map(|(i, h)| {
                hex::decode(h)
                    .ok()
                    .filter(|v| v.len() == 32)
                    .ok_or_else(|| {
                        format_error(TeeType::Tpm, format!("PCR {i} is not 32 bytes of hex"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let message = base64(TeeType::Tpm, "tpm_quote.message", &ev.tpm_quote.message)?;
        let signature = base64(TeeType::Tpm, "tpm_quote.signature", &ev.tpm_quote.signature)?;
        let quoted = check_quote(
            &message,
            QuoteSignature::Tpmt(&signature),
            &ak,
            &expected.as_bytes()[..32],
            &pcrs,
        )?;
        // Only the values the quote covers count: the others are dropped here.
        let pcrs: Vec<Option<&Vec<u8>>> = pcrs
            .iter()
            .enumerate()
            .map(|(i, v)| quoted.contains(&(i as u32)).then_some(v))
            .collect();
        if let Some(d) = init_data {
            check_init_data(d, pcrs.get(INIT_DATA_PCR).copied().flatten())?;
        }
        let platform = pcrs
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (format!("pcr{i}"), hex::encode(v))))
            .collect();
        Ok(Verdict {
            tee: TeeType::Tpm,
            format: EvidenceFormat::Coco,
            nonce_required: false,
            nonce_checked: false,
            hardware: true,
            signer: format!("TPM attestation key {fingerprint}"),
            registers: Vec::new(),
            records: 0,
            runtime_data: runtime_data.clone(),
            platform,
            containers: Vec::new(),
            requester: None,
            events: Vec::new(),
            init_data: init_data.map(|d| InitDataClaim::of(d, true)),
            warnings: Vec::new(),
            firmware_log_events: None,
        })
    }

    /// How a quote's signature is given.
    #[derive(Clone, Copy)]
    pub(crate) enum QuoteSignature<'a> {
        /// A marshalled `TPMT_SIGNATURE` (CoCo's `tpm` evidence).
        Tpmt(&'a [u8]),
        /// The bare RSASSA-PKCS1-v1_5 SHA-256 signature (Azure's vTPM evidence).
        #[cfg_attr(not(any(feature = "snp", feature = "tdx")), allow(dead_code))]
        RsassaSha256(&'a [u8]),
    }

    /// The quote's signature by `ak`, the first 32 bytes of the binding as its qualifying data
    /// (CoCo's TPM attester cuts it to 32), and the SHA-256 PCR values (index = PCR) hashing to
    /// its PCR digest; every PCR it selects must be given, and only SHA-256 ones. The SHA-256
    /// PCRs it covers.
    pub(crate) fn check_quote(
        message: &[u8],
        signature: QuoteSignature<'_>,
        ak: &crate::tpm::AkPublic,
        nonce: &[u8],
        pcrs: &[Vec<u8>],
    ) -> Result<Vec<u32>, VerifyError> {
        use crate::tpm::TpmError;
        let lookup = |alg: u16, i: u32| {
            (alg == ALG_SHA256)
                .then(|| pcrs.get(i as usize).cloned())
                .flatten()
        };
        match signature {
            QuoteSignature::Tpmt(sig) => {
                crate::tpm::verify_quote(message, sig, ak, Some(nonce), Some(&lookup))
            }
            QuoteSignature::RsassaSha256(sig) => crate::tpm::verify_quote_rsassa(
                message,
                ALG_SHA256,
                sig,
                ak,
                Some(nonce),
                Some(&lookup),
            ),
        }
        .map(|claims| {
            claims
                .selection
                .into_iter()
                .filter(|(bank, _)| bank == crate::tpm::bank_name(ALG_SHA256))
                .flat_map(|(_, indexes)| indexes)
                .collect()
        })
        .map_err(|e| match e {
            TpmError::BadSignature => VerifyError::BadSignature,
            TpmError::Nonce { expected, found } => VerifyError::ReportDataMismatch {
                computed: expected,
                quoted: found,
            },
            other => VerifyError::Rejected {
                tee: TeeType::Tpm,
                reason: other.to_string(),
            },
        })
    }

    /// CoCo's init-data binding on a TPM: PCR 8 = SHA-256(32 zero bytes || the digest), which
    /// takes a sha256 init-data digest.
    pub(crate) fn check_init_data(
        d: &InitDataDigest,
        pcr8: Option<&Vec<u8>>,
    ) -> Result<(), VerifyError> {
        use sha2::Digest as _;
        if d.digest.len() != 32 {
            return Err(format_error(
                TeeType::Tpm,
                format!("a TPM binds init-data through PCR 8 with a sha256 digest; this init-data names {}", d.algorithm),
            ));
        }
        let mut input = [0u8; 64];
        input[32..].copy_from_slice(&d.digest);
        let want = sha2::Sha256::digest(input);
        // Not covered by the quote: nothing binds it.
        let found = pcr8.map(hex::encode).unwrap_or_default();
        if hex::encode(want) != found {
            return Err(VerifyError::InitDataMismatch {
                register: "PCR8",
                expected: hex::encode(want),
                found,
            });
        }
        Ok(())
    }
}

/// SEV-SNP: the report as the `sev` crate (6.x) serializes it, written back into the firmware's
/// 1184 bytes and verified by vouch's SNP verifier against the VCEK (or VLEK) in the cert chain
/// and the ASK/ARK (from the chain, or the verifier's), the ARK pinned; init-data in HOST_DATA.
#[cfg(feature = "snp")]
pub(crate) mod snp {
    use super::*;
    use crate::snp::REPORT_LEN;

    /// What the report JSON holds, field by field, as `sev` names them.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Report {
        version: u32,
        guest_svn: u32,
        policy: u64,
        family_id: Vec<u8>,
        image_id: Vec<u8>,
        vmpl: u32,
        sig_algo: u32,
        current_tcb: Tcb,
        plat_info: u64,
        key_info: u32,
        report_data: Vec<u8>,
        measurement: Vec<u8>,
        host_data: Vec<u8>,
        id_key_digest: Vec<u8>,
        author_key_digest: Vec<u8>,
        report_id: Vec<u8>,
        report_id_ma: Vec<u8>,
        reported_tcb: Tcb,
        #[serde(default)]
        cpuid_fam_id: Option<u8>,
        #[serde(default)]
        cpuid_mod_id: Option<u8>,
        #[serde(default)]
        cpuid_step: Option<u8>,
        chip_id: Vec<u8>,
        committed_tcb: Tcb,
        current: Version,
        committed: Version,
        launch_tcb: Tcb,
        #[serde(default)]
        launch_mit_vector: Option<u64>,
        #[serde(default)]
        current_mit_vector: Option<u64>,
        signature: Signature,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tcb {
        #[serde(default)]
        fmc: Option<u8>,
        bootloader: u8,
        tee: u8,
        snp: u8,
        microcode: u8,
    }

    impl Tcb {
        /// Milan and Genoa's layout; Turin's (which has an FMC version) otherwise.
        fn bytes(&self) -> [u8; 8] {
            match self.fmc {
                None => [
                    self.bootloader,
                    self.tee,
                    0,
                    0,
                    0,
                    0,
                    self.snp,
                    self.microcode,
                ],
                Some(fmc) => [
                    fmc,
                    self.bootloader,
                    self.tee,
                    self.snp,
                    0,
                    0,
                    0,
                    self.microcode,
                ],
            }
        }
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Version {
        major: u8,
        minor: u8,
        build: u8,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Signature {
        r: Vec<u8>,
        s: Vec<u8>,
    }

    #[derive(serde::Deserialize)]
    struct CertEntry {
        cert_type: Value,
        data: Vec<u8>,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Evidence {
        attestation_report: Report,
        #[serde(default)]
        cert_chain: Option<Vec<CertEntry>>,
    }

    /// The report in the firmware's layout (reserved bytes zero).
    pub(crate) fn report_bytes(r: &Report) -> Result<Vec<u8>, String> {
        let mut b = vec![0u8; REPORT_LEN];
        let mut put = |at: usize, v: &[u8], len: usize, name: &str| {
            if v.len() != len {
                return Err(format!("{name} is {} bytes, not {len}", v.len()));
            }
            b[at..at + len].copy_from_slice(v);
            Ok(())
        };
        put(0x00, &r.version.to_le_bytes(), 4, "version")?;
        put(0x04, &r.guest_svn.to_le_bytes(), 4, "guest_svn")?;
        put(0x08, &r.policy.to_le_bytes(), 8, "policy")?;
        put(0x10, &r.family_id, 16, "family_id")?;
        put(0x20, &r.image_id, 16, "image_id")?;
        put(0x30, &r.vmpl.to_le_bytes(), 4, "vmpl")?;
        put(0x34, &r.sig_algo.to_le_bytes(), 4, "sig_algo")?;
        put(0x38, &r.current_tcb.bytes(), 8, "current_tcb")?;
        put(0x40, &r.plat_info.to_le_bytes(), 8, "plat_info")?;
        put(0x48, &r.key_info.to_le_bytes(), 4, "key_info")?;
        put(0x50, &r.report_data, 64, "report_data")?;
        put(0x90, &r.measurement, 48, "measurement")?;
        put(0xC0, &r.host_data, 32, "host_data")?;
        put(0xE0, &r.id_key_digest, 48, "id_key_digest")?;
        put(0x110, &r.author_key_digest, 48, "author_key_digest")?;
        put(0x140, &r.report_id, 32, "report_id")?;
        put(0x160, &r.report_id_ma, 32, "report_id_ma")?;
        put(0x180, &r.reported_tcb.bytes(), 8, "reported_tcb")?;
        // Version 3 on: the CPUID family, model and stepping.
        if r.version >= 3 {
            let cpuid = [r.cpuid_fam_id, r.cpuid_mod_id, r.cpuid_step];
            let cpuid: Option<Vec<u8>> = cpuid.into_iter().collect();
            put(
                0x188,
                &cpuid.ok_or("a version 3 report names its CPUID")?,
                3,
                "cpuid",
            )?;
        }
        put(0x1A0, &r.chip_id, 64, "chip_id")?;
        put(0x1E0, &r.committed_tcb.bytes(), 8, "committed_tcb")?;
        put(
            0x1E8,
            &[r.current.build, r.current.minor, r.current.major],
            3,
            "current",
        )?;
        put(
            0x1EC,
            &[r.committed.build, r.committed.minor, r.committed.major],
            3,
            "committed",
        )?;
        put(0x1F0, &r.launch_tcb.bytes(), 8, "launch_tcb")?;
        // Version 5 on: the mitigation vectors.
        if r.version >= 5 {
            let (Some(l), Some(c)) = (r.launch_mit_vector, r.current_mit_vector) else {
                return Err("a version 5 report names its mitigation vectors".into());
            };
            put(0x1F8, &l.to_le_bytes(), 8, "launch_mit_vector")?;
            put(0x200, &c.to_le_bytes(), 8, "current_mit_vector")?;
        }
        put(0x2A0, &r.signature.r, 72, "signature.r")?;
        put(0x2E8, &r.signature.s, 72, "signature.s")?;
        Ok(b)
    }

    fn pem(der: &[u8]) -> String {
        use base64::Engine as _;
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
        for chunk in text.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
        out
    }

    pub(super) fn snp(
        evidence: &Value,
        expected: &Digest384,
        runtime_data: &Value,
        init_data: Option<&InitDataDigest>,
        opts: &VerifyOptions,
    ) -> Result<Verdict, VerifyError> {
        let ev: Evidence =
            serde_json::from_value(evidence.clone()).map_err(|e| format_error(TeeType::Snp, e))?;
        let report =
            report_bytes(&ev.attestation_report).map_err(|e| format_error(TeeType::Snp, e))?;
        let mut key = None;
        let mut chain = String::new();
        for c in ev.cert_chain.unwrap_or_default() {
            match c.cert_type.as_str() {
                Some("VCEK") | Some("VLEK") => key = Some(c.data),
                Some("ASK") => chain.insert_str(0, &pem(&c.data)),
                Some("ARK") => chain.push_str(&pem(&c.data)),
                _ => {}
            }
        }
        if chain.is_empty() {
            chain =
                String::from_utf8_lossy(opts.snp_chain.as_deref().unwrap_or_default()).into_owned();
        }
        let key = key.ok_or_else(|| {
            format_error(
                TeeType::Snp,
                "its cert_chain has no VCEK or VLEK certificate",
            )
        })?;
        if chain.is_empty() {
            return Err(VerifyError::Rejected {
                tee: TeeType::Snp,
                reason:
                    "the report's certificate chain has no ASK and ARK, and the verifier has none"
                        .into(),
            });
        }
        let claims = check_report(&report, &key, chain.as_bytes(), expected, opts)?;
        if let Some(d) = init_data {
            check_init_data(d, &claims.host_data)?;
        }
        Ok(Verdict {
            tee: TeeType::Snp,
            format: EvidenceFormat::Coco,
            nonce_required: false,
            nonce_checked: false,
            hardware: true,
            signer: format!(
                "AMD SEV-SNP {} (reported TCB {})",
                claims.signing_key.to_uppercase(),
                claims.reported_tcb
            ),
            registers: Vec::new(),
            records: 0,
            runtime_data: runtime_data.clone(),
            platform: claims.platform_claims(),
            containers: Vec::new(),
            requester: None,
            events: Vec::new(),
            init_data: init_data.map(|d| InitDataClaim::of(d, true)),
            warnings: Vec::new(),
            firmware_log_events: None,
        })
    }

    /// The report's signature and chain (the ARK pinned), its TCB against the key's, the
    /// verifier's SNP policy, then its report data: the binding followed by 16 zero bytes.
    pub(crate) fn check_report(
        report: &[u8],
        key_der: &[u8],
        chain_pem: &[u8],
        expected: &Digest384,
        opts: &VerifyOptions,
    ) -> Result<crate::snp::SnpClaims, VerifyError> {
        let claims = check_signed_report(report, key_der, chain_pem, opts)?;
        let mut want = expected.as_bytes().to_vec();
        want.resize(64, 0);
        if claims.report_data != hex::encode(&want) {
            return Err(VerifyError::ReportDataMismatch {
                computed: expected.to_hex(),
                quoted: claims.report_data.clone(),
            });
        }
        Ok(claims)
    }

    /// The report's signature and chain (the ARK pinned), its TCB against the key's, and the
    /// verifier's SNP policy: the claims of a genuine report, its report data not yet looked at.
    pub(crate) fn check_signed_report(
        report: &[u8],
        key_der: &[u8],
        chain_pem: &[u8],
        opts: &VerifyOptions,
    ) -> Result<crate::snp::SnpClaims, VerifyError> {
        let rejected = |reason: String| VerifyError::Rejected {
            tee: TeeType::Snp,
            reason,
        };
        let now = opts.at.unwrap_or_else(vouch_base::clock::unix_secs);
        let claims = crate::snp::verify_report(report, key_der, chain_pem, now)
            .map_err(|e| rejected(e.to_string()))?;
        opts.snp_policy
            .check(&claims)
            .map_err(|e| rejected(e.to_string()))?;
        Ok(claims)
    }

    /// CoCo's init-data binding on SNP: its digest, padded with zeros (or cut) to HOST_DATA's
    /// 32 bytes, is the report's HOST_DATA.
    pub(crate) fn check_init_data(d: &InitDataDigest, host_data: &str) -> Result<(), VerifyError> {
        let mut want = d.digest.clone();
        want.resize(32, 0);
        if hex::encode(&want) != host_data {
            return Err(VerifyError::InitDataMismatch {
                register: "HOST_DATA",
                expected: hex::encode(&want),
                found: host_data.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(feature = "tdx")]
pub use tdx::{runtime_log as tdx_runtime_log, RuntimeLog};

/// TDX: the quote through vouch's TDX verifier, the CCEL and the runtime log.
#[cfg(feature = "tdx")]
pub(super) mod tdx {
    use vouch_measure::{aael, Record, DOMAIN};

    use super::*;
    use crate::coco::{InitDataDigest, TdxEvidence, AAEL_TAGGED_EVENT_ID, EV_EVENT_TAG};
    use crate::verify::{containers_of, AaelEvent};
    use crate::Verifier;

    pub(super) fn tdx(
        evidence: &Value,
        expected: &Digest384,
        runtime_data: &Value,
        init_data: Option<&InitDataDigest>,
        opts: &VerifyOptions,
    ) -> Result<Verdict, VerifyError> {
        let ev: TdxEvidence =
            serde_json::from_value(evidence.clone()).map_err(|e| format_error(TeeType::Tdx, e))?;
        let quote = base64(TeeType::Tdx, "quote", &ev.quote)?;
        let claims = crate::tdx::TdxVerifier { opts }.verify_quote(&quote)?;
        if claims.report_data != *expected {
            return Err(VerifyError::ReportDataMismatch {
                computed: expected.to_hex(),
                quoted: claims.report_data.to_hex(),
            });
        }
        if let Some(d) = init_data {
            check_init_data(d, &claims.platform)?;
        }
        let RuntimeLog {
            records,
            events,
            firmware_log_events,
        } = runtime_log(&ev, &claims.registers)?;
        let containers = containers_of(&records);
        Ok(Verdict {
            tee: TeeType::Tdx,
            format: EvidenceFormat::Coco,
            nonce_required: false,
            nonce_checked: false,
            hardware: true,
            signer: claims.signer,
            registers: claims.registers,
            records: records.len(),
            runtime_data: runtime_data.clone(),
            platform: claims.platform,
            containers,
            requester: None,
            events,
            init_data: init_data.map(|d| InitDataClaim::of(d, true)),
            warnings: Vec::new(),
            firmware_log_events,
        })
    }

    /// CoCo's init-data binding on TDX: its digest, padded with zeros (or cut) to MRCONFIGID's
    /// 48 bytes, is the quote's MRCONFIGID.
    pub(super) fn check_init_data(
        d: &InitDataDigest,
        platform: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), VerifyError> {
        let mut want = d.digest.clone();
        want.resize(48, 0);
        let found = platform.get("mrconfigid").cloned().unwrap_or_default();
        if hex::encode(&want) != found {
            return Err(VerifyError::InitDataMismatch {
                register: "MRCONFIGID",
                expected: hex::encode(&want),
                found,
            });
        }
        Ok(())
    }

    /// What the logs of TDX evidence say, checked against the quoted RTMR0..3.
    #[derive(Debug)]
    pub struct RuntimeLog {
        /// vouch's records (AAEL lines of domain `vouch`), in order.
        pub records: Vec<Record>,
        /// Other writers' AAEL events.
        pub events: Vec<AaelEvent>,
        /// Events of the TCG2 log, when there was one.
        pub firmware_log_events: Option<usize>,
    }

    /// The firmware log must replay to RTMR0..2, and the runtime log (AAEL records in the
    /// TCG2 log, or AAEL text beside it) to RTMR3.
    pub fn runtime_log(
        ev: &TdxEvidence,
        registers: &[Digest384],
    ) -> Result<RuntimeLog, VerifyError> {
        // The runtime log: AAEL records in the TCG2 log (RTMR3), or AAEL text beside it.
        let mut lines: Vec<String> = Vec::new();
        let mut firmware_log_events = None;
        let mut rtmr3_logged = false;
        if let Some(b64) = ev.cc_eventlog.as_deref().filter(|s| !s.is_empty()) {
            let bytes = base64(TeeType::Tdx, "cc_eventlog", b64)?;
            let log = crate::tcg::parse(&bytes).map_err(VerifyError::FirmwareLog)?;
            let replayed = log.rtmrs().map_err(VerifyError::FirmwareLog)?;
            rtmr3_logged = log.events.iter().any(|e| e.index == 4);
            let checked = if rtmr3_logged { 4 } else { 3 };
            for (index, (r, q)) in replayed.iter().zip(registers).take(checked).enumerate() {
                if r != q {
                    return Err(VerifyError::FirmwareReplay {
                        index,
                        replayed: r.to_hex(),
                        quoted: q.to_hex(),
                    });
                }
            }
            for (n, e) in log.events.iter().enumerate() {
                if e.event_type == EV_EVENT_TAG
                    && e.data.get(..4) == Some(&AAEL_TAGGED_EVENT_ID.to_le_bytes()[..])
                {
                    lines.push(aael_text(n + 1, e)?);
                }
            }
            firmware_log_events = Some(log.events.len());
        }
        if let Some(text) = ev.aa_eventlog.as_deref().filter(|s| !s.is_empty()) {
            if rtmr3_logged {
                return Err(format_error(
                    TeeType::Tdx,
                    "both cc_eventlog and aa_eventlog log RTMR3: one runtime log only",
                ));
            }
            let replayed = aael::replay_text(text).map_err(|e| format_error(TeeType::Tdx, e))?;
            let quoted = registers.get(3).copied().unwrap_or(Digest384::ZERO);
            if replayed != quoted {
                return Err(VerifyError::ReplayMismatch {
                    records: text.lines().count().saturating_sub(1),
                    replayed: replayed.to_hex(),
                    index: 3,
                    quoted: quoted.to_hex(),
                });
            }
            lines.extend(text.lines().map(|l| l.trim_end().to_string()));
        }
        let (records, events) = read_runtime_log(&lines)?;
        Ok(RuntimeLog {
            records,
            events,
            firmware_log_events,
        })
    }

    /// The text of an AAEL record of a TCG2 log, whose SHA-384 digest must cover it: as CoCo's
    /// attestation agent extends (the whole tagged event), or as AAEL's own rule does (the text).
    fn aael_text(n: usize, e: &crate::tcg::TcgEvent) -> Result<String, VerifyError> {
        let bad = |reason: String| VerifyError::AaelEvent { index: n, reason };
        let size = e
            .data
            .get(4..8)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| bad("truncated tag".into()))?;
        let text = e.data.get(8..).filter(|t| t.len() == size).ok_or_else(|| {
            bad(format!(
                "its tag says {size} bytes of text, it holds {}",
                e.data.len().saturating_sub(8)
            ))
        })?;
        let digest = e
            .digests
            .iter()
            .find(|(alg, _)| *alg == crate::tcg::ALG_SHA384)
            .map(|(_, d)| d.as_slice())
            .ok_or_else(|| bad("no SHA-384 digest".into()))?;
        if digest != sha384(&e.data).as_bytes() && digest != sha384(text).as_bytes() {
            return Err(bad("its digest is not the SHA-384 of its text".into()));
        }
        let text = std::str::from_utf8(text)
            .ok()
            .filter(|t| t.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .ok_or_else(|| bad("its text is not printable ASCII on one line".into()))?;
        Ok(text.to_string())
    }

    /// AAEL lines as vouch records (domain `vouch`, in order) and others' events; INIT lines name
    /// the register's start and are not events.
    fn read_runtime_log(lines: &[String]) -> Result<(Vec<Record>, Vec<AaelEvent>), VerifyError> {
        let mut records = Vec::new();
        let mut events = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with("INIT ") || line.starts_with("INIT/") {
                continue;
            }
            let mut fields = line.splitn(3, ' ');
            let (Some(domain), Some(operation), Some(content)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(VerifyError::AaelEvent {
                    index: i + 1,
                    reason: "not `<domain> <operation> <content>`".into(),
                });
            };
            if domain == DOMAIN {
                let seq = records.len() as u64;
                records.push(aael::parse_line(line, seq, i + 1).map_err(|e| {
                    VerifyError::AaelEvent {
                        index: i + 1,
                        reason: e.to_string(),
                    }
                })?);
            } else {
                events.push(AaelEvent {
                    domain: domain.to_string(),
                    operation: operation.to_string(),
                    content: content.to_string(),
                });
            }
        }
        Ok((records, events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coco::EV_EVENT_TAG;
    use crate::verify::AaelEvent;
    use serde_json::json;
    use vouch_testkit::corpus::vectors;

    fn read(v: &std::path::Path, p: &str) -> Vec<u8> {
        std::fs::read(v.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn allow_sample() -> VerifyOptions {
        VerifyOptions {
            allow_sample: true,
            ..Default::default()
        }
    }

    /// CoCo's own client's attest body verifies for its nonce and key, and for no other nonce,
    /// key, additional evidence or report byte; and only where sample evidence is allowed.
    #[test]
    fn cocos_sample_attestation_verifies_for_its_nonce_and_key_only() {
        let Some(v) = vectors() else {
            return;
        };
        let attest: Value =
            serde_json::from_slice(&read(&v, "coco/kbs-client-sample-attest.json")).expect("json");
        let evidence = &attest["tee-evidence"]["primary_evidence"];
        let rd = &attest["runtime-data"];
        let nonce = rd["nonce"].as_str().expect("nonce");
        let key = &rd["tee-pubkey"];
        let good = super::super::runtime_data(nonce, key, "");
        let verdict =
            verify_coco(CocoTee::Sample, evidence, &good, None, &allow_sample()).expect("verify");
        assert_eq!(verdict.tee, TeeType::Sample);
        assert_eq!(verdict.format, EvidenceFormat::Coco);
        assert!(!verdict.hardware);
        assert_eq!(verdict.warnings, vec![SAMPLE_WARNING.to_string()]);
        assert_eq!(verdict.platform["svn"], "1");
        assert_eq!(verdict.signer, "none: sample evidence is unsigned");

        let mut other_key = key.clone();
        other_key["x"] = json!("I4HKmVXRM7alJZ2vSIxmpjQbHWoJtqKyvo94_eQ6WWZ");
        for (what, runtime) in [
            (
                "another nonce",
                super::super::runtime_data("dt1hjKQ+ZPwACfTZuLIkEAp7cR1ie5tnTHkifFmicmQ=", key, ""),
            ),
            (
                "another key",
                super::super::runtime_data(nonce, &other_key, ""),
            ),
            (
                "other additional evidence",
                super::super::runtime_data(nonce, key, "{}"),
            ),
        ] {
            let err = verify_coco(CocoTee::Sample, evidence, &runtime, None, &allow_sample())
                .expect_err(what);
            assert!(
                matches!(err, VerifyError::ReportDataMismatch { .. }),
                "{what}: {err}"
            );
        }
        // Any byte of the report data.
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(evidence["report_data"].as_str().expect("rd"))
            .expect("b64");
        for i in [0, 21, 47] {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1;
            let mut ev = evidence.clone();
            ev["report_data"] = json!(base64::engine::general_purpose::STANDARD.encode(&flipped));
            let err = verify_coco(CocoTee::Sample, &ev, &good, None, &allow_sample())
                .expect_err("flipped byte");
            assert!(
                matches!(err, VerifyError::ReportDataMismatch { .. }),
                "{err}"
            );
        }
        // Padded to a 64-byte report it is the same binding; anything else after it is not.
        let mut padded = bytes.clone();
        padded.resize(64, 0);
        let mut ev = evidence.clone();
        ev["report_data"] = json!(base64::engine::general_purpose::STANDARD.encode(&padded));
        verify_coco(CocoTee::Sample, &ev, &good, None, &allow_sample()).expect("padded");
        padded[63] = 1;
        ev["report_data"] = json!(base64::engine::general_purpose::STANDARD.encode(&padded));
        assert!(matches!(
            verify_coco(CocoTee::Sample, &ev, &good, None, &allow_sample()),
            Err(VerifyError::ReportDataMismatch { .. })
        ));

        let err = verify_coco(
            CocoTee::Sample,
            evidence,
            &good,
            None,
            &VerifyOptions::default(),
        )
        .expect_err("sample not allowed");
        assert!(matches!(err, VerifyError::SampleNotAllowed), "{err}");
        let err = verify_coco(
            CocoTee::Sample,
            &json!({"report_data": evidence["report_data"]}),
            &good,
            None,
            &allow_sample(),
        )
        .expect_err("no svn");
        assert!(
            matches!(&err, VerifyError::CocoFormat { tee: TeeType::Sample, reason } if reason.contains("svn")),
            "{err}"
        );
    }

    #[test]
    fn init_data_is_digested_as_coco_does() {
        use sha2::Digest as _;
        let body = "algorithm = \"sha384\"\nversion = \"0.1.0\"\n\n[data]\n\"aa.toml\" = '''\n[token_configs]\n'''\n";
        let d = init_data_digest("toml", body).expect("digest");
        assert_eq!(d.algorithm, "sha384");
        assert_eq!(d.digest, sha2::Sha384::digest(body.as_bytes()).to_vec());
        let d = init_data_digest("toml", &body.replace("sha384", "sha256")).expect("digest");
        assert_eq!(d.digest.len(), 32);
        let d = init_data_digest("toml", &body.replace("sha384", "sha512")).expect("digest");
        assert_eq!(d.digest.len(), 64);
        for (format, body, want) in [
            ("json", body, InitDataError::Format("json".into())),
            ("toml", "version = \"0.1.0\"\n", InitDataError::NoAlgorithm),
            (
                "toml",
                "algorithm = \"md5\"\n",
                InitDataError::Algorithm("md5".into()),
            ),
            // Only a top-level key names the algorithm.
            (
                "toml",
                "[data]\nalgorithm = \"sha384\"\n",
                InitDataError::NoAlgorithm,
            ),
        ] {
            assert_eq!(init_data_digest(format, body), Err(want));
        }
        assert!(matches!(
            init_data_digest("toml", "algorithm = "),
            Err(InitDataError::Toml(_))
        ));
    }

    /// What an init-data document says reaches the policy as Trustee gives it: the `data`
    /// table, its TOML entries as JSON, a Rego entry's `policy_data` as `agent_policy_claims`;
    /// only when a register binds the document.
    #[test]
    fn init_data_claims_are_its_data_table_and_only_when_bound() {
        let body = r#"version = "0.1.0"
algorithm = "sha384"

[data]
"aa.toml" = '''
[token_configs.kbs]
url = "https://kbs.example:8080"
'''
"cdh.toml" = "not = = toml"
"policy.rego" = '''
package agent_policy
default CreateContainerRequest := false
policy_data := {
  "containers": [{"OCI": {"Version": "1.1.0"}}]
}
'''
extra = { port = 8080, on = true, ratio = 0.5, list = [1, "two"] }
"#;
        let d = init_data_digest("toml", body).expect("digest");
        let c = &d.claims;
        assert_eq!(
            c["aa.toml"]["token_configs"]["kbs"]["url"],
            "https://kbs.example:8080"
        );
        // Not TOML: kept as the string it is.
        assert_eq!(c["cdh.toml"], "not = = toml");
        assert_eq!(
            c["agent_policy_claims"]["containers"][0]["OCI"]["Version"],
            "1.1.0"
        );
        assert!(c.get("policy.rego").is_none());
        assert_eq!(
            c["extra"],
            json!({"port": 8080, "on": true, "ratio": 0.5, "list": [1, "two"]})
        );
        // A Rego entry without policy_data stays as it is; no data table, no claims.
        let plain = body.replace("policy_data := {", "other := {");
        let d2 = init_data_digest("toml", &plain).expect("digest");
        assert!(d2.claims["policy.rego"]
            .as_str()
            .expect("kept")
            .contains("other := {"));
        assert!(init_data_digest("toml", "algorithm = \"sha256\"\n")
            .expect("digest")
            .claims
            .is_null());
        // Unbound (sample evidence): the digest is reported, the claims are not.
        let unbound = InitDataClaim::of(&d, false);
        assert!(unbound.claims.is_null());
        assert_eq!(InitDataClaim::of(&d, true).claims, d.claims);
    }

    /// A real TDX quote through the CoCo path: DCAP verifies it within its collateral window
    /// (and refuses it outside), then its report data is refused, since it is not a SHA-384
    /// binding followed by zeros as CoCo's (and vouch's) attester write it.
    #[cfg(feature = "tdx")]
    #[test]
    fn a_real_tdx_quote_goes_through_dcap_then_its_binding_is_checked() {
        let Some(v) = vectors() else {
            return;
        };
        let quote = read(&v, "tdx/tdx_quote");
        let col = crate::tdx::dcap::load_collateral(&read(&v, "tdx/tdx_quote_collateral.json"))
            .expect("collateral");
        let opts = |at| VerifyOptions {
            tdx_collateral: Some(col.clone()),
            at: Some(at),
            ..Default::default()
        };
        let ev = |q: &[u8]| json!({"quote": base64::engine::general_purpose::STANDARD.encode(q)});
        let runtime = super::super::runtime_data("n", &json!({"kty": "EC"}), "");
        let err = verify_coco(
            CocoTee::Tdx,
            &ev(&quote),
            &runtime,
            None,
            &opts(1_750_400_000),
        )
        .expect_err("unbound report data");
        assert!(
            matches!(&err, VerifyError::Rejected { tee: TeeType::Tdx, reason } if reason == "report data is not a SHA-384 binding followed by zeros"),
            "{err}"
        );
        let err = verify_coco(
            CocoTee::Tdx,
            &ev(&quote),
            &runtime,
            None,
            &opts(1_790_000_000),
        )
        .expect_err("outside the collateral window");
        assert!(
            matches!(&err, VerifyError::Rejected { reason, .. } if !reason.contains("binding")),
            "{err}"
        );
        // A flipped byte of the signed TD report.
        let mut tampered = quote.clone();
        tampered[48 + 16] ^= 1;
        let err = verify_coco(
            CocoTee::Tdx,
            &ev(&tampered),
            &runtime,
            None,
            &opts(1_750_400_000),
        )
        .expect_err("tampered");
        assert!(
            matches!(&err, VerifyError::Rejected { reason, .. } if !reason.contains("binding")),
            "{err}"
        );
        for bad in [
            json!({"quote": "not base64!"}),
            json!({"cc_eventlog": ""}),
            json!("x"),
        ] {
            let err = verify_coco(CocoTee::Tdx, &bad, &runtime, None, &opts(1_750_400_000))
                .expect_err("malformed");
            assert!(matches!(err, VerifyError::CocoFormat { .. }), "{err}");
        }
    }

    #[cfg(feature = "tdx")]
    #[test]
    fn init_data_must_be_the_quoted_mrconfigid() {
        let d = init_data_digest("toml", "algorithm = \"sha256\"\n").expect("digest");
        let mut platform = std::collections::BTreeMap::new();
        let mut padded = d.digest.clone();
        padded.resize(48, 0);
        platform.insert("mrconfigid".to_string(), hex::encode(&padded));
        tdx::check_init_data(&d, &platform).expect("bound");
        platform.insert("mrconfigid".to_string(), "0".repeat(96));
        let err = tdx::check_init_data(&d, &platform).expect_err("other init-data");
        assert!(
            matches!(&err, VerifyError::InitDataMismatch { register: "MRCONFIGID", found, .. } if *found == "0".repeat(96)),
            "{err}"
        );
    }

    /// A TCG2 log as CoCo's attestation agent writes it: the events of `log` (the CCEL), then
    /// `aael` lines as `EV_EVENT_TAG` records on RTMR3 with one SHA-384 digest each.
    #[cfg(feature = "tdx")]
    fn tcg2_with_aael(log: &crate::tcg::TcgLog, aael: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut spec = b"Spec ID Event03\0".to_vec();
        spec.extend_from_slice(&0u32.to_le_bytes());
        spec.extend_from_slice(&[0, 2, 0, 2]);
        spec.extend_from_slice(&(log.algorithms.len() as u32).to_le_bytes());
        for (alg, len) in &log.algorithms {
            spec.extend_from_slice(&alg.to_le_bytes());
            spec.extend_from_slice(&len.to_le_bytes());
        }
        spec.push(0);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&crate::tcg::EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0u8; 20]);
        out.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        out.extend_from_slice(&spec);
        let mut event = |index: u32, ty: u32, digests: &[(u16, Vec<u8>)], data: &[u8]| {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(digests.len() as u32).to_le_bytes());
            for (alg, d) in digests {
                out.extend_from_slice(&alg.to_le_bytes());
                out.extend_from_slice(d);
            }
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        };
        for e in &log.events {
            event(e.index, e.event_type, &e.digests, &e.data);
        }
        for line in aael {
            let data = super::super::aael_tagged_event(line);
            let d = sha384(&data).as_bytes().to_vec();
            event(4, EV_EVENT_TAG, &[(crate::tcg::ALG_SHA384, d)], &data);
        }
        out.extend_from_slice(&[0xff; 8]);
        out
    }

    /// The real CCEL of a GCP TD replays to its quote's RTMR0..2; AAEL records appended as
    /// CoCo's agent appends them replay to RTMR3 and read back as vouch records and others'
    /// events; a changed text, digest or register is refused by name.
    #[cfg(feature = "tdx")]
    #[test]
    fn ccel_and_aael_replay_to_the_quoted_rtmrs() {
        use crate::coco::TdxEvidence;
        let Some(v) = vectors() else {
            return;
        };
        let claims =
            crate::tdx::dcap::parse_quote(&read(&v, "ccel/cos-113-tdx-quote.dat")).expect("quote");
        let quoted: Vec<Digest384> = claims
            .rtmrs
            .iter()
            .map(|r| r.parse().expect("rtmr"))
            .collect();
        let ccel = read(&v, "ccel/ccel_data.dat");
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let ev = |log: &[u8], aa: Option<String>| TdxEvidence {
            cc_eventlog: Some(b64(log)),
            quote: String::new(),
            aa_eventlog: aa,
        };
        let log = tdx::runtime_log(&ev(&ccel, None), &quoted).expect("ccel replays");
        assert_eq!(log.firmware_log_events, Some(43));
        assert!(log.records.is_empty() && log.events.is_empty());

        let records = vec![
            vouch_measure::Record::new(0, "image.verified", json!({"image_digest": "sha256:ab"})),
            vouch_measure::Record::new(
                1,
                "container.create",
                json!({"id": "c1", "image_digest": "sha256:ab", "config_digest": "sha384:cd"}),
            ),
        ];
        let vouch_lines: Vec<String> = vouch_measure::aael::to_text(&records)
            .expect("text")
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect();
        let pull = r#"github.com/confidential-containers PullImage {"digest":"sha256:00","image":"alpine"}"#;
        let lines: Vec<&str> = [pull]
            .into_iter()
            .chain(vouch_lines.iter().map(String::as_str))
            .collect();
        let parsed = crate::tcg::parse(&ccel).expect("ccel");
        let with_aael = tcg2_with_aael(&parsed, &lines);
        let mut registers = quoted.clone();
        registers[3] = crate::tcg::parse(&with_aael)
            .expect("log")
            .rtmrs()
            .expect("replay")[3];
        let log = tdx::runtime_log(&ev(&with_aael, None), &registers).expect("replays");
        assert_eq!(log.records, records);
        assert_eq!(
            log.events,
            vec![AaelEvent {
                domain: "github.com/confidential-containers".into(),
                operation: "PullImage".into(),
                content: r#"{"digest":"sha256:00","image":"alpine"}"#.into(),
            }]
        );
        assert_eq!(crate::verify::containers_of(&log.records)[0].id, "c1");

        // The quote's RTMR3 is not what the log replays to.
        let err = tdx::runtime_log(&ev(&with_aael, None), &quoted).expect_err("rtmr3");
        assert!(
            matches!(err, VerifyError::FirmwareReplay { index: 3, .. }),
            "{err}"
        );
        // A changed character of a record's text: its digest no longer covers it.
        let at = with_aael
            .windows(5)
            .position(|w| w == b"alpin")
            .expect("text");
        let mut changed = with_aael.clone();
        changed[at] = b'A';
        let err = tdx::runtime_log(&ev(&changed, None), &registers).expect_err("text");
        assert!(
            matches!(&err, VerifyError::AaelEvent { reason, .. } if reason.contains("digest")),
            "{err}"
        );
        // The runtime log twice (in the TCG2 log and as text) is refused.
        let err = tdx::runtime_log(&ev(&with_aael, Some("INIT sha384/00\n".into())), &registers)
            .expect_err("two logs");
        assert!(matches!(err, VerifyError::CocoFormat { .. }), "{err}");

        // The earlier form: the CCEL for RTMR0..2 and AAEL text for RTMR3.
        let text = vouch_measure::aael::to_text(&records).expect("text");
        let mut registers = quoted.clone();
        registers[3] = vouch_measure::aael::replay_text(&text).expect("replay");
        let log = tdx::runtime_log(&ev(&ccel, Some(text.clone())), &registers).expect("text log");
        assert_eq!(log.records, records);
        let err = tdx::runtime_log(&ev(&ccel, Some(text)), &quoted).expect_err("rtmr3");
        assert!(
            matches!(err, VerifyError::ReplayMismatch { index: 3, .. }),
            "{err}"
        );
    }

    fn sim_journal(dir: &std::path::Path) -> crate::Journal {
        let sim =
            std::sync::Arc::new(crate::sim::SimAttester::open(&dir.join("sim")).expect("sim"));
        let (mut j, _) =
            crate::Journal::open(&dir.join("log"), sim, crate::VOUCH_REGISTER).expect("journal");
        j.append("image.verified", json!({"image_digest": "sha256:ab"}))
            .expect("append");
        j.append(
            "container.create",
            json!({"id": "c1", "image_digest": "sha256:ab", "config_digest": "sha384:cd"}),
        )
        .expect("append");
        j
    }

    /// vouchd on the sim TEE, asked by a CoCo KBS, presents sample evidence that binds CoCo's
    /// runtime data: it verifies for that runtime data only.
    #[test]
    fn the_sim_tees_coco_evidence_is_sample_evidence_bound_as_coco_binds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = sim_journal(dir.path());
        let key =
            json!({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "AA", "y": "BB"});
        let runtime = super::super::runtime_data("nonce-1", &key, "");
        let ev = j.coco_evidence(&runtime).expect("evidence");
        let v = verify_coco(CocoTee::Sample, &ev, &runtime, None, &allow_sample()).expect("verify");
        assert_eq!(v.tee, TeeType::Sample);
        let other = super::super::runtime_data("nonce-2", &key, "");
        assert!(matches!(
            verify_coco(CocoTee::Sample, &ev, &other, None, &allow_sample()),
            Err(VerifyError::ReportDataMismatch { .. })
        ));
    }

    /// vouch's log appended to the real CCEL as AAEL records replays to the quoted RTMR0..2 and
    /// to vouch's register, and reads back as its records; without a CCEL, to the register alone.
    #[cfg(feature = "tdx")]
    #[test]
    fn vouchs_log_in_the_tcg2_log_replays_to_its_register_and_reads_back() {
        use crate::coco::TdxEvidence;
        let Some(v) = vectors() else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let j = sim_journal(dir.path());
        let register = j.register().expect("register");
        let claims =
            crate::tdx::dcap::parse_quote(&read(&v, "ccel/cos-113-tdx-quote.dat")).expect("quote");
        let mut registers: Vec<Digest384> = claims
            .rtmrs
            .iter()
            .map(|r| r.parse().expect("rtmr"))
            .collect();
        registers[3] = register;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let ev = |log: Vec<u8>| TdxEvidence {
            cc_eventlog: Some(b64(&log)),
            quote: String::new(),
            aa_eventlog: None,
        };
        let ccel = read(&v, "ccel/ccel_data.dat");
        let log = crate::coco::cc_eventlog(Some(&ccel), j.records()).expect("log");
        let got = tdx::runtime_log(&ev(log), &registers).expect("replays");
        assert_eq!(got.records, j.records());
        assert_eq!(
            got.firmware_log_events,
            Some(43 + 3),
            "43 firmware events, INIT and 2 records"
        );
        assert!(got.events.is_empty());

        let alone = crate::coco::cc_eventlog(None, j.records()).expect("log");
        let zero = vec![Digest384::ZERO, Digest384::ZERO, Digest384::ZERO, register];
        let got = tdx::runtime_log(&ev(alone), &zero).expect("replays");
        assert_eq!(got.records, j.records());
        // A register the log does not replay to.
        assert!(matches!(
            tdx::runtime_log(
                &ev(crate::coco::cc_eventlog(None, &j.records()[..1]).expect("log")),
                &zero
            ),
            Err(VerifyError::FirmwareReplay { index: 3, .. })
        ));
    }

    /// A real Google Cloud vTPM quote in CoCo's TPM form (its key as a SubjectPublicKeyInfo, the
    /// SHA-256 PCRs as a list): its signature and PCR digest verify for its own nonce; for a
    /// CoCo binding it is refused by the nonce, after the key's pin and the signature; an
    /// unpinned key, a changed byte or PCR, and init-data not in PCR 8 are refused by name.
    #[cfg(feature = "tpm")]
    #[test]
    fn a_real_vtpm_quote_in_cocos_tpm_form() {
        use crate::coco::{TpmEvidence, TpmQuoteForm};
        let Some(v) = vectors() else {
            return;
        };
        let dir = "tpm/gce-vtpm-nonce9009";
        let ak = crate::tpm::parse_ak(&read(&v, &format!("{dir}/ak_pub.tpmt_public"))).expect("ak");
        let spki = crate::tpm::ak_spki(&ak);
        let fingerprint = crate::tpm::spki_fingerprint(&spki);
        let message = read(&v, &format!("{dir}/quote_sha256.tpms_attest"));
        let signature = read(&v, &format!("{dir}/quote_sha256.tpmt_signature"));
        let by_index: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(&read(&v, &format!("{dir}/quote_sha256.pcrs.json")))
                .expect("pcrs");
        let pcrs: Vec<String> = (0..24).map(|i| by_index[&i.to_string()].clone()).collect();
        let raw: Vec<Vec<u8>> = pcrs.iter().map(|h| hex::decode(h).expect("hex")).collect();

        let ours = tpm::ak_of_spki(&spki).expect("the SPKI reads back");
        assert_eq!(ours, ak);
        // vouchd's encoding is a SubjectPublicKeyInfo to an independent DER reader too.
        use der::Decode as _;
        let read_back = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(&spki).expect("SPKI");
        assert_eq!(read_back.algorithm.oid.to_string(), "1.2.840.113549.1.1.1");
        let covered = tpm::check_quote(
            &message,
            tpm::QuoteSignature::Tpmt(&signature),
            &ak,
            &[0x90, 0x09],
            &raw,
        )
        .expect("its own nonce");
        assert_eq!(covered, (0..24).collect::<Vec<u32>>());

        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let evidence = |message: &[u8], pcrs: &[String]| {
            serde_json::to_value(TpmEvidence {
                tpm_quote: TpmQuoteForm {
                    signature: b64(&signature),
                    message: b64(message),
                    pcrs: pcrs.to_vec(),
                },
                ak_public: b64(&spki),
            })
            .expect("json")
        };
        let runtime = super::super::runtime_data("n", &json!({"kty": "EC"}), "");
        let pinned = VerifyOptions {
            tpm_aks: vec![fingerprint.clone()],
            ..Default::default()
        };
        let err = verify_coco(
            CocoTee::Tpm,
            &evidence(&message, &pcrs),
            &runtime,
            None,
            &pinned,
        )
        .expect_err("bound to 9009");
        assert!(
            matches!(&err, VerifyError::ReportDataMismatch { quoted, .. } if quoted == "9009"),
            "{err}"
        );
        let err = verify_coco(
            CocoTee::Tpm,
            &evidence(&message, &pcrs),
            &runtime,
            None,
            &VerifyOptions::default(),
        )
        .expect_err("unpinned");
        assert!(
            matches!(&err, VerifyError::UntrustedAk { fingerprint: f } if *f == fingerprint),
            "{err}"
        );
        let mut changed = message.clone();
        changed[10] ^= 1;
        let err = verify_coco(
            CocoTee::Tpm,
            &evidence(&changed, &pcrs),
            &runtime,
            None,
            &pinned,
        )
        .expect_err("changed");
        assert!(matches!(err, VerifyError::BadSignature), "{err}");
        let mut other = raw.clone();
        other[7][0] ^= 1;
        let err = tpm::check_quote(
            &message,
            tpm::QuoteSignature::Tpmt(&signature),
            &ak,
            &[0x90, 0x09],
            &other,
        )
        .expect_err("another PCR 7");
        assert!(
            matches!(&err, VerifyError::Rejected { reason, .. } if reason.contains("PCR digest mismatch")),
            "{err}"
        );
        let err = tpm::check_quote(
            &message,
            tpm::QuoteSignature::Tpmt(&signature),
            &ak,
            &[0x90, 0x09],
            &raw[..20],
        )
        .expect_err("PCRs missing");
        assert!(
            matches!(&err, VerifyError::Rejected { reason, .. } if reason.contains("not given")),
            "{err}"
        );

        // Init-data: PCR 8 = SHA-256(zeros || digest), sha256 digests only.
        use sha2::Digest as _;
        let d = init_data_digest("toml", "algorithm = \"sha256\"\n").expect("digest");
        let mut pcr8 = raw.clone();
        let mut input = [0u8; 64];
        input[32..].copy_from_slice(&d.digest);
        pcr8[8] = sha2::Sha256::digest(input).to_vec();
        tpm::check_init_data(&d, Some(&pcr8[8])).expect("bound");
        assert!(matches!(
            tpm::check_init_data(&d, None),
            Err(VerifyError::InitDataMismatch {
                register: "PCR8",
                ..
            })
        ));
        assert!(matches!(
            tpm::check_init_data(&d, Some(&raw[8])),
            Err(VerifyError::InitDataMismatch {
                register: "PCR8",
                ..
            })
        ));
        let d384 = init_data_digest("toml", "algorithm = \"sha384\"\n").expect("digest");
        assert!(matches!(
            tpm::check_init_data(&d384, Some(&pcr8[8])),
            Err(VerifyError::CocoFormat {
                tee: TeeType::Tpm,
                ..
            })
        ));
        for bad in [
            json!({"tpm_quote": {"signature": "", "message": "", "pcrs": []}, "ak_public": b64(b"not DER")}),
            json!({"ak_public": b64(&spki)}),
        ] {
            let err =
                verify_coco(CocoTee::Tpm, &bad, &runtime, None, &pinned).expect_err("malformed");
            assert!(
                matches!(
                    err,
                    VerifyError::CocoFormat {
                        tee: TeeType::Tpm,
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    /// A real SEV-SNP report (Milan) in CoCo's form: written back byte for byte, verified
    /// against its VCEK and the ASK/ARK (from the cert chain or the verifier's), refused as a
    /// debug guest by default, and for a binding it does not hold; a changed field or a missing
    /// certificate is refused by name.
    #[cfg(feature = "snp")]
    #[test]
    fn a_real_snp_report_in_cocos_form() {
        let Some(v) = vectors() else {
            return;
        };
        let bin = read(&v, "snp/attestation.bin");
        let vcek = read(&v, "snp/vcek.der");
        let chain = read(&v, "snp/ask_ark_milan.pem");
        let certs = crate::pem::certificates(&chain);
        let report = vouch_testkit::corpus::sev_report_json(&bin);
        let parsed: snp::Report = serde_json::from_value(report.clone()).expect("sev's form");
        assert_eq!(
            snp::report_bytes(&parsed).expect("bytes"),
            bin,
            "written back byte for byte"
        );

        // Its own report data (0102030405, then zeros) as the binding: it verifies, once its
        // debug policy is allowed.
        let mut own = [0u8; 48];
        own.copy_from_slice(&bin[0x50..0x80]);
        let debug_ok = VerifyOptions {
            at: Some(1_750_400_000),
            snp_policy: crate::snp::SnpPolicy {
                allow_debug: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let claims =
            snp::check_report(&bin, &vcek, &chain, &Digest384(own), &debug_ok).expect("verifies");
        assert_eq!(claims.version, 2);
        let default = VerifyOptions {
            at: Some(1_750_400_000),
            ..Default::default()
        };
        let err = snp::check_report(&bin, &vcek, &chain, &Digest384(own), &default)
            .expect_err("a debug guest");
        assert!(
            matches!(&err, VerifyError::Rejected { reason, .. } if reason.contains("debugging")),
            "{err}"
        );

        let entry = |kind: &str, der: &[u8]| json!({"cert_type": kind, "data": der.to_vec()});
        let evidence = |report: &Value, chain: Vec<Value>| json!({"attestation_report": report, "cert_chain": chain});
        let full = vec![
            entry("VCEK", &vcek),
            entry("ASK", &certs[0]),
            entry("ARK", &certs[1]),
        ];
        let runtime = super::super::runtime_data("n", &json!({"kty": "EC"}), "");
        let err = verify_coco(
            CocoTee::Snp,
            &evidence(&report, full.clone()),
            &runtime,
            None,
            &debug_ok,
        )
        .expect_err("another binding");
        assert!(
            matches!(&err, VerifyError::ReportDataMismatch { quoted, .. } if quoted.starts_with("0102030405")),
            "{err}"
        );
        // The VCEK alone: the ASK and ARK come from the verifier, or the report is refused.
        let vcek_only = vec![entry("VCEK", &vcek)];
        let err = verify_coco(
            CocoTee::Snp,
            &evidence(&report, vcek_only.clone()),
            &runtime,
            None,
            &debug_ok,
        )
        .expect_err("no chain");
        assert!(
            matches!(&err, VerifyError::Rejected { reason, .. } if reason.contains("no ASK and ARK")),
            "{err}"
        );
        let with_chain = VerifyOptions {
            snp_chain: Some(chain.clone()),
            ..debug_ok.clone()
        };
        let err = verify_coco(
            CocoTee::Snp,
            &evidence(&report, vcek_only),
            &runtime,
            None,
            &with_chain,
        )
        .expect_err("another binding");
        assert!(
            matches!(err, VerifyError::ReportDataMismatch { .. }),
            "{err}"
        );
        // A changed measurement byte: the signature no longer covers it.
        let mut changed = report.clone();
        changed["measurement"][0] = json!(bin[0x90] ^ 1);
        let err = verify_coco(
            CocoTee::Snp,
            &evidence(&changed, full.clone()),
            &runtime,
            None,
            &debug_ok,
        )
        .expect_err("changed");
        assert!(
            matches!(&err, VerifyError::Rejected { reason, .. } if reason.contains("signature")),
            "{err}"
        );
        for (bad, why) in [
            (evidence(&report, vec![entry("ASK", &certs[0])]), "no VCEK"),
            (
                json!({"attestation_report": {"version": 2}}),
                "missing field",
            ),
        ] {
            let err = verify_coco(CocoTee::Snp, &bad, &runtime, None, &debug_ok).expect_err(why);
            assert!(
                matches!(&err, VerifyError::CocoFormat { tee: TeeType::Snp, reason } if reason.contains(why)),
                "{err}"
            );
        }
        let mut short = report.clone();
        short["chip_id"] = json!([1, 2, 3]);
        let err = verify_coco(
            CocoTee::Snp,
            &evidence(&short, full),
            &runtime,
            None,
            &debug_ok,
        )
        .expect_err("short");
        assert!(
            matches!(&err, VerifyError::CocoFormat { reason, .. } if reason == "chip_id is 3 bytes, not 64"),
            "{err}"
        );

        // Init-data: HOST_DATA holds its digest (padded or cut to 32 bytes).
        let d = init_data_digest("toml", "algorithm = \"sha384\"\n").expect("digest");
        snp::check_init_data(&d, &hex::encode(&d.digest[..32])).expect("bound");
        assert!(matches!(
            snp::check_init_data(&d, &claims.host_data),
            Err(VerifyError::InitDataMismatch {
                register: "HOST_DATA",
                ..
            })
        ));
    }
}
