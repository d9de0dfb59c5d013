//! The TPM 2.0 attester (through `tss-esapi`): vouch's register is one application PCR (23 by
//! default), extended in its SHA-384 bank with each record's digest and in its SHA-256 bank with
//! SHA-256 of that digest; quotes are signed by an RSA attestation key kept at a persistent handle.
//!
//! The ESAPI context is not thread-safe, so it lives on a thread of its own; the attester sends it
//! requests. The TPM is reached through any TCTI: `device:/dev/tpmrm0` on a machine, or
//! `swtpm:host=127.0.0.1,port=P` for the simulator.

use std::collections::BTreeMap;
use std::convert::TryFrom;
use std::path::Path;
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::Mutex;

use base64::Engine as _;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PcrHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::CapabilityData;
use tss_esapi::structures::{
    Data, Digest, DigestValues, HashScheme, PcrSelectionListBuilder, PcrSlot, Public,
    PublicBuilder, PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent, RsaScheme,
    SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::Context;
use vouch_measure::Digest384;

use super::{ak_fingerprint, sha256_bank_digest, TpmQuote, AK_HANDLE, FIRMWARE_LOG, PLATFORM_PCRS};
use crate::{AttestError, Attester, TeeType, VOUCH_REGISTER};

type Reply<T> = mpsc::Sender<Result<T, String>>;

enum Request {
    Extend(Digest384, Reply<()>),
    Read(Reply<Digest384>),
    Quote(Digest384, Reply<Vec<u8>>),
    CocoQuote(Vec<u8>, Reply<Vec<u8>>),
    NvRead(u32, Reply<Vec<u8>>),
}

pub struct TpmAttester {
    tx: Mutex<mpsc::Sender<Request>>,
    pcr: u8,
    ak_public: Vec<u8>,
    ak_fingerprint: String,
    firmware_log: Option<Vec<u8>>,
    /// The AK's certificate and its intermediates (DER, base64), carried in every quote.
    ak_certs: Option<(String, Vec<String>)>,
}

fn tpm_err(what: &str) -> impl Fn(tss_esapi::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn device_err(e: String) -> AttestError {
    AttestError::Device(e)
}

fn pcr_slot(pcr: u8) -> Result<PcrSlot, String> {
    PcrSlot::try_from(1u32 << pcr).map_err(|e| format!("PCR {pcr}: {e}"))
}

fn pcr_handle(pcr: u8) -> Result<PcrHandle, String> {
    PcrHandle::try_from(u32::from(pcr)).map_err(|e| format!("PCR {pcr}: {e}"))
}

/// The attestation key's template: RSA-2048, restricted signing, RSASSA with SHA-256, created
/// in the endorsement hierarchy (so the same TPM always derives the same key).
fn ak_template() -> Result<Public, String> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .with_restricted(true)
        .build()
        .map_err(tpm_err("AK attributes"))?;
    let params = PublicRsaParametersBuilder::new()
        .with_symmetric(SymmetricDefinitionObject::Null)
        .with_scheme(RsaScheme::RsaSsa(HashScheme::new(HashingAlgorithm::Sha256)))
        .with_key_bits(RsaKeyBits::Rsa2048)
        .with_exponent(RsaExponent::default())
        .with_is_signing_key(true)
        .with_restricted(true)
        .build()
        .map_err(tpm_err("AK parameters"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Rsa)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_rsa_parameters(params)
        .with_rsa_unique_identifier(PublicKeyRsa::default())
        .build()
        .map_err(tpm_err("AK template"))
}

struct Device {
    ctx: Context,
    ak: KeyHandle,
    ak_public: Vec<u8>,
    pcr: u8,
}

impl Device {
    /// The whole content of an NV index, read with owner authorization, or else with the
    /// index's own (empty) authorization, as cloud vTPMs keep their AK certificates.
    fn nv_read(&mut self, index: u32) -> Result<Vec<u8>, String> {
        use tss_esapi::abstraction::nv::read_full;
        use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle};
        use tss_esapi::interface_types::resource_handles::NvAuth;
        let handle = NvIndexTpmHandle::new(index).map_err(tpm_err("NV index"))?;
        let owner = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                read_full(c, NvAuth::Owner, handle)
            });
        let first = match owner {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                let object = c.tr_from_tpm_public(handle.into())?;
                read_full(c, NvAuth::NvIndex(NvIndexHandle::from(object)), handle)
            })
            .map_err(|e| {
                format!("reading NV index {index:#x}: with owner authorization: {first}; with its own: {e}")
            })
    }

    fn open(tcti: &str, pcr: u8) -> Result<Device, String> {
        let conf = TctiNameConf::from_str(tcti).map_err(tpm_err("TCTI"))?;
        let mut ctx = Context::new(conf).map_err(tpm_err("cannot reach the TPM"))?;
        let persistent = PersistentTpmHandle::new(AK_HANDLE).map_err(tpm_err("AK handle"))?;
        // The key kept from an earlier start, if it is the one vouch makes.
        let (handles, _) = ctx
            .get_capability(CapabilityType::Handles, AK_HANDLE, 1)
            .map_err(tpm_err("listing persistent handles"))?;
        let present = matches!(&handles, CapabilityData::Handles(list)
            if list.as_ref().contains(&TpmHandle::Persistent(persistent)));
        let kept = if present {
            Some(KeyHandle::from(
                ctx.tr_from_tpm_public(TpmHandle::Persistent(persistent))
                    .map_err(tpm_err("opening the kept AK"))?,
            ))
        } else {
            None
        };
        let template = ak_template()?;
        let ak = match kept {
            Some(handle) => {
                let (public, _, _) = ctx
                    .read_public(handle)
                    .map_err(tpm_err("reading the kept AK"))?;
                if public.object_attributes() != template.object_attributes() {
                    return Err(format!(
                        "persistent handle {AK_HANDLE:#x} holds a key that is not a vouch attestation key; evict it (tpm2_evictcontrol -c {AK_HANDLE:#x}) or free the handle"
                    ));
                }
                handle
            }
            None => {
                let primary = ctx
                    .execute_with_session(Some(AuthSession::Password), |c| {
                        c.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
                    })
                    .map_err(tpm_err("creating the attestation key"))?;
                let kept = ctx
                    .execute_with_session(Some(AuthSession::Password), |c| {
                        c.evict_control(
                            Provision::Owner,
                            ObjectHandle::from(primary.key_handle),
                            Persistent::Persistent(persistent),
                        )
                    })
                    .map_err(tpm_err("persisting the attestation key"));
                // No resource manager may be present: never leave a transient object behind.
                let _ = ctx.flush_context(ObjectHandle::from(primary.key_handle));
                KeyHandle::from(kept?)
            }
        };
        let (public, _, _) = ctx.read_public(ak).map_err(tpm_err("reading the AK"))?;
        let ak_public = public.marshall().map_err(tpm_err("encoding the AK"))?;
        Ok(Device {
            ctx,
            ak,
            ak_public,
            pcr,
        })
    }

    fn extend(&mut self, d: &Digest384) -> Result<(), String> {
        let mut values = DigestValues::new();
        values.set(
            HashingAlgorithm::Sha384,
            Digest::try_from(d.as_bytes().to_vec()).map_err(tpm_err("digest"))?,
        );
        values.set(
            HashingAlgorithm::Sha256,
            Digest::try_from(sha256_bank_digest(d).to_vec()).map_err(tpm_err("digest"))?,
        );
        let handle = pcr_handle(self.pcr)?;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.pcr_extend(handle, values)
            })
            .map_err(tpm_err("extending the PCR"))
    }

    /// PCR values of `bank` at `pcrs`, in the order given. A TPM answers at most eight PCRs per
    /// read, so larger selections are read in groups.
    fn read(&mut self, bank: HashingAlgorithm, pcrs: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let mut values = Vec::with_capacity(pcrs.len());
        for group in pcrs.chunks(8) {
            let slots = group
                .iter()
                .map(|p| pcr_slot(*p))
                .collect::<Result<Vec<_>, _>>()?;
            let selection = PcrSelectionListBuilder::new()
                .with_selection(bank, &slots)
                .build()
                .map_err(tpm_err("PCR selection"))?;
            let (_, _, digests) = self
                .ctx
                .execute_without_session(|c| c.pcr_read(selection))
                .map_err(tpm_err("reading PCRs"))?;
            let got: Vec<Vec<u8>> = digests.value().iter().map(|d| d.to_vec()).collect();
            if got.len() != group.len() {
                return Err(format!(
                    "the TPM returned {} of {} PCRs (is the {bank:?} bank allocated?)",
                    got.len(),
                    group.len()
                ));
            }
            values.extend(got);
        }
        Ok(values)
    }

    fn register(&mut self) -> Result<Digest384, String> {
        let v = self.read(HashingAlgorithm::Sha384, &[self.pcr])?;
        let bytes: [u8; 48] = v[0]
            .as_slice()
            .try_into()
            .map_err(|_| "the SHA-384 PCR value is not 48 bytes".to_string())?;
        Ok(Digest384(bytes))
    }

    /// A quote of `selection` by the AK (RSASSA, SHA-256) with `nonce` as qualifying data.
    fn sign_quote(
        &mut self,
        nonce: &[u8],
        selection: tss_esapi::structures::PcrSelectionList,
    ) -> Result<
        (
            tss_esapi::structures::Attest,
            tss_esapi::structures::Signature,
        ),
        String,
    > {
        let qualifying = Data::try_from(nonce.to_vec()).map_err(tpm_err("nonce"))?;
        let ak = self.ak;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.quote(
                    ak,
                    qualifying,
                    SignatureScheme::RsaSsa {
                        hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
                    },
                    selection,
                )
            })
            .map_err(tpm_err("quoting"))
    }

    fn quote(&mut self, report_data: &Digest384) -> Result<Vec<u8>, String> {
        let mut platform: Vec<u8> = PLATFORM_PCRS.to_vec();
        platform.push(self.pcr);
        platform.sort_unstable();
        platform.dedup();
        let slots = |pcrs: &[u8]| {
            pcrs.iter()
                .map(|p| pcr_slot(*p))
                .collect::<Result<Vec<_>, _>>()
        };
        let selection = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &slots(&platform)?)
            .with_selection(HashingAlgorithm::Sha384, &slots(&[self.pcr])?)
            .build()
            .map_err(tpm_err("PCR selection"))?;
        let (attest, signature) = self.sign_quote(report_data.as_bytes(), selection)?;
        // The values the quote covers, read right after it. A PCR extended in between would
        // make the digest check fail at the verifier, so the journal serializes the two.
        let sha256 = self.read(HashingAlgorithm::Sha256, &platform)?;
        let sha384 = self.read(HashingAlgorithm::Sha384, &[self.pcr])?;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut pcrs = BTreeMap::new();
        pcrs.insert(
            "sha256".to_string(),
            platform
                .iter()
                .zip(sha256)
                .map(|(i, v)| (u32::from(*i), hex::encode(v)))
                .collect(),
        );
        pcrs.insert(
            "sha384".to_string(),
            [(u32::from(self.pcr), hex::encode(&sha384[0]))]
                .into_iter()
                .collect(),
        );
        let quote = TpmQuote {
            pcr: self.pcr,
            attest: b64(&attest.marshall().map_err(tpm_err("encoding the quote"))?),
            signature: b64(&signature
                .marshall()
                .map_err(tpm_err("encoding the signature"))?),
            ak: b64(&self.ak_public),
            ak_cert: None,
            ak_chain: Vec::new(),
            pcrs,
        };
        serde_json::to_vec(&quote).map_err(|e| e.to_string())
    }

    /// A quote in Confidential Containers' TPM form: the whole SHA-256 bank (PCRs 0-23, as
    /// CoCo's verifier hashes them), `nonce` as qualifying data, the AK as a
    /// SubjectPublicKeyInfo.
    fn coco_quote(&mut self, nonce: &[u8]) -> Result<Vec<u8>, String> {
        let all: Vec<u8> = (0..24).collect();
        let slots = all
            .iter()
            .map(|p| pcr_slot(*p))
            .collect::<Result<Vec<_>, _>>()?;
        let selection = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &slots)
            .build()
            .map_err(tpm_err("PCR selection"))?;
        let (attest, signature) = self.sign_quote(nonce, selection)?;
        let pcrs = self.read(HashingAlgorithm::Sha256, &all)?;
        let spki = super::ak_spki(&super::parse_ak(&self.ak_public).map_err(|e| e.to_string())?);
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let evidence = crate::coco::TpmEvidence {
            tpm_quote: crate::coco::TpmQuoteForm {
                signature: b64(&signature
                    .marshall()
                    .map_err(tpm_err("encoding the signature"))?),
                message: b64(&attest.marshall().map_err(tpm_err("encoding the quote"))?),
                pcrs: pcrs.iter().map(hex::encode).collect(),
            },
            ak_public: b64(&spki),
        };
        serde_json::to_vec(&evidence).map_err(|e| e.to_string())
    }
}

