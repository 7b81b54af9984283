//! `OUT_DIR/openapi.json`: the OpenAPI 3.1 document of the REST shim, generated from the same descriptors
//! and the same route table (`rest_routes.rs`) the shim serves, so that the two cannot drift apart.
//!
//! Schemas follow the proto3 JSON mapping as the shim speaks it: proto field names, 64-bit integers as
//! decimal strings, enums by name, `Timestamp` as an RFC 3339 string, `Duration` as `"1.5s"`, `FieldMask`
//! as a comma-separated string, `Struct` as an object and `Value` as any JSON. Every message of the
//! package is a component; unknown fields are rejected by the shim, hence `additionalProperties: false`.
//! Descriptions are the proto comments.

use std::collections::{BTreeMap, HashMap};

use prost_reflect::{
    Cardinality, DescriptorPool, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor,
};
use serde_json::{Map, Value as J, json};

use super::rest_routes::{Binding, Segment};

/// Query parameters descend into nested messages at most this deep (`a.b.c`).
const MAX_QUERY_DEPTH: usize = 3;

pub fn document(
    pool: &DescriptorPool,
    bindings: &[Binding],
    package: &str,
    version: &str,
) -> Result<J, String> {
    let comments = Comments::new(pool);
    let ctx = Ctx {
        package,
        comments: &comments,
    };
    let mut schemas = Map::new();
    for m in pool.all_messages().filter(|m| m.package_name() == package) {
        if m.is_map_entry() {
            continue;
        }
        schemas.insert(ctx.schema_name(m.full_name()), ctx.message_schema(&m));
    }
    for e in pool.all_enums().filter(|e| e.package_name() == package) {
        let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
        let mut s = json!({"type": "string", "enum": names});
        if let Some(c) = comments.get(e.parent_file(), e.path()) {
            s["description"] = J::String(c);
        }
        schemas.insert(ctx.schema_name(e.full_name()), s);
    }
    schemas.insert("Status".into(), status_schema());

    // One path item per template shape: `/v1/agents/{id}` and `/v1/agents/{agent.id}` are the same path to
    // OpenAPI, so later bindings reuse the first one's variable names.
    let mut keys: HashMap<String, (String, Vec<String>)> = HashMap::new();
    let mut paths: BTreeMap<String, Map<String, J>> = BTreeMap::new();
    for b in bindings {
        let shape = shape(b);
        let (key, names) = keys
            .entry(shape)
            .or_insert_with(|| {
                (
                    openapi_path(b),
                    b.path_fields().iter().map(|s| s.to_string()).collect(),
                )
            })
            .clone();
        let op = ctx.operation(b, &names)?;
        let item = paths.entry(key.clone()).or_default();
        let method = b.http_method.to_ascii_lowercase();
        if item.contains_key(&method) {
            return Err(format!("two routes for {} {key}", b.http_method));
        }
        item.insert(method, op);
    }
    let mut paths: Map<String, J> = paths.into_iter().map(|(k, v)| (k, J::Object(v))).collect();
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {
            "operationId": "OpenApi",
            "summary": "This document.",
            "tags": ["Meta"],
            "security": [],
            "responses": {"200": {"description": "The OpenAPI 3.1 document of this API.",
                "content": {"application/json": {"schema": {"type": "object"}}}}}
        }}),
    );
    paths.insert("/healthz".into(), json!({"get": {
        "operationId": "Healthz",
        "summary": "Liveness: \"ok\", or 503 \"draining\" during a graceful shutdown.",
        "tags": ["Meta"],
        "security": [],
        "responses": {
            "200": {"description": "Serving.", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "503": {"description": "Draining.", "content": {"text/plain": {"schema": {"type": "string"}}}}
        }
    }}));

    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Agentry REST/JSON API",
            "version": version,
            "description": "The REST/JSON face of Agentry's gRPC services, transcoded from their \
                google.api.http annotations (proto/agentry/v1). JSON uses the proto field names on output \
                and accepts snake_case or lowerCamelCase on input; 64-bit integers are strings, enums are \
                names, times are RFC 3339. Send an API key as `Authorization: Bearer <key>`, \
                `Authorization: Token <key>` or `X-API-Key: <key>`. Errors are `{code, message, details}` \
                with the gRPC code; server-streaming RPCs answer Server-Sent Events.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "tags": tags(bindings, &comments),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                    "description": "`Authorization: Bearer agk_...` (`Authorization: Token agk_...` works too)."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                    "description": "`X-API-Key: agk_...`"}
            }
        }
    }))
}

