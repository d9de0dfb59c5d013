//! `vouch verify`: evidence, raw quotes and reports, checked offline.

use crate::*;

/// `vouch verify`'s flags.
#[derive(ClapArgs)]
pub(crate) struct VerifyArgs {
    /// Evidence file from `vouch attest` (- for standard input).
    #[arg(required_unless_present_any = ["quote", "tpm_quote", "snp_report"])]
    pub(crate) file: Option<PathBuf>,
    /// A raw TDX or SGX (DCAP) quote to verify.
    #[arg(long, conflicts_with = "file")]
    pub(crate) quote: Option<PathBuf>,
    /// An AMD SEV-SNP attestation report to verify; needs --vcek and --chain.
    #[arg(long, conflicts_with_all = ["file", "quote"], requires_all = ["vcek", "chain"])]
    pub(crate) snp_report: Option<PathBuf>,
    /// The report's VCEK (or VLEK) certificate (DER).
    #[arg(long)]
    pub(crate) vcek: Option<PathBuf>,
    /// The AMD certificates (PEM, any order): the ASK (or the ASVK for a VLEK) and the ARK,
    /// as AMD's KDS or Trustee ship them.
    #[arg(long)]
    pub(crate) chain: Option<PathBuf>,
    /// Accept SNP guests whose policy allows debugging.
    #[arg(long)]
    pub(crate) allow_debug: bool,
    /// SEV-SNP golden value: the launch measurement (hex).
    #[arg(long)]
    pub(crate) measurement: Option<String>,
    /// SEV-SNP: the highest VMPL the report may come from (0 as Trustee requires; some
    /// clouds' guests report from VMPL 1 under a paravisor). Default: any, shown as a claim.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=3))]
    pub(crate) max_vmpl: Option<u32>,
    /// SEV-SNP minimum reported TCB: BOOTLOADER,TEE,SNP,MICROCODE.
    #[arg(long, value_name = "BL,TEE,SNP,UCODE")]
    pub(crate) min_tcb: Option<String>,
    /// SEV-SNP: also trust the AMD root key (ARK) with this DER SHA-256 (hex), for products
    /// vouch does not pin (it pins ARK-Milan). Repeatable.
    #[arg(long, value_name = "SHA256")]
    pub(crate) trust_ark: Vec<String>,
    /// A TPM 2.0 quote (TPMS_ATTEST) to verify; needs --tpm-sig, --ak and --nonce.
    #[arg(long, conflicts_with_all = ["file", "quote"], requires_all = ["tpm_sig", "ak", "nonce"])]
    pub(crate) tpm_quote: Option<PathBuf>,
    /// The quote's TPMT_SIGNATURE.
    #[arg(long)]
    pub(crate) tpm_sig: Option<PathBuf>,
    /// The attestation key (TPMT_PUBLIC).
    #[arg(long)]
    pub(crate) ak: Option<PathBuf>,
    /// With --tpm-quote: the AK's certificate (PEM, intermediates after it, or DER), checked
    /// against --tpm-ak-ca and against the AK.
    #[arg(long, requires_all = ["tpm_quote", "tpm_ak_ca"])]
    pub(crate) ak_cert: Option<PathBuf>,
    /// PCR values as JSON {"0": "hex", ...} for the quoted bank; checked against the quote.
    #[arg(long)]
    pub(crate) pcrs: Option<PathBuf>,
    /// A TCG2 event log (binary_bios_measurements) to replay against --pcrs.
    #[arg(long, requires = "pcrs")]
    pub(crate) eventlog: Option<PathBuf>,
    /// Collateral for a TDX quote (given with --quote, or inside tdx evidence): JSON with PEM
    /// chains, TCB info, QE identity; CRLs and signatures in hex.
    #[arg(long, conflicts_with_all = ["collateral_dir", "pccs"])]
    pub(crate) collateral: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) collateral_from: vouch_cli_common::CollateralArgs,
    /// Verify as of this unix time (default: now).
    #[arg(long)]
    pub(crate) at: Option<u64>,
    #[command(flatten)]
    pub(crate) tdx: TdxFlags,
    /// Require this nonce.
    #[arg(long)]
    pub(crate) nonce: Option<String>,
    /// Accept evidence from the sim TEE (software only, NOT hardware-backed).
    #[arg(long)]
    pub(crate) allow_sim: bool,
    /// Require sim quotes to be signed by this sim key (hex, as `vouch tee info` shows it).
    /// Repeatable: any of them.
    #[arg(long, value_name = "HEX", requires = "allow_sim")]
    pub(crate) sim_key: Vec<String>,
    /// Evidence: trust TPM quotes signed by this attestation key (sha256:HEX, as
    /// `vouch tee info` shows it). Repeatable.
    #[arg(long, value_name = "FINGERPRINT")]
    pub(crate) tpm_ak: Vec<String>,
    /// Evidence: trust TPM attestation keys certified by this CA (PEM or DER certificate
    /// file; an AK certificate itself pins that AK). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub(crate) tpm_ak_ca: Vec<PathBuf>,
    /// Evidence: check every container of the document's image against this signed golden
    /// value (`vouch golden sign`); a pinned runtime spec's digest is recomputed from the
    /// document and compared with each container's measured config digest.
    #[arg(long, value_name = "SIGNED", requires = "golden_key")]
    pub(crate) golden: Option<PathBuf>,
    /// The golden value signer's public key (PEM).
    #[arg(long, value_name = "PEM", requires = "golden")]
    pub(crate) golden_key: Option<PathBuf>,
    #[arg(long)]
    pub(crate) json: bool,
}

