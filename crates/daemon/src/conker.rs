//! Conker's REST API (`/sw/api/v1/container`), so Conker users can drive vouchd unchanged.
//!
//! Conker runs one task per confidential VM: `POST` creates it (asynchronously), `GET` shows it,
//! `DELETE` removes it, `POST .../cancel` stops a launch that has not started its container.
//! Responses use Conker's envelope `{code, message, data}`. Secrets from `KmsEndpoints` are fetched
//! from a `vouch-kbs` in quick mode and land in `/secret/secret-<endpoint>.json`, as Conker does.
//! Unlike Conker, this API is only served on vouchd's 0600 unix socket, and registry passwords are
//! never stored or shown.

use std::collections::BTreeMap;

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
    /// Fields vouch does not interpret (SessionId, WorkerHost, ...), kept as given.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
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
pub const KMS_RESOURCE: &str = vouch_kbs::QUICK_RESOURCE;

/// Translate a Conker request into a vouch container request, refusing what vouch cannot honour
/// yet with a clear reason rather than silently ignoring it.
pub fn to_create(req: &ConkerRequest) -> Result<CreateContainer, EngineError> {
    if !req.mounts.is_empty() {
        return Err(EngineError::BadRequest(
            "Mounts are not supported yet (Conker's encrypted volumes are planned); send the task without Mounts".into(),
        ));
    }
    let mut host_network = false;
    for p in &req.ports {
        if p.target_port != p.published_port {
            return Err(EngineError::BadRequest(format!(
                "publishing TargetPort {} as PublishedPort {} needs port mapping, which is not supported yet; use the same number for both",
                p.target_port, p.published_port
            )));
        }
        host_network = true;
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
        .map(|c| c.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    Ok(CreateContainer {
        image: req.image_info.image_name.clone(),
        name: Some(req.name.clone()),
        cmd,
        env: req.env.clone(),
        network: host_network.then(|| "host".to_string()),
        secrets,
        ..Default::default()
    })
}

/// The request as kept with the task and shown back: registry passwords are redacted.
pub fn redacted(req: &ConkerRequest) -> Value {
    let mut r = req.clone();
    if let Some(auth) = r.image_info.register_auth_info.as_mut() {
        if !auth.password.is_empty() {
            auth.password = "<redacted>".into();
        }
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
    fn translates_and_refuses_what_is_not_supported() {
        let r = req(json!({
            "Name": "app", "ImageInfo": {"ImageName": "bb", "Cmd": "sh -c true",
                "RegisterAuthInfo": {"Username": "u", "Password": "hunter2"}},
            "Ports": [{"TargetPort": 8080, "PublishedPort": 8080}],
            "Env": ["A=1"], "KmsEndpoints": ["127.0.0.1:3333"], "SessionId": "s1"
        }));
        let c = to_create(&r).expect("create");
        assert_eq!(c.cmd, ["sh", "-c", "true"]);
        assert_eq!(c.network.as_deref(), Some("host"));
        assert_eq!(
            c.secrets,
            ["kbs://127.0.0.1:3333/conker/secret/json,target=secret-127.0.0.1:3333.json"]
        );
        let shown = redacted(&r).to_string();
        assert!(
            !shown.contains("hunter2") && shown.contains("SessionId"),
            "{shown}"
        );
        let mut remap = r.clone();
        remap.ports[0].published_port = 30001;
        assert!(to_create(&remap)
            .expect_err("remap")
            .to_string()
            .contains("port mapping"));
        let mut vol = r.clone();
        vol.mounts.push(Mount {
            kind: "volume".into(),
            target: "/d".into(),
            source: "v".into(),
            rw: true,
        });
        assert!(to_create(&vol)
            .expect_err("mounts")
            .to_string()
            .contains("Mounts"));
        let mut bad = r;
        bad.kms_endpoints = vec!["no-port".into()];
        assert!(to_create(&bad).is_err());
    }
}
