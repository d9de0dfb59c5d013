//! Resource release policy in Rego (evaluated with regorus).
//!
//! A policy is a Rego module in `package policy` whose rule `allow` decides. Its input:
//!
//! ```json
//! { "tee":       {"type": "sim|tpm|tdx|snp", "hardware": bool, "signer": "...", "registers": [...]},
//!   "log":       {"records": N, "containers": [{"id","name","image","image_digest","config_digest","exit_code"}]},
//!   "container": the container the evidence was fetched for (named in the quoted runtime data,
//!                resolved against the log: {"id","name","image","image_digest","config_digest",
//!                "create_seq","exit_code","records": [its own records]}), or null,
//!   "resource":  {"repo", "type", "tag", "path"},
//!   "reference": the reference values document set by the owner (e.g. {"images": [...]}),
//!   "kbs":       {"allow_sim": bool, "allow_sample": bool} }
//! ```
//!
//! Confidential Containers' evidence (`tee.format` `"coco"`) gives the same claims, plus
//! `events` (AAEL events of other writers, `{"domain", "operation", "content"}`) in `log` and
//! `init_data` (`{"algorithm", "digest", "bound"}`) in `tee` when the client sent init-data;
//! its `sample` evidence has `tee.type` `"sample"` and `hardware` false.
//!
//! ```json
//! ```

use std::sync::Arc;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::{Program, RegoVM};
use serde_json::Value;

/// The policy used when the owner has set none.
///
/// - Hardware evidence only (sim only when the KBS runs with `--allow-sim`, Confidential
///   Containers' unsigned sample evidence only with `--allow-sample`).
/// - **Boot chain before workload**: hardware evidence must show boot measurements that match
///   the owner's reference values, one list per measurement: for TDX `mrtd` and `rtmr0` to
///   `rtmr2`, for a TPM `pcr0` to `pcr7` (SHA-256 bank), for SEV-SNP `measurement`. A missing
///   reference refuses, naming it. An owner opts out only explicitly and per resource, by naming
///   it in `boot_chain_optional`.
/// - TEE attributes the owner requires or refuses: `required_attributes` / `refused_attributes`
///   in a TEE's reference values name platform claims that must be `"true"` / must not be
///   (for TDX, the TD attribute bits: `sept_ve_disable`, `migratable`, `debug`, ...). None by
///   default: TD attributes are claims, as in Intel's QVL.
/// - When reference images are set, the requesting container's image digest must be one.
///
/// Reference values (`vouch-kbs reference --file refs.json`), for example:
///
/// ```json
/// { "images": ["sha256:..."],
///   "tdx": {"mrtd": ["<96 hex>"], "rtmr0": ["..."], "rtmr1": ["..."], "rtmr2": ["..."],
///           "required_attributes": ["sept_ve_disable"], "refused_attributes": ["migratable"]},
///   "tpm": {"pcr0": ["<64 hex>"], "pcr1": ["..."], "...": [], "pcr7": ["..."]},
///   "snp": {"measurement": ["<96 hex>"]},
///   "boot_chain_optional": ["default/key/dev-only"] }
/// ```
///
/// `reasons` says why a request is refused; the KBS reports them with the refusal.
pub(crate) const DEFAULT_POLICY: &str = r#"package policy

default allow := false

boot_keys := {
    "tdx": ["mrtd", "rtmr0", "rtmr1", "rtmr2"],
    "tpm": ["pcr0", "pcr1", "pcr2", "pcr3", "pcr4", "pcr5", "pcr6", "pcr7"],
    "snp": ["measurement"],
}

allow if {
    platform_ok
    boot_ok
    attributes_ok
    image_ok
}

platform_ok if input.tee.hardware == true

platform_ok if {
    input.tee.hardware == false
    input.tee.type == "sim"
    input.kbs.allow_sim == true
}

platform_ok if {
    input.tee.hardware == false
    input.tee.type == "sample"
    input.kbs.allow_sample == true
}

boot_ok if input.tee.hardware == false

boot_ok if {
    input.tee.hardware == true
    boot_optional
}

boot_ok if {
    input.tee.hardware == true
    not boot_optional
    object.get(boot_keys, input.tee.type, null) != null
    count(boot_problems) == 0
}

boot_optional if {
    some path in object.get(input.reference, "boot_chain_optional", [])
    path == input.resource.path
}

boot_refs(key) := object.get(object.get(input.reference, input.tee.type, {}), key, [])