/// Which verification the flags ask for: an SEV-SNP report, a TPM quote, a raw DCAP quote, or
/// vouch evidence.
pub(crate) fn verify_command(args: VerifyArgs) -> Result<u8> {
    match args {
        VerifyArgs {
            snp_report: Some(report),
            vcek: Some(vcek),
            chain: Some(chain),
            at,
            allow_debug,
            measurement,
            min_tcb,
            trust_ark,
            max_vmpl,
            json,
            ..
        } => verify_snp(
            &report,
            &vcek,
            &chain,
            at,
            &trust_ark,
            snp_policy(allow_debug, measurement, min_tcb, max_vmpl)?,
            json,
        ),
        VerifyArgs {
            tpm_quote: Some(tq),
            tpm_sig: Some(sig),
            ak: Some(ak),
            nonce: Some(nonce),
            pcrs,
            eventlog,
            ak_cert,
            tpm_ak_ca,
            at,
            json,
            ..
        } => verify_tpm(
            TpmQuoteFiles {
                quote: &tq,
                sig: &sig,
                ak: &ak,
            },
            ak_cert.as_deref().map(|c| {
                (
                    c,
                    tpm_ak_ca.as_slice(),
                    at.unwrap_or_else(vouch_base::clock::unix_secs),
                )
            }),
            &nonce,
            pcrs.as_deref(),
            eventlog.as_deref(),
            json,
        ),
        VerifyArgs {
            quote: Some(quote),
            collateral,
            collateral_from,
            at,
            tdx,
            json,
            ..
        } => verify_quote(
            &quote,
            collateral.as_deref(),
            &collateral_from,
            at,
            dcap_policy(tdx)?,
            json,
        ),
        VerifyArgs {
            file,
            nonce,
            allow_sim,
            sim_key,
            tpm_ak,
            tpm_ak_ca,
            collateral,
            collateral_from,
            at,
            tdx,
            golden,
            golden_key,
            json,
            ..
        } => {
            let golden = match (golden, golden_key) {
                (Some(doc), Some(key)) => Some(open_golden(&doc, &key)?.1),
                _ => None,
            };
            let mut opts = VerifyOptions {
                allow_sim,
                nonce,
                sim_keys: sim_key,
                at,
                tpm_aks: tpm_ak.iter().map(|f| f.to_ascii_lowercase()).collect(),
                ..Default::default()
            };
            opts.dcap_policy = dcap_policy(tdx)?;
            if let Some(path) = collateral {
                opts.tdx_collateral = Some(vouch_tee::tdx::dcap::load_collateral(&read(&path)?)?);
            }
            opts.collateral = collateral_from.store()?;
            opts.tpm_ak_cas = vouch_cli_common::ca_certificates(&tpm_ak_ca)?;
            verify(
                file.unwrap_or_else(|| PathBuf::from("-")),
                opts,
                golden.as_ref(),
                json,
            )
        }
    }
}

