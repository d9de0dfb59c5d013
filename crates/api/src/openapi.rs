//! The OpenAPI 3.0 document served at `/v1/openapi.json`, built from [`crate::ROUTES`].

use serde_json::{json, Map, Value};

use crate::ROUTES;

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn request_schema(method: &str, path: &str) -> Option<&'static str> {
    match (method, path) {
        ("post", "/v1/containers") => Some("CreateContainer"),
        ("post", "/v1/images/load-path") => Some("LoadImage"),
        ("post", "/v1/images/pull") => Some("PullImage"),
        ("post", "/v1/attest") => Some("AttestRequest"),
        ("post", "/v1/containers/{id}/exec") => Some("ExecRequest"),
        _ => None,
    }
}

fn response(method: &str, path: &str) -> Value {
    let json_of = |s: Value| json!({"application/json": {"schema": s}});
    let content = match (method, path) {
        ("get", "/v1/containers") => {
            json_of(json!({"type": "array", "items": schema_ref("Container")}))
        }
        ("get", "/v1/images") => {
            json_of(json!({"type": "array", "items": schema_ref("ImageSummary")}))
        }
        ("post", "/v1/images/load") | ("post", "/v1/images/load-path") => {
            json_of(json!({"type": "array", "items": schema_ref("ImageSummary")}))
        }
        ("post", "/v1/images/pull") => json_of(schema_ref("ImageSummary")),
        ("get", "/v1/volumes") => json_of(
            json!({"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "used_by": {"type": "array", "items": {"type": "string"}}}}}),
        ),
        ("delete", "/v1/volumes/{name}") => json_of(json!({"type": "object", "properties": {
            "name": {"type": "string"}, "used_by": {"type": "array", "items": {"type": "string"}}}})),
        ("post", "/v1/containers/{id}/wait") => json_of(schema_ref("WaitResponse")),
        ("get", "/v1/containers/{id}/spec") => json_of(schema_ref("RuntimeSpec")),
        ("get", "/v1/info") => json_of(schema_ref("Info")),
        ("get", "/v1/tee") => json_of(json!({"type": "object", "properties": {
            "tee": {"type": "string"}, "hardware": {"type": "boolean"}, "register_index": {"type": "integer"},
            "registers": {"type": "array", "items": {"type": "string"}}, "warning": {"type": "string", "nullable": true}}})),
        ("post", "/v1/containers/{id}/exec")
        | ("get", "/v1/execs/{id}")
        | ("post", "/v1/execs/{id}/wait")
        | ("post", "/v1/execs/{id}/kill")
        | ("post", "/v1/execs/{id}/stdin")
        | ("post", "/v1/execs/{id}/resize") => json_of(schema_ref("Exec")),
        ("get", "/v1/containers/{id}/logs") | ("get", "/v1/execs/{id}/logs") => {
            json!({"application/vnd.docker.multiplexed-stream": {"schema": {"type": "string", "format": "binary"}}})
        }
        ("get", "/v1/events") => {
            json_of(json!({"type": "array", "items": schema_ref("EventMessage")}))
        }
        ("post", "/v1/attest") => json_of(
            json!({"type": "object", "description": "vouch evidence: tee, quote, event_log, runtime_data"}),
        ),
        ("get", "/v1/openapi.json") => json_of(json!({"type": "object"})),
        _ => json_of(schema_ref("Container")),
    };
    json!({
        "200": {"description": "success", "content": content},
        "default": {"description": "error", "content": {"application/json": {"schema": schema_ref("ErrorBody")}}}
    })
}

/// The whole document.
pub fn document(version: &str) -> Value {
    let mut paths = Map::new();
    for (method, path, summary) in ROUTES {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        let mut op = json!({"summary": summary, "responses": response(method, path)});
        let mut params = Vec::new();
        for seg in path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                params.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}));
            }
        }
        for q in [
            "all", "follow", "force", "timeout", "signal", "offset", "cols", "rows",
        ] {
            if summary.contains(&format!("{q}=")) || summary.contains(&format!("after {q}")) {
                params.push(json!({"name": q, "in": "query", "required": false, "schema": {"type": "string"}}));
            }
        }
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(schema) = request_schema(method, path) {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema_ref(schema)}}});
        }
        if (*method, *path) == ("post", "/v1/images/load") {
            op["requestBody"] = json!({"required": true, "content": {
                "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
                "application/gzip": {"schema": {"type": "string", "format": "binary"}}}});
            op["parameters"] = json!([{"name": "name", "in": "query", "required": false, "schema": {"type": "string"}}]);
        }
        entry[*method] = op;
    }
    let state_enum: Vec<&str> = crate::TaskState::ALL.iter().map(|s| s.as_str()).collect();
    let event = json!({"type": "object", "required": ["time", "action", "message"], "properties": {
        "time": {"type": "string"}, "action": {"type": "string"}, "message": {"type": "string"}}});
    let pod_ref = json!({"type": "object", "required": ["namespace", "name", "uid", "sandbox_id", "container"], "properties": {
                "namespace": {"type": "string"}, "name": {"type": "string"}, "uid": {"type": "string"},
                "sandbox_id": {"type": "string"}, "container": {"type": "string"}}});
    let create_container = json!({"type": "object", "required": ["image"], "additionalProperties": false, "properties": {
                "image": {"type": "string"}, "name": {"type": "string", "nullable": true},
                "cmd": {"type": "array", "items": {"type": "string"}},
                "entrypoint": {"type": "array", "items": {"type": "string"}, "nullable": true},
                "env": {"type": "array", "items": {"type": "string"}},
                "memory": {"type": "string", "nullable": true}, "pids_limit": {"type": "integer", "nullable": true},
                "cpus": {"type": "string", "nullable": true},
                "network": {"type": "string", "pattern": "^(none|host|container:.+|ns:/.*)$", "nullable": true},
                "hostname": {"type": "string", "maxLength": 64, "nullable": true},
                "user": {"type": "string", "nullable": true},
                "group_add": {"type": "array", "items": {"type": "string"}},
                "workdir": {"type": "string", "nullable": true},
                "auto_remove": {"type": "boolean"}, "attach": {"type": "boolean"},
                "pod": {"allOf": [schema_ref("PodRef")], "nullable": true},
                "wait_for_start": {"type": "boolean"}, "remove_if_refused": {"type": "boolean"},
                "secrets": {"type": "array", "items": {"type": "string", "pattern": "^kbs://"}},
                "publish": {"type": "array", "items": {"type": "string"}},
                "volumes": {"type": "array", "items": {"type": "string"}},
                "golden": {"type": "object", "nullable": true},
                "tty": {"type": "boolean"}, "stdin": {"type": "boolean"},
                "cols": {"type": "integer", "nullable": true}, "rows": {"type": "integer", "nullable": true},
                "read_only": {"type": "boolean"},
                "cap_drop": {"type": "array", "items": {"type": "string"}},
                "masked_paths": {"type": "array", "items": {"type": "string"}},
                "readonly_paths": {"type": "array", "items": {"type": "string"}},
                "resolv_conf": {"type": "string", "maxLength": 4096, "nullable": true},
                "sysctls": {"type": "object", "additionalProperties": {"type": "string"}},
                "seccomp": {"type": "object", "nullable": true}}});
    let container = json!({"type": "object", "required": ["id", "name", "image", "image_digest", "command", "state", "created_at", "auto_remove", "events"], "properties": {
                "id": {"type": "string"}, "name": {"type": "string"}, "image": {"type": "string"}, "image_digest": {"type": "string"},
                "command": {"type": "array", "items": {"type": "string"}}, "state": schema_ref("TaskState"),
                "created_at": {"type": "string"}, "started_at": {"type": "string", "nullable": true},
                "finished_at": {"type": "string", "nullable": true}, "exit_code": {"type": "integer", "nullable": true},
                "oom_killed": {"type": "boolean"}, "error": {"type": "string", "nullable": true},
                "pid": {"type": "integer", "nullable": true}, "config_digest": {"type": "string", "nullable": true},
                "auto_remove": {"type": "boolean"}, "ports": {"type": "array", "items": {"type": "string"}},
                "network": {"type": "string", "nullable": true},
                "pod": {"allOf": [schema_ref("PodRef")], "nullable": true},
                "tty": {"type": "boolean"}, "stdin": {"type": "boolean"},
                "events": {"type": "array", "items": schema_ref("TaskEvent")}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "vouchd", "version": version, "description": "The vouch daemon API, served on a unix socket."},
        "paths": paths,
        "components": {"schemas": {
            "ErrorBody": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "TaskState": {"type": "string", "enum": state_enum},
            "TaskEvent": event,
            "EventMessage": {"allOf": [event, {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}}}]},
            "PodRef": pod_ref,
            "CreateContainer": create_container,
            "Container": container,
            "RuntimeSpec": {"type": "object", "required": ["id", "config_digest", "spec"], "properties": {
                "id": {"type": "string"}, "config_digest": {"type": "string"}, "spec": {"type": "object"}}},
            "WaitResponse": {"type": "object", "required": ["id", "state", "oom_killed"], "properties": {
                "id": {"type": "string"}, "state": schema_ref("TaskState"), "exit_code": {"type": "integer", "nullable": true},
                "oom_killed": {"type": "boolean"}, "error": {"type": "string", "nullable": true}}},
            "ImageSummary": {"type": "object", "required": ["id", "names", "manifest_digest", "config_digest", "size", "layers"], "properties": {
                "id": {"type": "string"}, "names": {"type": "array", "items": {"type": "string"}},
                "manifest_digest": {"type": "string"}, "config_digest": {"type": "string"},
                "size": {"type": "integer"}, "layers": {"type": "integer"}}},
            "PullImage": {"type": "object", "required": ["reference"], "additionalProperties": false, "properties": {
                "reference": {"type": "string"}, "insecure_registry": {"type": "boolean"},
                "username": {"type": "string", "nullable": true}, "password": {"type": "string", "nullable": true}}},
            "LoadImage": {"type": "object", "required": ["path"], "additionalProperties": false, "properties": {
                "path": {"type": "string"}, "name": {"type": "string", "nullable": true}}},
            "ExecRequest": {"type": "object", "required": ["cmd"], "additionalProperties": false, "properties": {
                "cmd": {"type": "array", "items": {"type": "string"}}, "env": {"type": "array", "items": {"type": "string"}},
                "user": {"type": "string"}, "additional_gids": {"type": "array", "items": {"type": "integer"}},
                "workdir": {"type": "string"}, "tty": {"type": "boolean"}, "stdin": {"type": "boolean"},
                "cols": {"type": "integer"}, "rows": {"type": "integer"}}},
            "Exec": {"type": "object", "required": ["id", "container", "running", "process_digest"], "properties": {
                "id": {"type": "string"}, "container": {"type": "string"}, "pid": {"type": "integer"},
                "running": {"type": "boolean"}, "exit_code": {"type": "integer"}, "process_digest": {"type": "string"},
                "tty": {"type": "boolean"}, "stdin": {"type": "boolean"}}},
            "AttestRequest": {"type": "object", "required": ["nonce"], "additionalProperties": false, "properties": {"nonce": {"type": "string", "pattern": "^([0-9a-f]{2}){8,64}$"}}},
            "Info": {"type": "object", "properties": {
                "version": {"type": "string"}, "tee": {"type": "string"}, "hardware": {"type": "boolean"},
                "register_index": {"type": "integer"}, "register": {"type": "string"}, "records": {"type": "integer"},
                "containers": {"type": "integer"}, "running": {"type": "integer"}, "images": {"type": "integer"},
                "warning": {"type": "string", "nullable": true}}}
        }}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_once() {
        let doc = document("test");
        for (method, path, _) in ROUTES {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} missing"
            );
        }
        let count: usize = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .map(|v| v.as_object().map_or(0, |o| o.len()))
            .sum();
        assert_eq!(count, ROUTES.len());
    }

    /// Every field the API's create request and container carry is in their schemas (and the
    /// create request's, which allows no other property, holds nothing else).
    #[test]
    fn the_schemas_name_every_field() {
        let doc = document("test");
        let schema = |name: &str| doc["components"]["schemas"][name]["properties"].clone();
        let pod = crate::PodRef {
            namespace: "n".into(),
            name: "p".into(),
            uid: "u".into(),
            sandbox_id: "s".into(),
            container: "c".into(),
        };
        let create = crate::CreateContainer {
            image: "i".into(),
            name: Some("n".into()),
            cmd: vec!["c".into()],
            entrypoint: Some(vec!["e".into()]),
            env: vec!["A=b".into()],
            memory: Some("1m".into()),
            pids_limit: Some(1),
            cpus: Some("1".into()),
            network: Some("host".into()),
            hostname: Some("h".into()),
            user: Some("0".into()),
            group_add: vec!["g".into()],
            workdir: Some("/".into()),
            auto_remove: true,
            attach: true,
            pod: Some(pod.clone()),
            wait_for_start: true,
            remove_if_refused: true,
            secrets: vec!["kbs://x".into()],
            publish: vec!["1:1".into()],
            volumes: vec!["v:/v".into()],
            golden: Some(serde_json::json!({})),
            tty: true,
            stdin: true,
            cols: Some(1),
            rows: Some(1),
            read_only: true,
            cap_drop: vec!["NET_RAW".into()],
            masked_paths: vec!["/m".into()],
            readonly_paths: vec!["/r".into()],
            resolv_conf: Some("nameserver 10.0.0.1\n".into()),
            sysctls: [("kernel.sem".to_string(), "1 2 3 4".to_string())].into(),
            seccomp: Some(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"})),
        };
        let container = crate::Container {
            id: "i".into(),
            name: "n".into(),
            image: "i".into(),
            image_digest: "d".into(),
            command: vec!["c".into()],
            state: crate::TaskState::Running,
            created_at: "t".into(),
            started_at: Some("t".into()),
            finished_at: Some("t".into()),
            exit_code: Some(0),
            oom_killed: false,
            error: Some("e".into()),
            pid: Some(1),
            config_digest: Some("d".into()),
            auto_remove: true,
            ports: vec!["p".into()],
            network: Some("host".into()),
            pod: Some(pod.clone()),
            tty: true,
            stdin: true,
            events: Vec::new(),
        };
        for (name, value) in [
            (
                "CreateContainer",
                serde_json::to_value(&create).expect("json"),
            ),
            ("Container", serde_json::to_value(&container).expect("json")),
            ("PodRef", serde_json::to_value(&pod).expect("json")),
        ] {
            let properties = schema(name);
            for key in value.as_object().expect("object").keys() {
                assert!(
                    properties.get(key).is_some(),
                    "{name}.{key} is not in its schema"
                );
            }
            let documented = properties.as_object().expect("properties").len();
            assert_eq!(
                documented,
                value.as_object().expect("object").len(),
                "{name}"
            );
        }
    }
}
