//! Where TDX and SGX quote collateral comes from: a local collateral directory (offline), and a
//! PCCS (the v4 API of Intel's Provisioning Certificate Caching Service). What a PCCS answers is
//! kept in the directory, so the next verification of a quote from the same platform type is
//! offline.
//!
//! Collateral is chosen by the quote's FMSPC (from its PCK certificate), its PCK CA (processor or
//! platform) and its TEE (TDX or SGX). Nothing here is trusted: dcap-qvl checks every signature
//! and CRL against the pinned Intel root when the quote is verified.
//!
//! The transport is the caller's ([`HttpGet`]), so this crate opens no connections itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dcap_qvl::QuoteCollateralV3;
use serde_json::Value;

use super::dcap::{load_collateral, DcapError};

#[derive(Debug, thiserror::Error)]
pub enum CollateralError {
    #[error("cannot read the quote's PCK certificate: {0}")]
    Quote(String),
    #[error("no collateral for {key} in {dir} (add it there, or give a PCCS URL)")]
    Missing { key: CollateralKey, dir: String },
    #[error("collateral file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: DcapError,
    },
    #[error("cannot keep collateral in {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("collateral directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("PCCS {url}: {reason}")]
    Pccs { url: String, reason: String },
}

/// Which collateral a quote needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CollateralKey {
    /// `tdx` or `sgx`.
    pub tee: &'static str,
    /// Upper-case hex, as Intel writes it.
    pub fmspc: String,
    /// `processor` or `platform`.
    pub ca: &'static str,
}

impl std::fmt::Display for CollateralKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} FMSPC {} ({} CA)",
            self.tee.to_uppercase(),
            self.fmspc,
            self.ca
        )
    }
}

impl CollateralKey {
    /// The key of a raw TDX or SGX quote whose certification data carries its PCK chain.
    pub(crate) fn of_quote(quote: &[u8]) -> Result<Self, CollateralError> {
        fn bad(e: impl std::fmt::Display) -> CollateralError {
            CollateralError::Quote(format!("{e:#}"))
        }
        let parsed = dcap_qvl::quote::Quote::parse(quote).map_err(bad)?;
        let fmspc = dcap_qvl::intel::quote_fmspc(&parsed).map_err(bad)?;
        let ca = dcap_qvl::intel::quote_ca(&parsed).map_err(bad)?;
        Ok(CollateralKey {
            tee: if parsed.header.is_sgx() { "sgx" } else { "tdx" },
            fmspc: hex::encode_upper(fmspc),
            ca: ca.as_id_str(),
        })
    }

    /// The file name collateral for this key is kept under.
    fn file_name(&self) -> String {
        format!("{}-{}-{}.json", self.tee, self.fmspc, self.ca)
    }
}

/// How long collateral just fetched from a PCCS is used as it is, even past its `nextUpdate`
/// (the PCCS had nothing newer), before the PCCS is asked again.
const REFETCH_AFTER: Duration = Duration::from_secs(600);

/// One HTTP answer, as the transport gives it.
pub struct HttpResponse {
    pub status: u16,
    /// Header names in any case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A blocking HTTP GET: the URL's answer whatever its status, or why there was none.
pub(crate) type HttpGet = dyn Fn(&str) -> Result<HttpResponse, String> + Send + Sync;

/// A PCCS, by its base URL, e.g. `https://pccs.example:8081`.
#[derive(Clone)]
pub struct Pccs {
    base: String,
    get: Arc<HttpGet>,
}

impl std::fmt::Debug for Pccs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pccs").field("base", &self.base).finish()
    }
}

