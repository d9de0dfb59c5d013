//! The TDX attester: quotes through configfs-tsm and RTMR3 extension through the kernel's
//! measurement-register files.
//!
//! - Quote: create `<tsm>/report/<entry>/`, write the 64-byte report data to `inblob`, read
//!   `outblob` (the quote) and `provider` (must be `tdx_guest`), and check `generation` did not
//!   move under us (another writer would make the quote answer someone else's data).
//! - Extend: write the 48-byte digest to `<measurements>/rtmr3:sha384` (Linux 6.16+), which the
//!   kernel folds into RTMR3; reading that file returns the register. On kernels without those
//!   files, the `/dev/tdx_guest` device of the TDX guest kernels that carry the RTMR extension:
//!   `TDX_CMD_EXTEND_RTMR` extends, and the register is read from a fresh TDREPORT
//!   (`TDX_CMD_GET_REPORT0`).
//!
//! Both roots are configurable so tests can play the kernel's part with a directory tree.

use std::fs;
use std::path::{Path, PathBuf};

use vouch_measure::Digest384;

use crate::{AttestError, Attester, TeeType};

pub const DEFAULT_TSM_REPORT: &str = "/sys/kernel/config/tsm/report";
pub const DEFAULT_MEASUREMENTS: &str = "/sys/class/misc/tdx_guest/measurements";
/// The CCEL event log as the kernel exposes the ACPI table's log area.
pub const DEFAULT_CCEL: &str = "/sys/firmware/acpi/tables/data/CCEL";

/// The TDX guest device of kernels that predate the measurement-register files.
pub const DEFAULT_GUEST_DEVICE: &str = "/dev/tdx_guest";

/// How RTMR3 is reached on this kernel.
#[derive(Debug, Clone)]
enum Registers {
    /// `<dir>/rtmrN:sha384` files.
    Files(PathBuf),
    /// The `/dev/tdx_guest` ioctls.
    Device(PathBuf),
}

pub struct TdxAttester {
    tsm_report: PathBuf,
    registers: Registers,
    ccel: PathBuf,
}

/// Linux `_IOC` request numbers (asm-generic encoding, as on x86).
const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((ty as u32) << 8) | nr as u32
}
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `struct tdx_report_req { __u8 reportdata[64]; __u8 tdreport[1024]; }`
#[repr(C)]
struct ReportReq {
    reportdata: [u8; 64],
    tdreport: [u8; 1024],
}

/// `struct tdx_extend_rtmr_req { __u8 data[48]; __u8 index; }`
#[repr(C)]
struct ExtendReq {
    data: [u8; 48],
    index: u8,
}

/// `TDX_CMD_GET_REPORT0`: `_IOWR('T', 1, struct tdx_report_req)`.
pub const TDX_CMD_GET_REPORT0: u32 = ioc(
    IOC_READ | IOC_WRITE,
    b'T',
    1,
    std::mem::size_of::<ReportReq>(),
);
/// `TDX_CMD_EXTEND_RTMR` as the TDX guest kernels define it (`_IOR('T', 3, ...)`), and the
/// `_IOW` form of later revisions of that patch set; both are tried.
pub const TDX_CMD_EXTEND_RTMR: [u32; 2] = [
    ioc(IOC_READ, b'T', 3, std::mem::size_of::<ExtendReq>()),
    ioc(IOC_WRITE, b'T', 3, std::mem::size_of::<ExtendReq>()),
];

/// Offset of RTMR0 in a TDREPORT: REPORTMACSTRUCT (256) + TEE_TCB_INFO (239) + reserved (17),
/// then TDINFO's ATTRIBUTES, XFAM, MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG.
const TDREPORT_RTMR0: usize = 512 + 8 + 8 + 4 * 48;

/// RTMR `index` from a 1024-byte TDREPORT.
pub fn rtmr_from_tdreport(report: &[u8], index: usize) -> Option<Digest384> {
    if report.len() != 1024 || index > 3 {
        return None;
    }
    let at = TDREPORT_RTMR0 + index * 48;
    let mut d = [0u8; 48];
    d.copy_from_slice(&report[at..at + 48]);
    Some(Digest384(d))
}

