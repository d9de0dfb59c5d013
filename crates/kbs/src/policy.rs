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
//!   "kbs":       {"allow_sim": bool} }
//! ```

use std::sync::Arc;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::{Program, RegoVM};
use serde_json::Value;

/// The policy used when the owner has set none: hardware evidence only (sim only when the KBS
/// runs with `--allow-sim`), and when reference images are set, the requesting container's image
/// digest must be one of them.
pub const DEFAULT_POLICY: &str = r#"package policy

default allow := false

allow if {
    platform_ok
    image_ok
}

platform_ok if input.tee.hardware == true

platform_ok if {
    input.tee.hardware == false
    input.kbs.allow_sim == true
}

image_ok if count(object.get(input.reference, "images", [])) == 0

image_ok if {
    some digest in input.reference.images
    digest == input.container.image_digest
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
pub fn validate(policy: &str) -> Result<(), PolicyError> {
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

/// Evaluate `data.policy.allow` for `input`. Anything but `true` denies.
pub fn evaluate(policy: &str, input: Value) -> Result<bool, PolicyError> {
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

fn run(compiled: Compiled, input: Value) -> Result<bool, PolicyError> {
    let input = regorus::Value::from(input);
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

    fn input(hardware: bool, allow_sim: bool, image: &str, refs: Value) -> Value {
        json!({
            "tee": {"type": if hardware { "tdx" } else { "sim" }, "hardware": hardware},
            "container": {"image_digest": image},
            "reference": refs,
            "kbs": {"allow_sim": allow_sim},
        })
    }

    #[test]
    fn default_policy_refuses_sim_unless_allowed() {
        assert!(
            !evaluate(DEFAULT_POLICY, input(false, false, "sha256:a", json!({}))).expect("eval")
        );
        assert!(evaluate(DEFAULT_POLICY, input(false, true, "sha256:a", json!({}))).expect("eval"));
        assert!(evaluate(DEFAULT_POLICY, input(true, false, "sha256:a", json!({}))).expect("eval"));
    }

    #[test]
    fn default_policy_checks_reference_images() {
        let refs = json!({"images": ["sha256:good"]});
        assert!(evaluate(
            DEFAULT_POLICY,
            input(true, false, "sha256:good", refs.clone())
        )
        .expect("eval"));
        assert!(!evaluate(DEFAULT_POLICY, input(true, false, "sha256:bad", refs)).expect("eval"));
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
                let vm = run(Compiled::Vm(program.clone()), case.clone()).expect("vm");
                let it =
                    run(Compiled::Interpreter(interp.clone()), case.clone()).expect("interpreter");
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