fn tags(bindings: &[Binding], comments: &Comments) -> J {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for b in bindings {
        let s = b.method.parent_service();
        if seen.contains(&s.name().to_owned()) {
            continue;
        }
        seen.push(s.name().to_owned());
        let mut t = json!({"name": s.name()});
        if let Some(c) = comments.get(s.parent_file(), s.path()) {
            t["description"] = J::String(c);
        }
        out.push(t);
    }
    out.push(json!({"name": "Meta", "description": "The document and liveness."}));
    J::Array(out)
}

/// The error body every non-2xx answer carries.
fn status_schema() -> J {
    json!({
        "type": "object",
        "description": "An error: the gRPC status code (3 INVALID_ARGUMENT, 5 NOT_FOUND...), a message naming \
            the field at fault where there is one, and google.rpc error details (e.g. BadRequest field \
            violations) as JSON objects with an `@type`.",
        "properties": {
            "code": {"type": "integer", "format": "int32"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {
                "type": "object",
                "properties": {"@type": {"type": "string"}},
                "additionalProperties": true
            }}
        },
        "required": ["code", "message", "details"],
        "additionalProperties": false
    })
}

/// The template with variables anonymised: two bindings of one shape are one OpenAPI path.
fn shape(b: &Binding) -> String {
    let mut s = String::new();
    for seg in &b.segments {
        s.push('/');
        match seg {
            Segment::Literal(l) => s.push_str(l),
            Segment::Var(_) => s.push_str("{}"),
            Segment::Rest(_) => s.push_str("{**}"),
        }
    }
    if !b.verb.is_empty() {
        s.push(':');
        s.push_str(&b.verb);
    }
    s
}

fn openapi_path(b: &Binding) -> String {
    let mut s = String::new();
    for seg in &b.segments {
        s.push('/');
        match seg {
            Segment::Literal(l) => s.push_str(l),
            Segment::Var(f) | Segment::Rest(f) => {
                s.push('{');
                s.push_str(f);
                s.push('}');
            }
        }
    }
    if !b.verb.is_empty() {
        s.push(':');
        s.push_str(&b.verb);
    }
    s
}

/// Leading comments of every element, by file and source path.
struct Comments {
    by_file: HashMap<String, HashMap<Vec<i32>, String>>,
}

impl Comments {
    fn new(pool: &DescriptorPool) -> Comments {
        let mut by_file = HashMap::new();
        for f in pool.files() {
            let mut map = HashMap::new();
            if let Some(info) = &f.file_descriptor_proto().source_code_info {
                for loc in &info.location {
                    if let Some(c) = &loc.leading_comments {
                        let text: Vec<&str> = c.lines().map(str::trim).collect();
                        let text = text.join("\n").trim().to_owned();
                        if !text.is_empty() {
                            map.insert(loc.path.clone(), text);
                        }
                    }
                }
            }
            by_file.insert(f.name().to_owned(), map);
        }
        Comments { by_file }
    }

    fn get(&self, file: FileDescriptor, path: &[i32]) -> Option<String> {
        self.by_file.get(file.name())?.get(path).cloned()
    }
}

struct Ctx<'a> {
    package: &'a str,
    comments: &'a Comments,
}