fn ioctl<T>(device: &Path, requests: &[u32], arg: &mut T) -> Result<(), AttestError> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(state_err(device))?;
    let mut last = std::io::Error::from_raw_os_error(libc::ENOTTY);
    for req in requests {
        // SAFETY: `arg` is a live, correctly sized #[repr(C)] struct that matches the request's
        // encoded size; the kernel reads and writes only within it.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                *req as libc::c_ulong,
                arg as *mut T,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        last = std::io::Error::last_os_error();
        if last.raw_os_error() != Some(libc::ENOTTY) {
            break;
        }
    }
    Err(AttestError::State {
        path: device.display().to_string(),
        source: last,
    })
}

fn state_err(path: &Path) -> impl FnOnce(std::io::Error) -> AttestError + '_ {
    move |source| AttestError::State {
        path: path.display().to_string(),
        source,
    }
}

impl TdxAttester {
    pub fn new(tsm_report: &Path, measurements: &Path) -> Self {
        TdxAttester {
            tsm_report: tsm_report.to_path_buf(),
            registers: Registers::Files(measurements.to_path_buf()),
            ccel: PathBuf::from(DEFAULT_CCEL),
        }
    }

    /// Quotes through configfs-tsm, RTMR3 through the `/dev/tdx_guest` ioctls.
    pub(crate) fn with_guest_device(tsm_report: &Path, device: &Path) -> Self {
        TdxAttester {
            tsm_report: tsm_report.to_path_buf(),
            registers: Registers::Device(device.to_path_buf()),
            ccel: PathBuf::from(DEFAULT_CCEL),
        }
    }

    /// Read the firmware event log from `path` instead of the ACPI default.
    #[cfg(test)]
    pub(crate) fn with_ccel(mut self, path: &Path) -> Self {
        self.ccel = path.to_path_buf();
        self
    }

    /// Whether this machine offers TDX quotes through configfs-tsm.
    pub(crate) fn detect() -> Option<Self> {
        let tsm = Path::new(DEFAULT_TSM_REPORT);
        if !tsm.is_dir() {
            return None;
        }
        let files = Path::new(DEFAULT_MEASUREMENTS);
        if files.join("rtmr3:sha384").exists() {
            return Some(TdxAttester::new(tsm, files));
        }
        let device = Path::new(DEFAULT_GUEST_DEVICE);
        device
            .exists()
            .then(|| TdxAttester::with_guest_device(tsm, device))
    }
}

impl Attester for TdxAttester {
    fn tee(&self) -> TeeType {
        TeeType::Tdx
    }

    fn firmware_log(&self) -> Option<Vec<u8>> {
        fs::read(&self.ccel).ok()
    }

    fn extend(&self, index: usize, digest: &Digest384) -> Result<(), AttestError> {
        if index != crate::VOUCH_REGISTER {
            // RTMR0-2 belong to the firmware and the boot chain.
            return Err(AttestError::NoSuchRegister(index));
        }
        match &self.registers {
            Registers::Files(dir) => {
                let path = dir.join(format!("rtmr{index}:sha384"));
                fs::write(&path, digest.as_bytes()).map_err(state_err(&path))
            }
            Registers::Device(device) => {
                let mut req = ExtendReq {
                    data: *digest.as_bytes(),
                    index: index as u8,
                };
                ioctl(device, &TDX_CMD_EXTEND_RTMR, &mut req)
            }
        }
    }

