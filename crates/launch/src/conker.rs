//! Conker's REST API (`/sw/api/v1/container`), so Conker users can drive vouchd unchanged.
//!
//! Conker runs one task per confidential VM: `POST` creates it (asynchronously), `GET` shows it,
//! `DELETE` removes it, `POST .../cancel` stops a launch that has not started its container.
//! Responses use Conker's envelope `{code, message, data}`. Secrets from `KmsEndpoints` are fetched
//! from a `vouch-kbs` in quick mode and land in `/secret/secret-<endpoint>.json`, as Conker does.
//! `Ports` are published from vouchd's `--publish-address` into the container's own network
//! namespace; `Mounts` of type `volume` are named volumes kept by vouchd. `Cmd` is split into
//! words as a shell would, without any expansion.
//! Unlike Conker, this API is only served on vouchd's 0600 unix socket, and registry passwords are
//! never stored or shown.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use vouch_api::{Container, CreateContainer, TaskState};

use crate::engine::EngineError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConkerRequest {
    pub name: String,
    pub image_info: ImageInfo,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub kms_endpoints: Vec<String>,
    // Fields vouch does not interpret (SessionId, WorkerHost, ...) are read past and dropped:
    // nothing a client sends is kept or shown back unless vouch understands it.
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInfo {
    pub image_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_auth_info: Option<RegisterAuthInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_execution_time: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterAuthInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Port {
    pub target_port: u16,
    pub published_port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Mount {
    #[serde(rename = "Type")]
    pub kind: String,
    pub target: String,
    pub source: String,
    #[serde(default, rename = "RW")]
    pub rw: bool,
}

/// The quick-mode resource a Conker KMS endpoint serves.
pub(crate) const KMS_RESOURCE: &str = vouch_kbs_client::QUICK_RESOURCE;

/// Translate a Conker request into a vouch container request, refusing what vouch cannot honour
/// yet with a clear reason rather than silently ignoring it.
pub(crate) fn to_create(req: &ConkerRequest) -> Result<CreateContainer, EngineError> {
    if let Some(t) = req
        .image_info
        .max_execution_time
        .filter(|t| *t > vouch_api::MAX_EXECUTION_TIME)
    {
        return Err(EngineError::BadRequest(format!(
            "MaxExecutionTime {t} is over {} seconds (a year)",
            vouch_api::MAX_EXECUTION_TIME
        )));
    }
    // Ports are published from vouchd's --publish-address into the container's own network
    // namespace, as Conker publishes them from the CVM.
    let publish = req
        .ports
        .iter()
        .map(|p| format!("{}:{}", p.published_port, p.target_port))
        .collect();
    let mut volumes = Vec::new();
    for m in &req.mounts {
        if m.kind != "volume" {
            return Err(EngineError::BadRequest(format!(
                "Mounts of Type {:?} are not supported: use Type \"volume\" (a named volume kept by vouchd); a directory of the host is not part of what is measured",
                m.kind
            )));
        }
        let mode = if m.rw { "rw" } else { "ro" };
        volumes.push(format!("{}:{}:{mode}", m.source, m.target));
    }
    let mut secrets = Vec::new();
    for ep in &req.kms_endpoints {
        let ok = ep
            .rsplit_once(':')
            .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok())
            && ep
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
        if !ok {
            return Err(EngineError::BadRequest(format!(
                "KmsEndpoints entry {ep:?} must be HOST:PORT"
            )));
        }
        secrets.push(format!("kbs://{ep}/{KMS_RESOURCE},target=secret-{ep}.json"));
    }
    let cmd = req
        .image_info
        .cmd
        .as_deref()
        .map(split_command)
        .transpose()?
        .unwrap_or_default();
    Ok(CreateContainer {
        image: req.image_info.image_name.clone(),
        name: Some(req.name.clone()),
        cmd,
        env: req.env.clone(),
        secrets,
        publish,
        volumes,
        ..Default::default()
    })
}

/// Split a command line as a POSIX shell splits words: blanks separate, single quotes keep
/// everything literally, double quotes keep blanks, a backslash escapes the next character.
/// No expansion of any kind happens.
fn split_command(line: &str) -> Result<Vec<String>, EngineError> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    let unterminated =
        || EngineError::BadRequest(format!("Cmd {line:?} has an unterminated quote or escape"));
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(unterminated()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err(unterminated()),
                        },
                        Some(c) => w.push(c),
                        None => return Err(unterminated()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(unterminated()),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// The request as kept with the task and shown back: only the fields vouch understands, with
/// registry passwords and environment values (either may hold a secret) redacted.
pub fn redacted(req: &ConkerRequest) -> Value {
    let mut r = req.clone();
    if let Some(auth) = r.image_info.register_auth_info.as_mut() {
        if !auth.password.is_empty() {
            auth.password = "<redacted>".into();
        }
    }
    for e in r.env.iter_mut() {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        *e = format!("{key}=<redacted>");
    }
    serde_json::to_value(&r).unwrap_or(Value::Null)
}

/// Conker's task view.
pub fn task_view(c: &Container, conf: &Value, cancel_requested: bool) -> Value {
    let state = c.state;
    json!({
        "Id": c.id,
        "ContainerConf": conf,
        "Status": state.as_str(),
        "IsCancel": cancel_requested || state == TaskState::Cancelled,
        "Events": c.events.iter().map(|e| json!({"Action": e.action, "Message": e.message, "Time": e.time})).collect::<Vec<_>>(),
        "ContainerInspect": {
            "Id": c.id,
            "Created": c.created_at,
            "Image": c.image_digest,
            "Path": c.command.first(),
            "Args": c.command.iter().skip(1).collect::<Vec<_>>(),
            "State": {
                "Status": state.as_str().to_ascii_lowercase(),
                "Running": state == TaskState::Running,
                "OOMKilled": c.oom_killed,
                "Pid": c.pid.unwrap_or(0),
                "ExitCode": c.exit_code.unwrap_or(0),
                "Error": c.error.clone().unwrap_or_default(),
                "StartedAt": c.started_at,
                "FinishedAt": c.finished_at,
            },
        },
    })
}

/// Conker's response envelope.
pub fn envelope(code: u16, message: &str, data: Value) -> Value {
    json!({"code": code, "message": message, "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: Value) -> ConkerRequest {
        serde_json::from_value(body).expect("conker request")
    }

    #[test]
    fn commands_split_as_a_shell_would() {
        let split = |s: &str| split_command(s).expect(s);
        assert_eq!(split("sleep 60"), ["sleep", "60"]);
        assert_eq!(split("sh -c 'echo a  b' x"), ["sh", "-c", "echo a  b", "x"]);
        assert_eq!(
            split(r#"echo "a \"q\" $HOME" b\ c ''"#),
            ["echo", r#"a "q" $HOME"#, "b c", ""]
        );
        assert_eq!(split("  "), Vec::<String>::new());
        for bad in ["sh -c 'open", "echo \"x", "trailing\\"] {
            assert!(split_command(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn translates_and_refuses_what_is_not_supported() {
        let r = req(json!({
            "Name": "app", "ImageInfo": {"ImageName": "bb", "Cmd": "sh -c true",
                "RegisterAuthInfo": {"Username": "u", "Password": "hunter2"}},
            "Ports": [{"TargetPort": 8080, "PublishedPort": 8080}],
            "Env": ["A=s3cr3t-value"], "KmsEndpoints": ["127.0.0.1:3333"], "SessionId": "s1",
            "WorkerHost": "\u{1b}[2Kx"
        }));
        let c = to_create(&r).expect("create");
        assert_eq!(c.cmd, ["sh", "-c", "true"]);
        assert_eq!(c.network, None);
        assert_eq!(c.publish, ["8080:8080"]);
        assert_eq!(
            c.secrets,
            ["kbs://127.0.0.1:3333/conker/secret/json,target=secret-127.0.0.1:3333.json"]
        );
        assert_eq!(c.env, ["A=s3cr3t-value"]);
        let shown = redacted(&r).to_string();
        for kept_out in ["hunter2", "SessionId", "WorkerHost", "s3cr3t"] {
            assert!(!shown.contains(kept_out), "{kept_out} in {shown}");
        }
        assert!(shown.contains("A=<redacted>"), "{shown}");
        let mut remap = r.clone();
        remap.ports[0].published_port = 30001;
        remap.mounts.push(Mount {
            kind: "volume".into(),
            target: "/d".into(),
            source: "v".into(),
            rw: false,
        });
        let c = to_create(&remap).expect("ports and volumes");
        assert_eq!(c.publish, ["30001:8080"]);
        assert_eq!(c.volumes, ["v:/d:ro"]);
        let mut bind = r.clone();
        bind.mounts.push(Mount {
            kind: "bind".into(),
            target: "/d".into(),
            source: "/etc".into(),
            rw: true,
        });
        assert!(to_create(&bind)
            .expect_err("bind")
            .to_string()
            .contains("not supported"));
        let mut bad = r;
        bad.kms_endpoints = vec!["no-port".into()];
        assert!(to_create(&bad).is_err());
    }
}