impl Ctx<'_> {
    /// `agentry.v1.Agent` → `Agent`; other packages keep their full name.
    fn schema_name(&self, full: &str) -> String {
        full.strip_prefix(self.package)
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or(full)
            .to_owned()
    }

    fn reference(&self, full: &str) -> J {
        json!({"$ref": format!("#/components/schemas/{}", self.schema_name(full))})
    }

    fn message_schema(&self, m: &MessageDescriptor) -> J {
        let mut props = Map::new();
        for f in m.fields() {
            props.insert(f.name().to_owned(), self.field_schema(&f));
        }
        let mut s = json!({"type": "object", "properties": props, "additionalProperties": false});
        let mut desc = self
            .comments
            .get(m.parent_file(), m.path())
            .unwrap_or_default();
        let oneofs: Vec<String> = m
            .oneofs()
            .filter(|o| !o.is_synthetic())
            .map(|o| {
                let names: Vec<String> = o.fields().map(|f| f.name().to_owned()).collect();
                format!("at most one of {}", names.join(", "))
            })
            .collect();
        if !oneofs.is_empty() {
            if !desc.is_empty() {
                desc.push_str("\n\n");
            }
            desc.push_str(&format!("Oneof: {}.", oneofs.join("; ")));
        }
        if !desc.is_empty() {
            s["description"] = J::String(desc);
        }
        s
    }

    fn field_schema(&self, f: &FieldDescriptor) -> J {
        let mut s = if f.is_map() {
            let Kind::Message(entry) = f.kind() else {
                unreachable!("a map field is a message")
            };
            json!({"type": "object", "additionalProperties": self.kind_schema(&entry.map_entry_value_field().kind())})
        } else if f.is_list() {
            json!({"type": "array", "items": self.kind_schema(&f.kind())})
        } else {
            self.kind_schema(&f.kind())
        };
        if let Some(c) = self.comments.get(f.parent_file(), f.path()) {
            if c.starts_with("Output only") {
                s["readOnly"] = J::Bool(true);
            }
            s["description"] = J::String(c);
        }
        s
    }

    fn kind_schema(&self, k: &Kind) -> J {
        match k {
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32",
                "minimum": i32::MIN, "maximum": i32::MAX})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64",
                "pattern": "^-?[0-9]{1,18}$"})
            }
            Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64",
                "pattern": "^[0-9]{1,19}$"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Enum(e) if e.package_name() == self.package => self.reference(e.full_name()),
            Kind::Enum(e) => {
                let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                json!({"type": "string", "enum": names})
            }
            Kind::Message(m) => match well_known(m.full_name()) {
                Some(s) => s,
                None if m.package_name() == self.package => self.reference(m.full_name()),
                None => json!({"type": "object"}),
            },
        }
    }

    fn operation(&self, b: &Binding, names: &[String]) -> Result<J, String> {
        let m = &b.method;
        let input = m.input();
        let mut params = Vec::new();
        for (name, field) in names.iter().zip(b.path_fields()) {
            let f = resolve(&input, field).ok_or_else(|| format!("no field {field}"))?;
            let mut schema = self.kind_schema(&f.kind());
            // A path segment is never empty.
            if schema.get("type") == Some(&J::String("string".into()))
                && schema.get("pattern").is_none()
            {
                schema["minLength"] = J::from(1);
            }
            let mut p = json!({"name": name, "in": "path", "required": true, "schema": schema});
            let mut desc = self
                .comments
                .get(f.parent_file(), f.path())
                .unwrap_or_default();
            if name != field {
                desc = format!("Sets `{field}`. {desc}").trim().to_owned();
            }
            if !desc.is_empty() {
                p["description"] = J::String(desc);
            }
            params.push(p);
        }
        let bound: Vec<&str> = b.path_fields();
        if b.body != "*" {
            for f in input.fields() {
                if f.name() == b.body {
                    continue;
                }
                self.query_params(&f, "", &bound, 0, &mut params);
            }
        }
        if m.is_server_streaming() && input.get_field_by_name("after_seq").is_some() {
            params.push(json!({"name": "Last-Event-ID", "in": "header", "required": false,
                "description": "Resume after this event (the `id:` of the last event seen); overrides after_seq.",
                "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}}));
        }
        let mut op = json!({
            "operationId": b.operation_id(),
            "tags": [m.parent_service().name()],
            "parameters": params,
        });
        if let Some(c) = self.comments.get(m.parent_file(), m.path()) {
            let summary = c
                .split(['\n'])
                .next()
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_owned();
            op["summary"] = J::String(summary);
            op["description"] = J::String(c);
        } else {
            op["summary"] = J::String(m.name().to_owned());
        }
        match b.body.as_str() {
            "" => {}
            "*" => {
                let mut s = self.message_schema(&input);
                if let Some(J::Object(props)) = s.get_mut("properties") {
                    for f in &bound {
                        if !f.contains('.') {
                            props.remove(*f);
                        }
                    }
                }
                op["requestBody"] =
                    json!({"required": false, "content": {"application/json": {"schema": s}}});
            }
            field => {
                let f = input.get_field_by_name(field).ok_or("no body field")?;
                op["requestBody"] = json!({"required": true, "content": {"application/json": {
                    "schema": self.kind_schema(&f.kind())}}});
            }
        }
        let output = self.reference(m.output().full_name());
        let ok = if m.is_server_streaming() {
            json!({"description": format!(
                "Server-Sent Events, one per {} message: `event:` the kind of event (the name of the oneof \
                 field set), `id:` its seq, `data:` the message as JSON. `: keepalive` comments every 15 s. \
                 An error after the stream started is an `event: error` whose data is a Status.",
                self.schema_name(m.output().full_name())),
                "content": {"text/event-stream": {"schema": self.event_schema(&m.output())}}})
        } else if input.get_field_by_name("stream").is_some() && b.method.name() == "Chat" {
            // Chat streams as its sibling ChatStream does.
            let events = m
                .parent_service()
                .methods()
                .find(|s| s.name() == "ChatStream")
                .map(|s| self.event_schema(&s.output()))
                .unwrap_or_else(|| json!({"type": "object"}));
            json!({"description": "The ChatResponse; with `stream` true (or unset on the seed path) Server-Sent \
                Events of RunEvent messages, as ChatStream.",
                "content": {"application/json": {"schema": output},
                            "text/event-stream": {"schema": events}}})
        } else {
            json!({"description": "OK", "content": {"application/json": {"schema": output}}})
        };
        op["responses"] = json!({
            "200": ok,
            "default": {"description": "An error (see Status).",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}}
        });
        Ok(op)
    }

    /// One Server-Sent Event carrying a message of type `m`.
    fn event_schema(&self, m: &MessageDescriptor) -> J {
        let mut kinds: Vec<String> = m
            .oneofs()
            .filter(|o| !o.is_synthetic())
            .flat_map(|o| o.fields().map(|f| f.name().to_owned()).collect::<Vec<_>>())
            .collect();
        if kinds.is_empty() {
            kinds.push("message".into());
        }
        kinds.push("error".into());
        json!({
            "type": "object",
            "properties": {
                "event": {"type": "string", "enum": kinds},
                "id": {"type": "string", "description": "The message's seq."},
                "data": {"type": "string", "contentMediaType": "application/json",
                    "contentSchema": self.reference(m.full_name()),
                    "description": format!("The {} as JSON; for `error`, a Status.",
                        self.schema_name(m.full_name()))},
                "retry": {"type": "integer"}
            },
            "required": ["event", "data"]
        })
    }

    /// Query parameters for `f` (prefixed), flattening singular nested messages.
    fn query_params(
        &self,
        f: &FieldDescriptor,
        prefix: &str,
        bound: &[&str],
        depth: usize,
        out: &mut Vec<J>,
    ) {
        let name = format!("{prefix}{}", f.name());
        if bound.contains(&name.as_str()) || f.is_map() {
            return;
        }
        let schema = match f.kind() {
            Kind::Message(m) if well_known(m.full_name()).is_none() => {
                if f.cardinality() != Cardinality::Repeated && depth + 1 < MAX_QUERY_DEPTH {
                    let nested = format!("{name}.");
                    for sub in m.fields() {
                        self.query_params(&sub, &nested, bound, depth + 1, out);
                    }
                }
                return;
            }
            Kind::Message(m) if !query_friendly(m.full_name()) => return,
            k => self.kind_schema(&k),
        };
        let schema = if f.is_list() {
            json!({"type": "array", "items": schema})
        } else {
            schema
        };
        let mut p = json!({"name": name, "in": "query", "required": false, "schema": schema});
        if let Some(c) = self.comments.get(f.parent_file(), f.path()) {
            p["description"] = J::String(c);
        }
        out.push(p);
    }
}

/// A field of `m` by dotted path.
fn resolve(m: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let mut msg = m.clone();
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        let f = msg.get_field_by_name(p)?;
        if parts.peek().is_none() {
            return Some(f);
        }
        match f.kind() {
            Kind::Message(sub) => msg = sub,
            _ => return None,
        }
    }
    None
}