    fn register(&self, index: usize) -> Result<Digest384, AttestError> {
        if index > 3 {
            return Err(AttestError::NoSuchRegister(index));
        }
        let dir = match &self.registers {
            Registers::Files(dir) => dir,
            Registers::Device(device) => {
                let mut req = ReportReq {
                    reportdata: [0u8; 64],
                    tdreport: [0u8; 1024],
                };
                ioctl(device, &[TDX_CMD_GET_REPORT0], &mut req)?;
                return rtmr_from_tdreport(&req.tdreport, index).ok_or(AttestError::Corrupt {
                    path: device.display().to_string(),
                    reason: "TDREPORT too short".into(),
                });
            }
        };
        let path = dir.join(format!("rtmr{index}:sha384"));
        let bytes = fs::read(&path).map_err(state_err(&path))?;
        let arr: [u8; 48] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| AttestError::Corrupt {
                path: path.display().to_string(),
                reason: format!("expected 48 bytes, read {}", bytes.len()),
            })?;
        Ok(Digest384(arr))
    }

    fn quote(&self, report_data: &Digest384) -> Result<Vec<u8>, AttestError> {
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).map_err(AttestError::Random)?;
        let entry = self.tsm_report.join(format!("vouch-{}", hex::encode(r)));
        fs::create_dir(&entry).map_err(state_err(&entry))?;
        let result = request(&entry, report_data);
        let _ = fs::remove_dir(&entry);
        result
    }
}