boot_problems contains msg if {
    some key in object.get(boot_keys, input.tee.type, [])
    count(boot_refs(key)) == 0
    msg := sprintf("no reference value for the %s boot measurement %s (set it with vouch-kbs reference, or name the resource in boot_chain_optional)", [input.tee.type, key])
}

boot_problems contains msg if {
    some key in object.get(boot_keys, input.tee.type, [])
    refs := {lower(r) | some r in boot_refs(key)}
    count(refs) > 0
    value := lower(object.get(object.get(input.tee, "platform", {}), key, ""))
    not value in refs
    msg := sprintf("the %s boot measurement %s is %s, not one of its reference values", [input.tee.type, key, value])
}

tee_refs := object.get(input.reference, input.tee.type, {})

attribute_problems contains msg if {
    some name in object.get(tee_refs, "required_attributes", [])
    object.get(object.get(input.tee, "platform", {}), name, "") != "true"
    msg := sprintf("the %s attribute %s is required and not set", [input.tee.type, name])
}

attribute_problems contains msg if {
    some name in object.get(tee_refs, "refused_attributes", [])
    object.get(object.get(input.tee, "platform", {}), name, "") == "true"
    msg := sprintf("the %s attribute %s is set, and the reference values refuse it", [input.tee.type, name])
}

attributes_ok if count(attribute_problems) == 0

image_ok if count(object.get(input.reference, "images", [])) == 0

image_ok if {
    some digest in input.reference.images
    digest == input.container.image_digest
}

reasons contains "the evidence comes from the sim TEE, and this KBS runs without --allow-sim" if {
    input.tee.hardware == false
    input.tee.type == "sim"
    not input.kbs.allow_sim == true
}

reasons contains "the evidence is Confidential Containers' unsigned sample evidence, and this KBS runs without --allow-sample" if {
    input.tee.hardware == false
    input.tee.type == "sample"
    not input.kbs.allow_sample == true
}

reasons contains msg if {
    input.tee.hardware == true
    not boot_optional
    some msg in boot_problems
}

reasons contains msg if {
    input.tee.hardware == true
    not boot_optional
    object.get(boot_keys, input.tee.type, null) == null
    msg := sprintf("no boot measurements are known for %s evidence", [input.tee.type])
}

reasons contains msg if {
    some msg in attribute_problems
}

requester_image := d if {
    is_object(input.container)
    d := object.get(input.container, "image_digest", "(none named)")
} else := "(none named)"

reasons contains msg if {
    not image_ok
    msg := sprintf("the requesting container's image %s is not one of the reference images", [requester_image])
}
"#;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy does not compile: {0}")]
    Compile(String),
    #[error("policy evaluation failed: {0}")]
    Eval(String),
}

/// Check that a policy compiles and defines `data.policy.allow`.
pub(crate) fn validate(policy: &str) -> Result<(), PolicyError> {
    evaluate(policy, serde_json::json!({}))
        .map(|_| ())
        .map_err(|e| match e {
            PolicyError::Eval(m) if m.contains("not a valid rule path") => {
                PolicyError::Compile("the policy must be in package policy and define allow".into())
            }
            other => other,
        })
}

const ENTRY: &str = "data.policy.allow";

/// A policy ready to evaluate: bytecode for regorus' virtual machine, or, for the rare policy
/// its bytecode compiler does not cover, the tree-walking interpreter.
#[derive(Clone)]
enum Compiled {
    Vm(Arc<Program>),
    Interpreter(regorus::CompiledPolicy),
}

fn compile(policy: &str) -> Result<Compiled, PolicyError> {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(false);
    engine
        .add_policy("policy.rego".to_string(), policy.to_string())
        .map_err(|e| PolicyError::Compile(e.to_string()))?;
    let compiled = engine
        .compile_with_entrypoint(&ENTRY.into())
        .map_err(|e| PolicyError::Eval(e.to_string()))?;
    Ok(match Compiler::compile_from_policy(&compiled, &[ENTRY]) {
        Ok(program) => Compiled::Vm(program),
        Err(e) => {
            tracing::debug!(error = %e, "policy evaluated by the interpreter");
            Compiled::Interpreter(compiled)
        }
    })
}

/// Compiled policies by their text, so a hot path neither re-parses nor re-prepares Rego per
/// request.
static CACHE: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, Compiled>>> =
    std::sync::LazyLock::new(Default::default);
const CACHE_LIMIT: usize = 256;