/// A signed golden-value document and what it says, its signature checked against `key`.
pub(crate) fn open_golden(
    doc: &std::path::Path,
    key: &std::path::Path,
) -> Result<(
    vouch_image::golden::SignedGolden,
    vouch_image::golden::Golden,
)> {
    let envelope = vouch_image::golden::SignedGolden::parse(&read(doc)?)?;
    let pem =
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    let opened = envelope.open(&[vouch_image::cosign::parse_public(&pem)?])?;
    Ok((envelope, opened))
}

/// How the containers of a verdict compare with a golden value.
pub(crate) fn golden_check(
    verdict: &vouch_tee::verify::Verdict,
    doc: &vouch_image::golden::Golden,
) -> Result<format::GoldenCheck> {
    let pinned = doc.pinned_spec_digest()?;
    let image_digest = doc.manifest_digest.to_string();
    let containers: Vec<format::GoldenContainer> = verdict
        .containers
        .iter()
        .filter(|c| c.image_digest == image_digest)
        .map(|c| format::GoldenContainer {
            id: c.id.clone(),
            config_digest: c.config_digest.clone(),
            spec_matches: pinned.as_deref().map(|d| d == c.config_digest),
        })
        .collect();
    let matches =
        !containers.is_empty() && containers.iter().all(|c| c.spec_matches != Some(false));
    Ok(format::GoldenCheck {
        image_digest,
        spec_recomputed: doc.spec.is_some(),
        spec_digest: pinned,
        containers,
        matches,
    })
}

pub(crate) fn verify(
    file: PathBuf,
    opts: VerifyOptions,
    golden: Option<&vouch_image::golden::Golden>,
    json: bool,
) -> Result<u8> {
    let bytes = if file.as_os_str() == "-" {
        let mut b = Vec::new();
        io::stdin().read_to_end(&mut b)?;
        b
    } else {
        read(&file)?
    };
    let evidence = Evidence::from_json(&bytes)
        .with_context(|| format!("{} is not vouch evidence", file.display()))?;
    let checked_nonce = opts.nonce.is_some();
    let result = verify_evidence(&evidence, &opts).map_err(anyhow::Error::new);
    let (Some(doc), Ok(verdict)) = (golden, &result) else {
        return report_verification(json, result, |verdict| {
            print!("{}", format::verdict(verdict, checked_nonce));
        });
    };
    let check = golden_check(verdict, doc)?;
    if json {
        let mut out = serde_json::to_value(verdict)?;
        out["golden"] = serde_json::to_value(&check)?;
        report_verification(true, Ok(out), |_| {})?;
    } else {
        print!("{}", format::verdict(verdict, checked_nonce));
        print!("{}", format::golden(&check));
    }
    Ok(u8::from(!check.matches))
}

pub(crate) fn verify_quote(
    quote: &std::path::Path,
    collateral: Option<&std::path::Path>,
    collateral_from: &vouch_cli_common::CollateralArgs,
    at: Option<u64>,
    policy: vouch_tee::tdx::dcap::DcapPolicy,
    json: bool,
) -> Result<u8> {
    use vouch_tee::tdx::dcap;
    let raw = read(quote)?;
    let now = at.unwrap_or_else(vouch_base::clock::unix_secs);
    let col = match (collateral, collateral_from.store()?) {
        (Some(path), _) => dcap::load_collateral(&read(path)?)?,
        (None, Some(store)) => store.for_quote(&raw, now)?,
        (None, None) => {
            bail!("a quote needs its collateral: give --collateral FILE, --collateral-dir DIR or --pccs URL")
        }
    };
    let result = dcap::verify_quote(&raw, &col, now)
        .and_then(|claims| policy.check(&claims).map(|()| claims));
    // The JSON adds `platform`: the claims under the names a KBS policy reads them by.
    let result = result.map_err(anyhow::Error::new).and_then(|claims| {
        let mut out = serde_json::to_value(&claims)?;
        out["platform"] = serde_json::to_value(claims.platform_claims())?;
        Ok((claims, out))
    });
    if json {
        return report_verification(true, result.map(|(_, out)| out), |_| {});
    }
    report_verification(
        false,
        result.map(|(claims, _)| claims),
        |claims: &dcap::DcapClaims| {
            println!("Quote VERIFIED ({}) at {now}", claims.kind);
            println!(
                "  TCB status:  {}{}",
                claims.tcb_status,
                if claims.advisories.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", claims.advisories.join(", "))
                }
            );
            if let Some(m) = &claims.mrtd {
                println!("  MRTD:        {m}");
            }
            for (i, r) in claims.rtmrs.iter().enumerate() {
                println!("  RTMR{i}:       {r}");
            }
            if let Some(m) = &claims.mr_enclave {
                println!("  MRENCLAVE:   {m}");
            }
            if let Some(m) = &claims.mr_signer {
                println!("  MRSIGNER:    {m}");
            }
            if let Some(a) = &claims.td_attributes {
                let set: Vec<&str> = claims
                    .td_attribute_bits
                    .iter()
                    .filter(|(_, set)| **set)
                    .map(|(name, _)| name.as_str())
                    .collect();
                println!(
                    "  TD attributes: {a} ({})",
                    if set.is_empty() {
                        "none set".to_string()
                    } else {
                        set.join(", ")
                    }
                );
            }
            println!("  debug:       {}", claims.debug);
            println!("  report data: {}", claims.report_data);
        },
    )
}