impl Pccs {
    pub fn new(url: &str, get: Arc<HttpGet>) -> Self {
        let base = url
            .trim_end_matches('/')
            .trim_end_matches("/sgx/certification/v4")
            .trim_end_matches("/tdx/certification/v4")
            .to_string();
        Pccs { base, get }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn fetch_one(&self, tee: &str, path: &str) -> Result<HttpResponse, CollateralError> {
        let url = format!("{}/{tee}/certification/v4/{path}", self.base);
        let failed = |reason: String| CollateralError::Pccs {
            url: url.clone(),
            reason,
        };
        let resp = (self.get)(&url).map_err(failed)?;
        if !(200..300).contains(&resp.status) {
            let detail = String::from_utf8_lossy(&resp.body)
                .chars()
                .take(200)
                .collect::<String>();
            return Err(failed(format!("HTTP {} {}", resp.status, detail.trim())));
        }
        Ok(resp)
    }

    /// The issuer chain a PCCS sends in a header, URL-encoded PEM.
    fn chain(
        &self,
        resp: &HttpResponse,
        names: &[&str],
        what: &str,
    ) -> Result<String, CollateralError> {
        let raw =
            names
                .iter()
                .find_map(|n| resp.header(n))
                .ok_or_else(|| CollateralError::Pccs {
                    url: self.base.clone(),
                    reason: format!("the {what} answer has no {} header", names[0]),
                })?;
        percent_decode(raw).ok_or_else(|| CollateralError::Pccs {
            url: self.base.clone(),
            reason: format!("the {} header is not URL-encoded text", names[0]),
        })
    }

    /// A signed JSON document (`{"tcbInfo": {...}, "signature": "hex"}`): the document's exact
    /// text, which is what the signature covers, and the signature.
    fn signed_document(
        &self,
        body: &[u8],
        field: &str,
    ) -> Result<(String, Vec<u8>), CollateralError> {
        let bad = |reason: String| CollateralError::Pccs {
            url: self.base.clone(),
            reason,
        };
        let doc: HashMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_slice(body)
                .map_err(|e| bad(format!("the {field} answer is not JSON: {e}")))?;
        let text = doc
            .get(field)
            .ok_or_else(|| bad(format!("the answer has no {field}")))?
            .get()
            .to_string();
        let sig: String = doc
            .get("signature")
            .and_then(|s| serde_json::from_str(s.get()).ok())
            .ok_or_else(|| bad(format!("the {field} answer has no signature")))?;
        let sig = hex::decode(sig.trim())
            .map_err(|_| bad(format!("the {field} signature is not hex")))?;
        Ok((text, sig))
    }

    /// Fetch everything a quote with `key` needs.
    pub fn fetch(&self, key: &CollateralKey) -> Result<QuoteCollateralV3, CollateralError> {
        let crl = self.fetch_one("sgx", &format!("pckcrl?ca={}&encoding=der", key.ca))?;
        let pck_crl_issuer_chain = self.chain(&crl, &["SGX-PCK-CRL-Issuer-Chain"], "PCK CRL")?;
        let tcb = self.fetch_one(key.tee, &format!("tcb?fmspc={}", key.fmspc))?;
        let tcb_info_issuer_chain = self.chain(
            &tcb,
            &["TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"],
            "TCB info",
        )?;
        let (tcb_info, tcb_info_signature) = self.signed_document(&tcb.body, "tcbInfo")?;
        let qe = self.fetch_one(key.tee, "qe/identity")?;
        let qe_identity_issuer_chain =
            self.chain(&qe, &["SGX-Enclave-Identity-Issuer-Chain"], "QE identity")?;
        let (qe_identity, qe_identity_signature) =
            self.signed_document(&qe.body, "enclaveIdentity")?;
        // A PCCS answers the root CA CRL in hex; DER is taken too.
        let root = self.fetch_one("sgx", "rootcacrl")?;
        let root_ca_crl = match std::str::from_utf8(&root.body) {
            Ok(text)
                if !text.trim().is_empty()
                    && text.trim().bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                hex::decode(text.trim()).map_err(|_| CollateralError::Pccs {
                    url: self.base.clone(),
                    reason: "the root CA CRL is not hex".into(),
                })?
            }
            _ => root.body,
        };
        Ok(QuoteCollateralV3 {
            pck_crl_issuer_chain,
            root_ca_crl,
            pck_crl: crl.body,
            tcb_info_issuer_chain,
            tcb_info,
            tcb_info_signature,
            qe_identity_issuer_chain,
            qe_identity,
            qe_identity_signature,
            pck_certificate_chain: None,
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Collateral as JSON, in the layout [`load_collateral`] reads.
pub fn collateral_json(c: &QuoteCollateralV3) -> Vec<u8> {
    let mut v = serde_json::json!({
        "pck_crl_issuer_chain": c.pck_crl_issuer_chain,
        "root_ca_crl": hex::encode(&c.root_ca_crl),
        "pck_crl": hex::encode(&c.pck_crl),
        "tcb_info_issuer_chain": c.tcb_info_issuer_chain,
        "tcb_info": c.tcb_info,
        "tcb_info_signature": hex::encode(&c.tcb_info_signature),
        "qe_identity_issuer_chain": c.qe_identity_issuer_chain,
        "qe_identity": c.qe_identity,
        "qe_identity_signature": hex::encode(&c.qe_identity_signature),
    });
    if let Some(chain) = &c.pck_certificate_chain {
        v["pck_certificate_chain"] = Value::String(chain.clone());
    }
    let mut out = serde_json::to_vec_pretty(&v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The earliest `nextUpdate` of the TCB info and QE identity (unix seconds): after it, a PCCS
/// has newer collateral.
fn next_update(c: &QuoteCollateralV3) -> Option<u64> {
    let at = |doc: &str| -> Option<u64> {
        let v: Value = serde_json::from_str(doc).ok()?;
        let t = humantime::parse_rfc3339(v.get("nextUpdate")?.as_str()?).ok()?;
        t.duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    };
    match (at(&c.tcb_info), at(&c.qe_identity)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Which key a collateral document is for, as far as it says: its TCB info's TEE and FMSPC.
fn describes(c: &QuoteCollateralV3, key: &CollateralKey) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(&c.tcb_info) else {
        return false;
    };
    let tee = match v.get("id").and_then(Value::as_str) {
        Some("TDX") => "tdx",
        Some("SGX") | None => "sgx",
        Some(_) => return false,
    };
    tee == key.tee
        && v.get("fmspc")
            .and_then(Value::as_str)
            .is_some_and(|f| f.eq_ignore_ascii_case(&key.fmspc))
}

/// Collateral from a directory, a PCCS, or both, with what was found kept in memory.
pub struct CollateralStore {
    dir: Option<PathBuf>,
    pccs: Option<Pccs>,
    /// Collateral found, and when it was fetched from the PCCS (if it was).
    cache: Mutex<HashMap<CollateralKey, (QuoteCollateralV3, Option<Instant>)>>,
}

impl std::fmt::Debug for CollateralStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollateralStore")
            .field("dir", &self.dir)
            .field("pccs", &self.pccs)
            .finish()
    }
}

impl CollateralStore {
    /// `dir` must exist unless a PCCS is given (then it is created, to keep what the PCCS sends).
    pub fn new(dir: Option<PathBuf>, pccs: Option<Pccs>) -> Result<Self, CollateralError> {
        if let Some(d) = &dir {
            let r = if pccs.is_some() {
                std::fs::create_dir_all(d)
            } else {
                std::fs::read_dir(d).map(|_| ())
            };
            r.map_err(|source| CollateralError::Dir {
                path: d.display().to_string(),
                source,
            })?;
        }
        Ok(CollateralStore {
            dir,
            pccs,
            cache: Mutex::default(),
        })
    }

    /// Collateral for `quote` that is current at `now` if there is any: from memory, then the
    /// directory, then the PCCS (kept in the directory). Collateral past its `nextUpdate` is
    /// replaced from the PCCS when there is one, and otherwise returned as it is (verification
    /// then says it expired).
    pub fn for_quote(&self, quote: &[u8], now: u64) -> Result<QuoteCollateralV3, CollateralError> {
        let key = CollateralKey::of_quote(quote)?;
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let (known, fetched) = match cached {
            Some((c, fetched)) => (Some(c), fetched),
            None => (self.in_dir(&key)?, None),
        };
        if let Some(c) = &known {
            // Current, or nowhere to get newer from, or just got from the PCCS (which has
            // nothing newer then: asking again on every quote would not change that).
            let current = next_update(c).is_none_or(|t| now < t);
            let recent = fetched.is_some_and(|t| t.elapsed() < REFETCH_AFTER);
            if current || recent || self.pccs.is_none() {
                self.remember(&key, c, fetched);
                return Ok(c.clone());
            }
        }
        let Some(pccs) = &self.pccs else {
            return Err(CollateralError::Missing {
                key,
                dir: self.dir.as_ref().map_or_else(
                    || "(no collateral directory)".into(),
                    |d| d.display().to_string(),
                ),
            });
        };
        match pccs.fetch(&key) {
            Ok(c) => {
                self.keep(&key, &c)?;
                self.remember(&key, &c, Some(Instant::now()));
                Ok(c)
            }
            // A PCCS that cannot be reached does not make stale collateral unusable: verification
            // decides whether it is still acceptable at `now`.
            Err(e) => known.ok_or(e),
        }
    }

    fn remember(&self, key: &CollateralKey, c: &QuoteCollateralV3, fetched: Option<Instant>) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), (c.clone(), fetched));
    }

    /// The directory's collateral for `key`: the file named for it, or else any `*.json` file
    /// whose TCB info is for the key's TEE and FMSPC.
    fn in_dir(&self, key: &CollateralKey) -> Result<Option<QuoteCollateralV3>, CollateralError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let load = |path: &Path| -> Result<QuoteCollateralV3, CollateralError> {
            let bytes = std::fs::read(path).map_err(|e| CollateralError::File {
                path: path.display().to_string(),
                source: DcapError::Collateral(e.to_string()),
            })?;
            load_collateral(&bytes).map_err(|source| CollateralError::File {
                path: path.display().to_string(),
                source,
            })
        };
        let named = dir.join(key.file_name());
        if named.exists() {
            return load(&named).map(Some);
        }
        let entries = std::fs::read_dir(dir).map_err(|source| CollateralError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for p in paths {
            // Files that are not collateral are not this key's; they are skipped, not fatal.
            if let Ok(c) = load(&p) {
                if describes(&c, key) {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }

    /// Keep fetched collateral in the directory (written whole, then renamed into place).
    fn keep(&self, key: &CollateralKey, c: &QuoteCollateralV3) -> Result<(), CollateralError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let path = dir.join(key.file_name());
        let tmp = dir.join(format!(".{}.tmp", key.file_name()));
        let write = |e| CollateralError::Write {
            path: path.display().to_string(),
            source: e,
        };
        std::fs::write(&tmp, collateral_json(c)).map_err(write)?;
        std::fs::rename(&tmp, &path).map_err(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> Option<PathBuf> {
        vouch_testkit::corpus::vectors()
    }

    #[test]
    fn keys_of_real_quotes() {
        let Some(v) = vectors() else { return };
        let tdx = CollateralKey::of_quote(&std::fs::read(v.join("tdx/tdx_quote")).expect("quote"))
            .expect("key");
        assert_eq!(tdx.tee, "tdx");
        assert_eq!(tdx.fmspc, "B0C06F000000");
        let sgx = CollateralKey::of_quote(&std::fs::read(v.join("sgx/sgx_quote")).expect("quote"))
            .expect("key");
        assert_eq!(sgx.tee, "sgx");
        assert!(CollateralKey::of_quote(b"not a quote").is_err());
    }

    #[test]
    fn json_round_trip_and_percent_decoding() {
        let Some(v) = vectors() else { return };
        let c =
            load_collateral(&std::fs::read(v.join("tdx/tdx_quote_collateral.json")).expect("read"))
                .expect("load");
        let again = load_collateral(&collateral_json(&c)).expect("reload");
        assert_eq!(collateral_json(&again), collateral_json(&c));
        assert_eq!(
            percent_decode("-----BEGIN%20CERTIFICATE-----%0AMII").as_deref(),
            Some("-----BEGIN CERTIFICATE-----\nMII")
        );
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