impl TpmAttester {
    /// Connect to the TPM at `tcti`, take (or create and persist) the attestation key, and use
    /// application PCR `pcr`.
    pub fn open(tcti: &str, pcr: u8) -> Result<Self, AttestError> {
        if !(16..=23).contains(&pcr) {
            return Err(AttestError::Device(format!(
                "PCR {pcr} is not an application PCR (16-23)"
            )));
        }
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Vec<u8>, String>>();
        let conf = tcti.to_string();
        std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || {
                let mut dev = match Device::open(&conf, pcr) {
                    Ok(d) => {
                        let _ = ready_tx.send(Ok(d.ak_public.clone()));
                        d
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for req in rx {
                    match req {
                        Request::Extend(d, r) => {
                            let _ = r.send(dev.extend(&d));
                        }
                        Request::Read(r) => {
                            let _ = r.send(dev.register());
                        }
                        Request::Quote(d, r) => {
                            let _ = r.send(dev.quote(&d));
                        }
                        Request::CocoQuote(nonce, r) => {
                            let _ = r.send(dev.coco_quote(&nonce));
                        }
                        Request::NvRead(index, r) => {
                            let _ = r.send(dev.nv_read(index));
                        }
                    }
                }
            })
            .map_err(|e| AttestError::Device(format!("cannot start the TPM thread: {e}")))?;
        let ak_public = ready_rx
            .recv()
            .map_err(|_| AttestError::Device("the TPM thread ended".into()))?
            .map_err(device_err)?;
        let firmware_log = tcti
            .starts_with("device")
            .then(|| std::fs::read(FIRMWARE_LOG).ok())
            .flatten();
        Ok(TpmAttester {
            tx: Mutex::new(tx),
            pcr,
            ak_fingerprint: ak_fingerprint(&ak_public),
            ak_public,
            firmware_log,
            ak_certs: None,
        })
    }

    /// The whole content of an NV index (e.g. where a cloud vTPM keeps its AK certificate).
    pub(crate) fn nv_read(&self, index: u32) -> Result<Vec<u8>, AttestError> {
        self.call(|r| Request::NvRead(index, r))
    }

    /// Carry the AK's certificate (first) and its intermediate CAs in every quote, so verifiers
    /// can trust the AK through its issuer. Refused unless the certificate's key is this AK.
    pub(crate) fn with_ak_certs(mut self, certs: &[Vec<u8>]) -> Result<Self, AttestError> {
        let (leaf, chain) = certs
            .split_first()
            .ok_or_else(|| AttestError::Device("no AK certificate given".into()))?;
        let ak = super::parse_ak(&self.ak_public)
            .map_err(|e| AttestError::Device(format!("attestation key: {e}")))?;
        super::akcert::certifies(leaf, &ak).map_err(|e| {
            AttestError::Device(format!("the AK certificate does not fit this TPM: {e}"))
        })?;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        self.ak_certs = Some((b64(leaf), chain.iter().map(|c| b64(c)).collect()));
        Ok(self)
    }

    /// A TPM device the kernel exposes (through its resource manager), if any.
    pub(crate) fn detect() -> Option<String> {
        ["/dev/tpmrm0"]
            .iter()
            .find(|p| Path::new(p).exists())
            .map(|p| format!("device:{p}"))
    }

    pub fn pcr(&self) -> u8 {
        self.pcr
    }

    /// The fingerprint a verifier pins this TPM's attestation key by.
    pub fn ak_fingerprint(&self) -> &str {
        &self.ak_fingerprint
    }

    fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, AttestError> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(make(tx))
            .map_err(|_| AttestError::Device("the TPM thread ended".into()))?;
        rx.recv()
            .map_err(|_| AttestError::Device("the TPM thread ended".into()))?
            .map_err(device_err)
    }