/// A raw TPM quote as files: TPMS_ATTEST, TPMT_SIGNATURE, the AK's TPMT_PUBLIC.
pub(crate) struct TpmQuoteFiles<'a> {
    pub(crate) quote: &'a std::path::Path,
    pub(crate) sig: &'a std::path::Path,
    pub(crate) ak: &'a std::path::Path,
}

pub(crate) fn verify_tpm(
    TpmQuoteFiles { quote, sig, ak }: TpmQuoteFiles<'_>,
    ak_cert: Option<(&std::path::Path, &[PathBuf], u64)>,
    nonce: &str,
    pcrs: Option<&std::path::Path>,
    eventlog: Option<&std::path::Path>,
    json: bool,
) -> Result<u8> {
    use vouch_tee::{tcg, tpm};
    let nonce_bytes = hex::decode(nonce).context("--nonce must be hex")?;
    let ak = tpm::parse_ak(&read(ak)?).context("attestation key")?;
    // The AK's certificate, when given, must fit the AK and chain to a trusted CA.
    let certified = match ak_cert {
        Some((path, cas, now)) => {
            let certs = vouch_tee::tpm::akcert::parse_certs(&read(path)?)
                .with_context(|| format!("--ak-cert {}", path.display()))?;
            let (leaf, chain) = certs
                .split_first()
                .context("--ak-cert holds no certificate")?;
            let anchors = vouch_cli_common::ca_certificates(cas)?;
            Some(vouch_tee::tpm::akcert::verify_ak_cert(
                leaf, chain, &anchors, &ak, now,
            ))
        }
        None => None,
    };
    let values: Option<std::collections::BTreeMap<String, String>> = match pcrs {
        Some(p) => Some(
            serde_json::from_slice(&read(p)?)
                .with_context(|| format!("{} is not a JSON object of PCR values", p.display()))?,
        ),
        None => None,
    };
    let lookup = |_: u16, i: u32| {
        values
            .as_ref()
            .and_then(|v| v.get(&i.to_string()))
            .and_then(|h| hex::decode(h).ok())
    };
    let lookup_ref: Option<&dyn Fn(u16, u32) -> Option<Vec<u8>>> = values
        .as_ref()
        .map(|_| &lookup as &dyn Fn(u16, u32) -> Option<Vec<u8>>);
    let result = tpm::verify_quote(
        &read(quote)?,
        &read(sig)?,
        &ak,
        Some(&nonce_bytes),
        lookup_ref,
    )
    .map_err(anyhow::Error::new)
    .and_then(|claims| {
        if let Some(Err(e)) = &certified {
            bail!("{e}");
        }
        let mut replayed = Vec::new();
        if let (Some(log_path), Some(values)) = (eventlog, values.as_ref()) {
            let bank = claims
                .selection
                .first()
                .map(|(b, _)| b.clone())
                .unwrap_or_default();
            let alg = tcg::bank_algorithm(&bank).with_context(|| {
                format!("the quote selects PCR bank {bank:?}, which vouch cannot replay")
            })?;
            let mut quoted = std::collections::BTreeMap::new();
            for (index, value) in values {
                let index: u32 = index
                    .parse()
                    .with_context(|| format!("--pcrs: {index:?} is not a PCR number"))?;
                let value = hex::decode(value)
                    .with_context(|| format!("--pcrs: PCR {index} is not hex"))?;
                quoted.insert(index, value);
            }
            replayed = vouch_tee::tpm::check_tpm_event_log(&read(log_path)?, alg, &quoted)
                .with_context(|| format!("event log ({bank} bank)"))?;
        }
        Ok((claims, replayed))
    });
    #[derive(serde::Serialize)]
    struct TpmVerdict {
        #[serde(flatten)]
        claims: tpm::TpmQuoteClaims,
        pcrs_checked: bool,
        eventlog_replayed_pcrs: Vec<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ak_certified_by: Option<Vec<String>>,
    }
    let pcrs_checked = values.is_some();
    let ak_certified_by = certified.and_then(Result::ok);
    let result = result.map(|(claims, eventlog_replayed_pcrs)| TpmVerdict {
        claims,
        pcrs_checked,
        eventlog_replayed_pcrs,
        ak_certified_by,
    });
    report_verification(json, result, |v| {
        println!("TPM quote VERIFIED");
        println!("  nonce:       {} (matches)", v.claims.nonce);
        println!("  firmware:    {}", v.claims.firmware_version);
        for (bank, idx) in &v.claims.selection {
            println!("  PCRs ({bank}): {idx:?}");
        }
        let checked = if v.pcrs_checked {
            " (matches the given values)"
        } else {
            " (values not given: --pcrs)"
        };
        println!("  PCR digest:  {}{checked}", v.claims.pcr_digest);
        if let Some(path) = &v.ak_certified_by {
            println!("  AK certificate: {}", path.join(" <- "));
        }
        if eventlog.is_some() {
            println!(
                "  event log:   replays to PCRs {:?}",
                v.eventlog_replayed_pcrs
            );
        }
    })
}

