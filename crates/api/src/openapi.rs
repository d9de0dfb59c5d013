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
    json!({
        "openapi": "3.0.3",
        "info": {"title": "vouchd", "version": version, "description": "The vouch daemon API, served on a unix socket."},
        "paths": paths,
        "components": {"schemas": {
            "ErrorBody": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "TaskState": {"type": "string", "enum": state_enum},
            "TaskEvent": event,
            "EventMessage": {"allOf": [event, {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}}}]},
            "CreateContainer": {"type": "object", "required": ["image"], "additionalProperties": false, "properties": {
                "image": {"type": "string"}, "name": {"type": "string", "nullable": true},
                "cmd": {"type": "array", "items": {"type": "string"}}, "env": {"type": "array", "items": {"type": "string"}},
                "memory": {"type": "string", "nullable": true}, "pids_limit": {"type": "integer", "nullable": true},
                "cpus": {"type": "string", "nullable": true}, "network": {"type": "string", "enum": ["none", "host"], "nullable": true},
                "user": {"type": "string", "nullable": true}, "workdir": {"type": "string", "nullable": true},
                "auto_remove": {"type": "boolean"}, "attach": {"type": "boolean"},
                "secrets": {"type": "array", "items": {"type": "string", "pattern": "^kbs://"}}}},
            "Container": {"type": "object", "required": ["id", "name", "image", "image_digest", "command", "state", "created_at", "auto_remove", "events"], "properties": {
                "id": {"type": "string"}, "name": {"type": "string"}, "image": {"type": "string"}, "image_digest": {"type": "string"},
                "command": {"type": "array", "items": {"type": "string"}}, "state": schema_ref("TaskState"),
                "created_at": {"type": "string"}, "started_at": {"type": "string", "nullable": true},
                "finished_at": {"type": "string", "nullable": true}, "exit_code": {"type": "integer", "nullable": true},
                "oom_killed": {"type": "boolean"}, "error": {"type": "string", "nullable": true},
                "pid": {"type": "integer", "nullable": true}, "config_digest": {"type": "string", "nullable": true},
                "auto_remove": {"type": "boolean"}, "events": {"type": "array", "items": schema_ref("TaskEvent")}}},
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
}