    fn check(&self, index: usize) -> Result<(), AttestError> {
        if index == VOUCH_REGISTER {
            Ok(())
        } else {
            Err(AttestError::NoSuchRegister(index))
        }
    }
}

impl Attester for TpmAttester {
    fn tee(&self) -> TeeType {
        TeeType::Tpm
    }

    fn extend(&self, index: usize, digest: &Digest384) -> Result<(), AttestError> {
        self.check(index)?;
        self.call(|r| Request::Extend(*digest, r))
    }

    fn register(&self, index: usize) -> Result<Digest384, AttestError> {
        self.check(index)?;
        self.call(Request::Read)
    }

    fn quote(&self, report_data: &Digest384) -> Result<Vec<u8>, AttestError> {
        let quote = self.call(|r| Request::Quote(*report_data, r))?;
        let Some((cert, chain)) = &self.ak_certs else {
            return Ok(quote);
        };
        let mut q: TpmQuote = serde_json::from_slice(&quote)
            .map_err(|e| AttestError::Device(format!("quote envelope: {e}")))?;
        q.ak_cert = Some(cert.clone());
        q.ak_chain = chain.clone();
        serde_json::to_vec(&q).map_err(|e| AttestError::Device(format!("quote envelope: {e}")))
    }

    fn firmware_log(&self) -> Option<Vec<u8>> {
        self.firmware_log.clone()
    }

    fn attestation_key(&self) -> Option<String> {
        Some(self.ak_fingerprint.clone())
    }

    /// CoCo's TPM form binds the first 32 bytes of the binding (CoCo's attester cuts it so).
    fn coco_quote(&self, report_data: &Digest384) -> Result<Option<Vec<u8>>, AttestError> {
        let nonce = report_data.as_bytes()[..32].to_vec();
        self.call(|r| Request::CocoQuote(nonce, r)).map(Some)
    }
}