/// Well-known types that have a string or scalar JSON form, usable as query parameters.
fn query_friendly(full: &str) -> bool {
    !matches!(
        full,
        "google.protobuf.Struct"
            | "google.protobuf.Value"
            | "google.protobuf.ListValue"
            | "google.protobuf.Any"
            | "google.protobuf.Empty"
    )
}

/// The proto3 JSON schema of a well-known type; `None` for other messages.
fn well_known(full: &str) -> Option<J> {
    Some(match full {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]{1,12}(\\.[0-9]{1,9})?s$"})
        }
        "google.protobuf.FieldMask" => json!({"type": "string",
            "description": "Comma-separated field paths, e.g. `description,config.max_steps`."}),
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.Empty" => json!({"type": "object", "additionalProperties": false}),
        "google.protobuf.Any" => {
            json!({"type": "object", "properties": {"@type": {"type": "string"}},
            "required": ["@type"]})
        }
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": "number"}),
        "google.protobuf.Int32Value" => json!({"type": "integer", "format": "int32"}),
        "google.protobuf.UInt32Value" => json!({"type": "integer", "minimum": 0}),
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "pattern": "^-?[0-9]{1,19}$"})
        }
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BytesValue" => json!({"type": "string", "contentEncoding": "base64"}),
        _ => return None,
    })
}