pub(crate) fn verify_snp(
    report: &std::path::Path,
    vcek: &std::path::Path,
    chain: &std::path::Path,
    at: Option<u64>,
    trust_ark: &[String],
    policy: vouch_tee::snp::SnpPolicy,
    json: bool,
) -> Result<u8> {
    use vouch_tee::snp;
    let now = at.unwrap_or_else(vouch_base::clock::unix_secs);
    let result =
        snp::verify_report_with_roots(&read(report)?, &read(vcek)?, &read(chain)?, now, trust_ark)
            .and_then(|c| policy.check(&c).map(|()| c));
    if json {
        // `platform`: the claims under the names a KBS policy reads them by.
        let out = result.map_err(anyhow::Error::new).and_then(|c| {
            let mut out = serde_json::to_value(&c)?;
            out["platform"] = serde_json::to_value(c.platform_claims())?;
            Ok(out)
        });
        return report_verification(true, out, |_| {});
    }
    report_verification(
        false,
        result.map_err(anyhow::Error::new),
        |c: &snp::SnpClaims| {
            if c.signing_key == "vlek" {
                println!("SEV-SNP report VERIFIED (VLEK <- ASVK <- ARK) at {now}");
            } else {
                println!("SEV-SNP report VERIFIED (VCEK <- ASK <- ARK) at {now}");
            }
            println!("  measurement:  {}", c.measurement);
            println!("  VMPL:         {}", c.vmpl);
            println!(
                "  policy:       {}{}",
                c.policy,
                if c.debug { " (debugging allowed)" } else { "" }
            );
            let t = c.reported_tcb;
            println!(
                "  reported TCB: bootloader {} tee {} snp {} microcode {}",
                t.bootloader, t.tee, t.snp, t.microcode
            );
            println!("  report data:  {}", c.report_data);
            println!("  chip id:      {}", c.chip_id);
        },
    )
}

/// Print a verification result as JSON (with `"verified"`) or through `human`; a failure prints
/// `{"verified": false, ...}` under --json and becomes the one-line error (exit status 1).
pub(crate) fn report_verification<T: serde::Serialize>(
    json: bool,
    result: Result<T>,
    human: impl FnOnce(&T),
) -> Result<u8> {
    match result {
        Ok(claims) => {
            if json {
                let mut v = serde_json::to_value(&claims)?;
                v["verified"] = serde_json::Value::Bool(true);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                human(&claims);
            }
            Ok(0)
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"verified": false, "error": vouch_cli_common::error_line(&e)})
                );
            }
            Err(e.context("verification FAILED"))
        }
    }
}