/// Why `policy` refuses `input`: the strings of its `reasons` set, when it defines one (the
/// default policy does); empty otherwise, or when it cannot be evaluated.
pub fn explain(policy: &str, input: regorus::Value) -> Vec<String> {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(false);
    if engine
        .add_policy("policy.rego".to_string(), policy.to_string())
        .is_err()
    {
        return Vec::new();
    }
    engine.set_input(input);
    let Ok(value) = engine.eval_rule("data.policy.reasons".to_string()) else {
        return Vec::new();
    };
    let Ok(json) = serde_json::to_value(&value) else {
        return Vec::new();
    };
    let mut out: Vec<String> = json
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Evaluate `data.policy.allow` for `input`. Anything but `true` denies.
pub(crate) fn evaluate(policy: &str, input: Value) -> Result<bool, PolicyError> {
    evaluate_value(policy, regorus::Value::from(input))
}

/// [`evaluate`] for input already in regorus' form (cheap to clone: it is reference-counted).
pub(crate) fn evaluate_value(policy: &str, input: regorus::Value) -> Result<bool, PolicyError> {
    let cached = CACHE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(policy)
        .cloned();
    let compiled = match cached {
        Some(c) => c,
        None => {
            let c = compile(policy)?;
            let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(policy.to_string(), c.clone());
            c
        }
    };
    run(compiled, input)
}

fn run(compiled: Compiled, input: regorus::Value) -> Result<bool, PolicyError> {
    let result = match compiled {
        Compiled::Vm(program) => {
            let mut vm = RegoVM::new();
            vm.load_program(program);
            vm.set_input(input);
            vm.execute_entry_point_by_name(ENTRY)
                .map_err(|e| PolicyError::Eval(e.to_string()))?
        }
        Compiled::Interpreter(policy) => policy
            .eval_with_input(input)
            .map_err(|e| PolicyError::Eval(e.to_string()))?,
    };
    Ok(result == regorus::Value::from(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Boot measurements of a TDX guest, and reference values that match them.
    fn tdx_platform() -> Value {
        json!({"mrtd": "aa".repeat(48), "rtmr0": "b0".repeat(48), "rtmr1": "b1".repeat(48), "rtmr2": "b2".repeat(48)})
    }

    fn tdx_refs() -> Value {
        json!({"tdx": {"mrtd": ["AA".repeat(48)], "rtmr0": ["b0".repeat(48)], "rtmr1": ["00".repeat(48), "b1".repeat(48)], "rtmr2": ["b2".repeat(48)]}})
    }

    fn input(hardware: bool, allow_sim: bool, image: &str, refs: Value) -> Value {
        json!({
            "tee": {"type": if hardware { "tdx" } else { "sim" }, "hardware": hardware,
                    "platform": if hardware { tdx_platform() } else { json!({}) }},
            "container": {"image_digest": image},
            "resource": {"path": "default/key/app"},
            "reference": refs,
            "kbs": {"allow_sim": allow_sim},
        })
    }

    fn merged(a: Value, b: Value) -> Value {
        let mut a = a;
        for (k, v) in b.as_object().expect("object") {
            a[k] = v.clone();
        }
        a
    }

    /// TD attributes are platform claims the owner's reference values can require or refuse.
    #[test]
    fn reference_values_require_and_refuse_tee_attributes() {
        let mut refs = tdx_refs();
        let mut base = input(true, false, "sha256:a", refs.clone());
        base["tee"]["platform"]["sept_ve_disable"] = json!("false");
        base["tee"]["platform"]["migratable"] = json!("true");
        assert!(
            evaluate(DEFAULT_POLICY, base.clone()).expect("eval"),
            "claims only by default"
        );
        refs["tdx"]["required_attributes"] = json!(["sept_ve_disable"]);
        refs["tdx"]["refused_attributes"] = json!(["migratable"]);
        let mut refused = base.clone();
        refused["reference"] = refs.clone();
        assert!(!evaluate(DEFAULT_POLICY, refused.clone()).expect("eval"));
        let mut reasons = explain(DEFAULT_POLICY, regorus::Value::from(refused.clone()));
        reasons.sort();
        assert_eq!(
            reasons,
            [
                "the tdx attribute migratable is set, and the reference values refuse it",
                "the tdx attribute sept_ve_disable is required and not set",
            ]
        );
        refused["tee"]["platform"]["sept_ve_disable"] = json!("true");
        refused["tee"]["platform"]["migratable"] = json!("false");
        assert!(evaluate(DEFAULT_POLICY, refused).expect("eval"));
    }

    #[test]
    fn default_policy_refuses_sim_unless_allowed() {
        let sim_denied = input(false, false, "sha256:a", json!({}));
        assert!(!evaluate(DEFAULT_POLICY, sim_denied.clone()).expect("eval"));
        assert_eq!(
            explain(DEFAULT_POLICY, regorus::Value::from(sim_denied)),
            ["the evidence comes from the sim TEE, and this KBS runs without --allow-sim"]
        );
        assert!(evaluate(DEFAULT_POLICY, input(false, true, "sha256:a", json!({}))).expect("eval"));
        assert!(
            evaluate(DEFAULT_POLICY, input(true, false, "sha256:a", tdx_refs())).expect("eval")
        );
    }

    /// CoCo's sample evidence needs its own flag: --allow-sim does not let it in, nor does
    /// --allow-sample let sim evidence in.
    #[test]
    fn default_policy_refuses_sample_evidence_unless_allowed_on_its_own() {
        let sample = |allow_sim: bool, allow_sample: bool| {
            let mut i = input(false, allow_sim, "sha256:a", json!({}));
            i["tee"]["type"] = json!("sample");
            i["container"] = Value::Null;
            i["kbs"]["allow_sample"] = json!(allow_sample);
            i
        };
        assert!(!evaluate(DEFAULT_POLICY, sample(true, false)).expect("eval"));
        assert_eq!(
            explain(DEFAULT_POLICY, regorus::Value::from(sample(true, false))),
            ["the evidence is Confidential Containers' unsigned sample evidence, and this KBS runs without --allow-sample"]
        );
        assert!(evaluate(DEFAULT_POLICY, sample(false, true)).expect("eval"));
        let mut sim = input(false, false, "sha256:a", json!({}));
        sim["kbs"]["allow_sample"] = json!(true);
        assert!(!evaluate(DEFAULT_POLICY, sim).expect("eval"));
    }

    /// Evidence that names no container (CoCo's, or vouch's fetched for no container) is
    /// refused under reference images, and the refusal says none was named.
    #[test]
    fn reference_images_refuse_evidence_that_names_no_container() {
        let refs = merged(tdx_refs(), json!({"images": ["sha256:good"]}));
        let mut i = input(true, false, "sha256:good", refs);
        i["container"] = Value::Null;
        assert!(!evaluate(DEFAULT_POLICY, i.clone()).expect("eval"));
        assert_eq!(
            explain(DEFAULT_POLICY, regorus::Value::from(i)),
            ["the requesting container's image (none named) is not one of the reference images"]
        );
    }

    #[test]
    fn default_policy_checks_reference_images() {
        let refs = merged(tdx_refs(), json!({"images": ["sha256:good"]}));
        assert!(evaluate(
            DEFAULT_POLICY,
            input(true, false, "sha256:good", refs.clone())
        )
        .expect("eval"));
        let bad = input(true, false, "sha256:bad", refs);
        assert!(!evaluate(DEFAULT_POLICY, bad.clone()).expect("eval"));
        assert_eq!(
            explain(DEFAULT_POLICY, regorus::Value::from(bad)),
            ["the requesting container's image sha256:bad is not one of the reference images"]
        );
    }

    /// Boot chain before workload: hardware evidence whose boot measurements have no reference
    /// values is refused, each missing one named; a measurement that matches none of its values
    /// is refused, named with its value; only a resource the owner names in
    /// boot_chain_optional does without them.
    #[test]
    fn default_policy_requires_boot_chain_reference_values() {
        let images = json!({"images": ["sha256:good"]});
        let none = input(true, false, "sha256:good", images.clone());
        assert!(!evaluate(DEFAULT_POLICY, none.clone()).expect("eval"));
        let reasons = explain(DEFAULT_POLICY, regorus::Value::from(none));
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        for key in ["mrtd", "rtmr0", "rtmr1", "rtmr2"] {
            assert!(
                reasons.iter().any(|r| r.contains(&format!(
                    "no reference value for the tdx boot measurement {key} "
                ))),
                "{key}: {reasons:?}"
            );
        }
        // One value off.
        let mut refs = merged(tdx_refs(), images.clone());
        refs["tdx"]["rtmr1"] = json!(["00".repeat(48)]);
        let off = input(true, false, "sha256:good", refs);
        assert!(!evaluate(DEFAULT_POLICY, off.clone()).expect("eval"));
        assert_eq!(
            explain(DEFAULT_POLICY, regorus::Value::from(off)),
            [format!(
                "the tdx boot measurement rtmr1 is {}, not one of its reference values",
                "b1".repeat(48)
            )]
        );
        // References of another TEE do not count.
        let tpm_only = input(
            true,
            false,
            "sha256:good",
            merged(images.clone(), json!({"tpm": {"pcr0": ["00"]}, "tdx": {}})),
        );
        assert!(!evaluate(DEFAULT_POLICY, tpm_only).expect("eval"));
        // TPM evidence needs PCRs 0 to 7.
        let mut tpm = input(true, false, "sha256:good", images.clone());
        tpm["tee"]["type"] = json!("tpm");
        tpm["tee"]["platform"] = json!({"pcr0": "00", "pcr1": "01", "pcr2": "02", "pcr3": "03", "pcr4": "04", "pcr5": "05", "pcr6": "06", "pcr7": "07"});
        assert_eq!(
            explain(DEFAULT_POLICY, regorus::Value::from(tpm.clone())).len(),
            8
        );
        tpm["reference"]["tpm"] = json!({"pcr0": ["00"], "pcr1": ["01"], "pcr2": ["02"], "pcr3": ["03"], "pcr4": ["04"], "pcr5": ["05"], "pcr6": ["06"], "pcr7": ["07"]});
        assert!(evaluate(DEFAULT_POLICY, tpm).expect("eval"));
        // The explicit, per-resource opt-out.
        let optional = merged(images, json!({"boot_chain_optional": ["default/key/app"]}));
        assert!(evaluate(
            DEFAULT_POLICY,
            input(true, false, "sha256:good", optional.clone())
        )
        .expect("eval"));
        let mut other_resource = input(true, false, "sha256:good", optional);
        other_resource["resource"]["path"] = json!("default/key/other");
        assert!(!evaluate(DEFAULT_POLICY, other_resource).expect("eval"));
        // Sim evidence has no boot chain; --allow-sim alone decides for it.
        assert!(evaluate(
            DEFAULT_POLICY,
            input(
                false,
                true,
                "sha256:good",
                json!({"images": ["sha256:good"]})
            )
        )
        .expect("eval"));
    }

    /// The bytecode VM and the interpreter decide alike, on the default policy and on one that
    /// uses iteration, comprehensions, string builtins and negation.
    #[test]
    fn vm_and_interpreter_agree() {
        let custom = r#"package policy
default allow := false
allowed_repos := {r | some r in input.reference.repos}
allow if {
    input.resource.repo in allowed_repos
    startswith(input.container.image_digest, "sha256:")
    not input.tee.type == "snp"
    count([c | some c in input.log.containers; c.exit_code == null]) >= 1
}
"#;
        let mut cases = Vec::new();
        for (hw, sim, img) in [
            (true, false, "sha256:good"),
            (false, false, "sha256:good"),
            (false, true, "sha256:bad"),
            (true, true, "md5:x"),
        ] {
            for refs in [
                json!({}),
                json!({"images": ["sha256:good"], "repos": ["default"]}),
            ] {
                let mut i = input(hw, sim, img, refs);
                i["resource"] = json!({"repo": "default"});
                i["log"] = json!({"containers": [{"exit_code": null}]});
                cases.push(i);
            }
        }
        for policy in [DEFAULT_POLICY, custom] {
            let Compiled::Vm(program) = compile(policy).expect("compile") else {
                panic!("policy not compiled to bytecode");
            };
            let mut engine = regorus::Engine::new();
            engine.set_rego_v0(false);
            engine
                .add_policy("p.rego".into(), policy.into())
                .expect("parse");
            let interp = engine
                .compile_with_entrypoint(&ENTRY.into())
                .expect("compile");
            let mut allowed = 0;
            for case in &cases {
                let vm = run(
                    Compiled::Vm(program.clone()),
                    regorus::Value::from(case.clone()),
                )
                .expect("vm");
                let it = run(
                    Compiled::Interpreter(interp.clone()),
                    regorus::Value::from(case.clone()),
                )
                .expect("interpreter");
                assert_eq!(vm, it, "{policy}\n{case}");
                allowed += usize::from(vm);
            }
            // Both policies allow some of the cases and refuse others.
            assert!(allowed > 0 && allowed < cases.len(), "{policy}: {allowed}");
        }
    }

    #[test]
    fn broken_policies_are_reported() {
        assert!(matches!(
            validate("package policy\nallow if {"),
            Err(PolicyError::Compile(_))
        ));
        // A policy without `allow` is refused when it is stored.
        let err = validate("package policy\nx := 1\n").expect_err("no allow");
        assert!(err.to_string().contains("define allow"), "{err}");
    }
}
