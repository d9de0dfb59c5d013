//! TCG2 crypto-agile event logs: the TDX firmware's CCEL and a TPM's `binary_bios_measurements`.
//!
//! The first record is a legacy `TCG_PCR_EVENT` carrying the `Spec ID Event03` header that lists
//! the digest algorithms; every later record is a `TCG_PCR_EVENT2` with one digest per algorithm.
//! Replay extends, per register index, `R = H(R || digest)`, skipping `EV_NO_ACTION` records.
//! The parser bounds every length by the bytes that remain: it reads untrusted input.

use std::collections::BTreeMap;

use vouch_measure::Digest384;

pub const ALG_SHA1: u16 = 0x0004;
pub const ALG_SHA256: u16 = 0x000b;
pub const ALG_SHA384: u16 = 0x000c;
pub const ALG_SHA512: u16 = 0x000d;

/// The TPM algorithm id of a PCR bank named as TPM quotes and vouch's claims name them
/// (`sha1`, `sha256`, `sha384`, `sha512`).
pub fn bank_algorithm(bank: &str) -> Option<u16> {
    match bank {
        "sha1" => Some(ALG_SHA1),
        "sha256" => Some(ALG_SHA256),
        "sha384" => Some(ALG_SHA384),
        "sha512" => Some(ALG_SHA512),
        _ => None,
    }
}
pub(crate) const EV_NO_ACTION: u32 = 0x0000_0003;
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const MAX_EVENT_DATA: u32 = 16 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TcgError {
    #[error("event log is truncated at byte {offset} (reading {what})")]
    Truncated { offset: usize, what: &'static str },
    #[error("event log does not start with a Spec ID Event03 header")]
    NoSpecId,
    #[error("event {index} at byte {offset}: {reason}")]
    Malformed {
        index: usize,
        offset: usize,
        reason: String,
    },
    #[error("the log has no {0:#06x} digests")]
    NoSuchAlgorithm(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcgEvent {
    /// PCR index (TPM) or CC measurement-register index (TDX CCEL: 1..=4 are RTMR0..3).
    pub index: u32,
    pub event_type: u32,
    /// (algorithm id, digest) pairs.
    pub digests: Vec<(u16, Vec<u8>)>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcgLog {
    /// (algorithm id, digest size) from the Spec ID header.
    pub algorithms: Vec<(u16, u16)>,
    pub events: Vec<TcgEvent>,
    /// Where the last event ends in the bytes parsed (the rest is padding or unused area).
    pub end: usize,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TcgError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(TcgError::Truncated {
                offset: self.pos,
                what,
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, TcgError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, TcgError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, TcgError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
}

/// Parse a crypto-agile log. Parsing stops at the end of the bytes, at an index of 0xFFFFFFFF
/// (the CCEL's 0xFF padding), or at an all-zero record header (unused log area).
pub fn parse(bytes: &[u8]) -> Result<TcgLog, TcgError> {
    let mut r = Reader { bytes, pos: 0 };
    // Legacy header event: index, type, SHA-1 digest, size, Spec ID event.
    r.u32("header index")?;
    let header_type = r.u32("header type")?;
    r.take(20, "header digest")?;
    let size = r.u32("header size")?;
    let spec = r.take(size as usize, "Spec ID event")?;
    if header_type != EV_NO_ACTION
        || spec.len() < 16 + 4 + 4 + 4
        || &spec[..16] != SPEC_ID_SIGNATURE
    {
        return Err(TcgError::NoSpecId);
    }
    let mut s = Reader {
        bytes: spec,
        pos: 16,
    };
    s.u32("platform class")?;
    s.take(4, "spec version")?; // minor, major, errata, uintn size
    let count = s.u32("algorithm count")?;
    if count == 0 || count > 16 {
        return Err(TcgError::Malformed {
            index: 0,
            offset: 0,
            reason: format!("{count} digest algorithms"),
        });
    }
    let mut algorithms = Vec::new();
    for _ in 0..count {
        let alg = s.u16("algorithm id")?;
        let len = s.u16("digest size")?;
        if len == 0 || len > 64 {
            return Err(TcgError::Malformed {
                index: 0,
                offset: 0,
                reason: format!("digest size {len} for algorithm {alg:#06x}"),
            });
        }
        algorithms.push((alg, len));
    }
    s.u8("vendor info size")?;

    let mut events = Vec::new();
    let mut end = r.pos;
    while r.remaining() >= 8 {
        let offset = r.pos;
        let index = r.u32("index")?;
        let event_type = r.u32("type")?;
        if index == 0xFFFF_FFFF
            || (index == 0 && event_type == 0 && r.bytes[r.pos..].iter().take(4).all(|b| *b == 0))
        {
            break;
        }
        let n = events.len() + 1;
        let bad = |reason: String| TcgError::Malformed {
            index: n,
            offset,
            reason,
        };
        // Firmware writes one digest per declared algorithm; Confidential Containers'
        // attestation agent appends its events with one (the register's), so fewer are
        // accepted, each declared and none twice.
        let dcount = r.u32("digest count")?;
        if dcount == 0 || dcount as usize > algorithms.len() {
            return Err(bad(format!(
                "{dcount} digests, the header declares {}",
                algorithms.len()
            )));
        }
        let mut digests: Vec<(u16, Vec<u8>)> = Vec::with_capacity(algorithms.len());
        for _ in 0..dcount {
            let alg = r.u16("digest algorithm")?;
            let len = algorithms
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, l)| *l)
                .ok_or_else(|| bad(format!("undeclared algorithm {alg:#06x}")))?;
            if digests.iter().any(|(a, _)| *a == alg) {
                return Err(bad(format!("two {alg:#06x} digests")));
            }
            digests.push((alg, r.take(len as usize, "digest")?.to_vec()));
        }
        let dsize = r.u32("event size")?;
        if dsize > MAX_EVENT_DATA {
            return Err(bad(format!("event data of {dsize} bytes")));
        }
        let data = r.take(dsize as usize, "event data")?.to_vec();
        events.push(TcgEvent {
            index,
            event_type,
            digests,
            data,
        });
        end = r.pos;
    }
    Ok(TcgLog {
        algorithms,
        events,
        end,
    })
}

/// Digest of the concatenation of `parts` with TPM algorithm `alg`; `None` when unsupported.
pub fn hash(alg: u16, parts: &[&[u8]]) -> Option<Vec<u8>> {
    fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
        let mut h = D::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().to_vec()
    }
    Some(match alg {
        ALG_SHA1 => {
            let mut h = sha1_smol::Sha1::new();
            for p in parts {
                h.update(p);
            }
            h.digest().bytes().to_vec()
        }
        ALG_SHA256 => run::<sha2::Sha256>(parts),
        ALG_SHA384 => run::<sha2::Sha384>(parts),
        ALG_SHA512 => run::<sha2::Sha512>(parts),
        _ => return None,
    })
}

impl TcgLog {
    /// Replay one bank: register index -> value, for every index the log extends.
    pub fn replay(&self, alg: u16) -> Result<BTreeMap<u32, Vec<u8>>, TcgError> {
        let size = self
            .algorithms
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, l)| *l as usize)
            .ok_or(TcgError::NoSuchAlgorithm(alg))?;
        let mut regs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for e in self.events.iter().filter(|e| e.event_type != EV_NO_ACTION) {
            let Some((_, d)) = e.digests.iter().find(|(a, _)| *a == alg) else {
                continue;
            };
            let reg = regs.entry(e.index).or_insert_with(|| vec![0u8; size]);
            *reg = hash(alg, &[reg, d]).ok_or(TcgError::NoSuchAlgorithm(alg))?;
        }
        Ok(regs)
    }

    /// TDX: RTMR0..3 from a CCEL (measurement-register indexes 1..=4), SHA-384.
    pub fn rtmrs(&self) -> Result<[Digest384; 4], TcgError> {
        let regs = self.replay(ALG_SHA384)?;
        let mut out = [Digest384::ZERO; 4];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Some(v) = regs.get(&(i as u32 + 1)) {
                let mut b = [0u8; 48];
                b.copy_from_slice(v);
                *slot = Digest384(b);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use vouch_testkit::corpus::vectors;

    fn hex(d: &Digest384) -> String {
        d.to_hex()
    }

    #[test]
    fn ccel_vectors_replay_to_the_stated_rtmrs() {
        let Some(v) = vectors() else { return };
        let cases = [
            (
                "ccel/ccel_data.dat",
                43usize,
                [
                    "3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e1edece752afd17f6",
                    "f62dbc072bd5d3f3438b7b35c39a727f5aea2ffc2473f43723953f530daf62504f0a7944aa62c41a86e8a878c2b122c1",
                    "4969684dc87381fc3b3134176c8d8806eaf0a901859f5f70cfae8d17714b46c10a8de219048c9fc09f11f381a6fbe7c1",
                ],
            ),
            (
                "ccel/CCEL_data_ovmf",
                20,
                [
                    "8566f998798db09443b244c62de9a3041fb02e2e6936c4396d784bba2e90177329ec5aba3bb484404f2ab9cc90abe193",
                    "775b9f6bfe99f8a31396f0d0218e67ffa796d3b96ccf961cbb0deba48c79c00f082cda1a5567c1c16305f1fc210c13c6",
                    "94eaf7a7bf398ed8d888c91057ae0261802e4f3df084213a76ca7f0b5055ac9d2241de43cd58d9e8b49c503bbf25f34a",
                ],
            ),
            (
                "ccel/CCEL_data_grub",
                37,
                [
                    "cec0a104f691f60da2387fea3c2de00c4ac035e2bb479ff02edcce69039d9e9907f0b3e55031da3dc7038f423adebd79",
                    "6c289e0c62182d41ebe97bdbc9872d10998a08eaa86adcdc684001a363207ee72942c7522cdf00a4bbc3d784bed7b670",
                    "08919d017ba0e52cd6d966351c7de16fe76c1d3d3d3da4554239e4c7d16cb8b82a94e7eaea3a0e6e18eb690b999fd31e",
                ],
            ),
        ];
        for (file, count, want) in cases {
            let bytes = std::fs::read(v.join(file)).expect("vector");
            let log = parse(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(
                log.events.len(),
                count,
                "{file}: event count after the Spec ID header"
            );
            let rtmrs = log.rtmrs().expect("replay");
            for i in 0..3 {
                assert_eq!(hex(&rtmrs[i]), want[i], "{file}: RTMR{i}");
            }
            assert_eq!(rtmrs[3], Digest384::ZERO, "{file}: RTMR3");
        }
    }

    #[test]
    fn flipped_digest_bytes_change_the_replay_and_truncation_is_an_error() {
        let Some(v) = vectors() else { return };
        let bytes = std::fs::read(v.join("ccel/CCEL_data_ovmf")).expect("vector");
        let log = parse(&bytes).expect("parse");
        let good = log.rtmrs().expect("replay");
        // Flip one byte inside each SHA-384 digest of every measured event.
        let mut pos = 0usize;
        let header_len = 32 + u32::from_le_bytes(bytes[28..32].try_into().expect("4")) as usize;
        pos += header_len;
        for e in &log.events {
            let digest_at = pos + 12 + 2; // index, type, count, alg id
            let mut t = bytes.clone();
            t[digest_at] ^= 0x01;
            let tl = parse(&t).expect("still parses");
            if e.event_type != EV_NO_ACTION && (1..=4).contains(&e.index) {
                assert_ne!(
                    tl.rtmrs().expect("replay"),
                    good,
                    "flip in event at {pos} went unnoticed"
                );
            }
            pos +=
                12 + e.digests.iter().map(|(_, d)| 2 + d.len()).sum::<usize>() + 4 + e.data.len();
        }
        // Any truncation inside the records is reported with where it happened.
        let err = parse(&bytes[..header_len + 10]).expect_err("truncated");
        assert!(matches!(err, TcgError::Truncated { .. }), "{err}");
        assert_eq!(
            parse(&bytes[..20]).expect_err("short"),
            TcgError::Truncated {
                offset: 8,
                what: "header digest"
            }
        );
        let mut no_spec = bytes.clone();
        no_spec[32] = b'X';
        assert_eq!(parse(&no_spec).expect_err("spec"), TcgError::NoSpecId);
    }

    #[test]
    fn gce_vtpm_bios_log_replays_to_the_quoted_pcrs_in_every_bank() {
        let Some(v) = vectors() else { return };
        let dir = v.join("tpm/gce-vtpm-nonce9009");
        let log =
            parse(&std::fs::read(dir.join("event_log.binary_bios_measurements")).expect("log"))
                .expect("parse");
        assert_eq!(log.events.len(), 44, "events after the Spec ID header");
        for (bank, alg) in [
            ("sha1", ALG_SHA1),
            ("sha256", ALG_SHA256),
            ("sha384", ALG_SHA384),
        ] {
            let pcrs: std::collections::BTreeMap<String, String> = serde_json::from_slice(
                &std::fs::read(dir.join(format!("quote_{bank}.pcrs.json"))).expect("pcrs"),
            )
            .expect("json");
            let replayed = log.replay(alg).expect("replay");
            for idx in [0u32, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14] {
                // A register the log never extends keeps its reset value: zeros.
                let size = log
                    .algorithms
                    .iter()
                    .find(|(a, _)| *a == alg)
                    .map(|(_, l)| *l as usize)
                    .expect("bank");
                let got = replayed
                    .get(&idx)
                    .map(hex::encode)
                    .unwrap_or_else(|| "00".repeat(size));
                assert_eq!(got, pcrs[&idx.to_string()], "{bank} PCR{idx}");
            }
        }
    }
}