/// The TDX flags of `vouch verify`: TCB statuses, TD attributes, golden values.
#[derive(ClapArgs)]
pub(crate) struct TdxFlags {
    /// TCB statuses to accept besides UpToDate (e.g. SWHardeningNeeded).
    #[arg(long = "accept-tcb", value_name = "STATUS")]
    pub(crate) accept_tcb: Vec<String>,
    /// TDX: require this TD attribute bit (debug, icssd, servtd_ext, lass, sept_ve_disable,
    /// migratable, pks, kl, tpa, perfmon). Repeatable. By default TD attributes are claims
    /// only (as in Intel's QVL); debug and reserved bits are always refused.
    #[arg(long = "require-td-attribute", value_name = "NAME")]
    pub(crate) require_td_attribute: Vec<String>,
    /// TDX: refuse a TD with this attribute bit set (e.g. migratable). Repeatable.
    #[arg(long = "refuse-td-attribute", value_name = "NAME")]
    pub(crate) refuse_td_attribute: Vec<String>,
    /// TDX: require SEPT_VE_DISABLE (as --require-td-attribute sept_ve_disable). Azure's TDX
    /// guests do not set it.
    #[arg(long)]
    pub(crate) require_sept_ve_disable: bool,
    /// TDX golden value: the MRTD (hex).
    #[arg(long)]
    pub(crate) mrtd: Option<String>,
    /// TDX golden values for RTMR0-2, as N=HEX (repeatable).
    #[arg(long = "rtmr", value_name = "N=HEX")]
    pub(crate) rtmr: Vec<String>,
}

/// The TDX policy from the command line: accepted TCB statuses, TD attributes, golden values.
pub(crate) fn dcap_policy(flags: TdxFlags) -> Result<vouch_tee::tdx::dcap::DcapPolicy> {
    let TdxFlags {
        accept_tcb,
        mut require_td_attribute,
        refuse_td_attribute,
        require_sept_ve_disable,
        mrtd,
        rtmr,
    } = flags;
    if require_sept_ve_disable {
        require_td_attribute.push("sept_ve_disable".into());
    }
    let names = |flag: &str, names: Vec<String>| -> Result<Vec<String>> {
        names
            .into_iter()
            .map(|n| {
                vouch_tee::tdx::dcap::td_attribute(&n)
                    .map(|_| n.to_ascii_lowercase())
                    .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
            })
            .collect()
    };
    let mut policy = vouch_tee::tdx::dcap::DcapPolicy {
        mrtd,
        required_attributes: names("--require-td-attribute", require_td_attribute)?,
        refused_attributes: names("--refuse-td-attribute", refuse_td_attribute)?,
        ..Default::default()
    };
    policy.accepted_tcb.extend(accept_tcb);
    for spec in rtmr {
        let (n, value) = spec
            .split_once('=')
            .with_context(|| format!("--rtmr {spec:?}: use N=HEX"))?;
        let n: usize = n.parse().ok().filter(|n| *n <= 2).with_context(|| {
            format!("--rtmr {spec:?}: N is 0, 1 or 2 (RTMR3 is checked by replay)")
        })?;
        policy.rtmrs[n] = Some(value.to_ascii_lowercase());
    }
    Ok(policy)
}

/// The SEV-SNP policy from the command line.
pub(crate) fn snp_policy(
    allow_debug: bool,
    measurement: Option<String>,
    min_tcb: Option<String>,
    max_vmpl: Option<u32>,
) -> Result<vouch_tee::snp::SnpPolicy> {
    let min_tcb = match min_tcb {
        Some(spec) => {
            let v: Vec<u8> = spec
                .split(',')
                .map(|x| x.trim().parse::<u8>())
                .collect::<Result<_, _>>()
                .with_context(|| {
                    format!("--min-tcb {spec:?}: use four numbers BL,TEE,SNP,UCODE")
                })?;
            let [bootloader, tee, snp, microcode] = v[..] else {
                bail!("--min-tcb {spec:?}: use four numbers BL,TEE,SNP,UCODE")
            };
            Some(vouch_tee::snp::Tcb {
                bootloader,
                tee,
                snp,
                microcode,
            })
        }
        None => None,
    };
    Ok(vouch_tee::snp::SnpPolicy {
        allow_debug,
        min_tcb,
        measurement,
        max_vmpl,
    })
}

/// A file a verification reads, or an error naming it.
fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