/// One report request in a configfs-tsm entry (whose attribute files the kernel created).
pub fn request(entry: &Path, report_data: &Digest384) -> Result<Vec<u8>, AttestError> {
    // TDX report data is 64 bytes: the SHA-384 binding, then zeros.
    let mut inblob = [0u8; 64];
    inblob[..48].copy_from_slice(report_data.as_bytes());
    let p = entry.join("inblob");
    fs::write(&p, inblob).map_err(state_err(&p))?;
    let gen_path = entry.join("generation");
    let before = fs::read_to_string(&gen_path).map_err(state_err(&gen_path))?;
    let out_path = entry.join("outblob");
    let quote = fs::read(&out_path).map_err(state_err(&out_path))?;
    let prov_path = entry.join("provider");
    let provider = fs::read_to_string(&prov_path).map_err(state_err(&prov_path))?;
    if provider.trim() != "tdx_guest" {
        return Err(AttestError::Corrupt {
            path: prov_path.display().to_string(),
            reason: format!("provider is {:?}, not tdx_guest", provider.trim()),
        });
    }
    let after = fs::read_to_string(&gen_path).map_err(state_err(&gen_path))?;
    if before.trim() != after.trim() {
        return Err(AttestError::Corrupt {
            path: gen_path.display().to_string(),
            reason: "another writer changed the report request while it was answered".into(),
        });
    }
    Ok(quote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{verify_evidence, Evidence, VerifyError, VerifyOptions};
    use base64::Engine as _;
    use serde_json::json;
    use vouch_testkit::corpus::vectors;

    #[test]
    fn configfs_tsm_request_and_rtmr3_extend_against_a_kernel_tree() {
        let Some(v) = vectors() else { return };
        let captured = std::fs::read(v.join("tdx/tdx_quote")).expect("quote");
        let dir = tempfile::tempdir().expect("tempdir");
        // The entry as the kernel presents it after mkdir.
        let entry = dir.path().join("report/e1");
        std::fs::create_dir_all(&entry).expect("entry");
        std::fs::write(entry.join("generation"), "1\n").expect("gen");
        std::fs::write(entry.join("provider"), "tdx_guest\n").expect("provider");
        std::fs::write(entry.join("outblob"), &captured).expect("outblob");
        let rd = vouch_measure::sha384(b"runtime data");
        assert_eq!(request(&entry, &rd).expect("quote"), captured);
        let inblob = std::fs::read(entry.join("inblob")).expect("inblob");
        assert_eq!(&inblob[..48], rd.as_bytes());
        assert!(inblob[48..].iter().all(|b| *b == 0));
        std::fs::write(entry.join("provider"), "sev_guest\n").expect("provider");
        assert!(request(&entry, &rd)
            .expect_err("other provider")
            .to_string()
            .contains("not tdx_guest"));

        // RTMR3 extension writes the digest to the kernel's file; other RTMRs are refused.
        let meas = dir.path().join("measurements");
        std::fs::create_dir_all(&meas).expect("meas");
        std::fs::write(meas.join("rtmr3:sha384"), [0u8; 48]).expect("rtmr3");
        let a = TdxAttester::new(&dir.path().join("report"), &meas);
        let d = vouch_measure::sha384(b"record");
        a.extend(3, &d).expect("extend");
        assert_eq!(
            std::fs::read(meas.join("rtmr3:sha384")).expect("read"),
            d.as_bytes()
        );
        assert!(matches!(
            a.extend(2, &d),
            Err(AttestError::NoSuchRegister(2))
        ));
        assert_eq!(a.register(3).expect("register"), d);
        // The firmware log comes from the ACPI CCEL file.
        let a = a.with_ccel(&dir.path().join("no-ccel"));
        assert!(a.firmware_log().is_none(), "no CCEL file in this tree");
        let a = a.with_ccel(&v.join("ccel/ccel_data.dat"));
        assert_eq!(a.firmware_log().expect("ccel").len(), 262_144);
    }

    #[test]
    fn guest_device_requests_match_the_kernel_headers() {
        // The values the kernel's tdx-guest.h produces for these structures.
        assert_eq!(TDX_CMD_GET_REPORT0, 0xC440_5401);
        assert_eq!(TDX_CMD_EXTEND_RTMR, [0x8031_5403, 0x4031_5403]);
        // RTMRs sit at the end of TDINFO's measurement fields.
        let mut report = [0u8; 1024];
        for (i, b) in report.iter_mut().enumerate() {
            *b = (i / 48) as u8;
        }
        let r3 = rtmr_from_tdreport(&report, 3).expect("rtmr3");
        assert_eq!(r3.as_bytes()[0], report[TDREPORT_RTMR0 + 144]);
        assert_eq!(TDREPORT_RTMR0, 720);
        assert!(rtmr_from_tdreport(&report[..1000], 3).is_none());
        assert!(rtmr_from_tdreport(&report, 4).is_none());
        // A device that is not the TDX guest device answers with a clear error.
        let a = TdxAttester::with_guest_device(Path::new("/nonexistent"), Path::new("/dev/null"));
        let err = a.register(3).expect_err("not a TDX device");
        assert!(err.to_string().contains("/dev/null"), "{err}");
        assert!(a.extend(3, &vouch_measure::sha384(b"x")).is_err());
    }

    #[test]
    fn tdx_evidence_is_verified_with_dcap_and_must_bind_the_runtime_data() {
        let Some(v) = vectors() else { return };
        let captured = std::fs::read(v.join("tdx/tdx_quote")).expect("quote");
        let col = super::super::dcap::load_collateral(
            &std::fs::read(v.join("tdx/tdx_quote_collateral.json")).expect("col"),
        )
        .expect("col");
        let ev = Evidence {
            version: 1,
            tee: TeeType::Tdx,
            quote: base64::engine::general_purpose::STANDARD.encode(&captured),
            event_log: vec![],
            aa_eventlog: None,
            runtime_data: json!({"nonce": "00"}),
            firmware_log: None,
            warning: None,
        };
        // Without collateral there is nothing to verify against.
        let err = verify_evidence(&ev, &VerifyOptions::default()).expect_err("no collateral");
        assert!(err.to_string().contains("collateral"), "{err}");
        // With it, the quote verifies, but this captured quote was not made for vouch's binding.
        let opts = VerifyOptions {
            tdx_collateral: Some(col.clone()),
            at: Some(1_750_400_000),
            ..Default::default()
        };
        let err = verify_evidence(&ev, &opts).expect_err("not bound");
        assert!(
            matches!(err, VerifyError::Rejected { .. })
                && err.to_string().contains("SHA-384 binding"),
            "{err}"
        );
        // Outside the collateral window the quote itself is refused first.
        let late = VerifyOptions {
            at: Some(1_790_000_000),
            ..opts
        };
        assert!(verify_evidence(&ev, &late)
            .expect_err("late")
            .to_string()
            .contains("rejected"));
    }
}
