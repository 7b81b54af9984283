//! JSON ⇄ protobuf, grpc-gateway style, through the descriptors of the crate's own protos (prost-reflect).
//!
//! A request message is built from, in order: the body (the whole request for `body: "*"`, or the named
//! field), the path variables, then the query parameters; a path or query value may not contradict the
//! body. JSON follows the proto3 mapping (proto or lowerCamelCase names, 64-bit integers as strings or
//! numbers, enums by name or number) and is strict: an unknown field, a wrong type or an unknown enum name
//! is INVALID_ARGUMENT naming the field (`agent.config.max_steps`). Strict, unlike grpc-gateway's default
//! of discarding unknown fields, because a silently dropped field (a typo, or seed 004's `llm_config`,
//! which lives under `metadata` here) is a silent data bug on a PATCH.
//!
//! A query parameter sets the field at its dotted path (`a.b=`), repeated keys append to a repeated
//! field, and values are parsed per field type. Seed tolerances: `offset=0` is ignored (seed 004 sends
//! it; other offsets are refused: lists page with `cursor`), and on a body-less route whose request has a
//! `google.protobuf.Struct arguments` field (seed 002's toolkit run), unknown parameters become string
//! arguments.
//!
//! Update masks: when the request has an `update_mask` and the query does not set it, it is inferred from
//! the body's keys: one path per key, except that a JSON object given for a message field (not a
//! well-known type) contributes one path per sub-key (`{"config": {"max_steps": 5}}` → `config.max_steps`).
//! Fields set by the path are left out. So a PATCH changes exactly the fields it sends.

use std::sync::LazyLock;

use base64::Engine as _;
use http::HeaderMap;
use prost_reflect::{
    Cardinality, DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind,
    MessageDescriptor, ReflectMessage as _, SerializeOptions, Value,
};
use serde_json::Value as J;

use super::{errors::RestError, routes::Route};

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(crate::pb::FILE_DESCRIPTOR_SET).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the embedded descriptor set does not decode");
        DescriptorPool::new()
    })
});

/// Every message of the crate's protos (and their imports).
pub(crate) fn pool() -> &'static DescriptorPool {
    &POOL
}

pub(crate) fn message(name: &str) -> Result<MessageDescriptor, String> {
    pool()
        .get_message_by_name(name)
        .ok_or_else(|| format!("message {name} is not in the descriptor set"))
}

/// Proto field names, and every field without presence (so `[]`, `""`, `0`, `false` are there to read).
pub(crate) fn serialize_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
}

/// The JSON of a protobuf-encoded message (see [`super::json_out`]).
pub(crate) fn to_json(desc: &MessageDescriptor, bytes: &[u8]) -> Result<Vec<u8>, RestError> {
    super::json_out::to_json(desc.full_name(), bytes).map_err(RestError::internal)
}

/// What a request needs besides its route.
pub(crate) struct Parts<'a> {
    /// (field path, raw percent-encoded segment) of each path variable.
    pub vars: &'a [(&'static str, &'a str)],
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Builds the request message of `route` from an HTTP request.
pub(crate) fn request(
    route: &Route,
    input: &MessageDescriptor,
    p: &Parts<'_>,
) -> Result<DynamicMessage, RestError> {
    let query: Vec<(String, String)> = p
        .query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let mask_field = input
        .get_field_by_name("update_mask")
        .filter(|f| is_message(f, "google.protobuf.FieldMask"));
    let mask_in_query = query
        .iter()
        .any(|(k, _)| k == "update_mask" || k == "updateMask" || k.starts_with("update_mask."));
    let body = p.body.trim_ascii();

    let mut msg = DynamicMessage::new(input.clone());
    let mut inferred = None;
    match route.body {
        "" => {
            if !(body.is_empty() || body == b"{}") {
                return Err(RestError::invalid(
                    "",
                    "this route takes no request body: send the request fields as query parameters",
                ));
            }
        }
        "*" => {
            if !body.is_empty() {
                msg = parse_json(input, body, "")?;
            }
        }
        field => {
            let f = input
                .get_field_by_name(field)
                .ok_or_else(|| RestError::internal(format!("no body field {field}")))?;
            let Kind::Message(sub) = f.kind() else {
                return Err(RestError::internal(format!(
                    "body field {field} is not a message"
                )));
            };
            let body = if body.is_empty() { b"{}" } else { body };
            let value = if mask_field.is_some() && !mask_in_query {
                let json: J = serde_json::from_slice(body)
                    .map_err(|e| RestError::invalid(field, format!("malformed JSON body: {e}")))?;
                let bound: Vec<&str> = p
                    .vars
                    .iter()
                    .filter_map(|(path, _)| path.strip_prefix(field)?.strip_prefix('.'))
                    .collect();
                inferred = Some(infer_mask(&sub, &json, &bound));
                from_json_value(&sub, json, field)?
            } else {
                parse_json(&sub, body, field)?
            };
            msg.set_field(&f, Value::Message(value));
        }
    }

    for (path, raw) in p.vars {
        let text = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| RestError::invalid(*path, "the path segment is not valid UTF-8"))?;
        set_path(&mut msg, path, &text, true)
            .map_err(|e| RestError::invalid(*path, format!("path segment {text:?}: {e}")))?;
    }

    let mut arguments = serde_json::Map::new();
    let free_arguments = route.body.is_empty()
        && input
            .get_field_by_name("arguments")
            .is_some_and(|f| is_message(&f, "google.protobuf.Struct"));
    let mut seen: Vec<&str> = Vec::new();
    for (k, v) in &query {
        if k == "offset" {
            if v.is_empty() || v == "0" {
                continue;
            }
            return Err(RestError::invalid(
                "offset",
                "offset pagination is not supported: pass the previous page's next_cursor as cursor",
            ));
        }
        if route.body == "*" {
            return Err(RestError::invalid(
                k.as_str(),
                "unknown query parameter: this route takes every field in the JSON body",
            ));
        }
        match resolve(input, k) {
            Some((proto_path, leaf)) => {
                let first = proto_path.split('.').next().unwrap_or_default();
                if first == route.body {
                    return Err(RestError::invalid(
                        k.as_str(),
                        format!("{first} is the request body: set it there"),
                    ));
                }
                if p.vars.iter().any(|(f, _)| *f == proto_path) {
                    return Err(RestError::invalid(k.as_str(), "is set by the path"));
                }
                if !leaf.is_list() && !is_message(&leaf, "google.protobuf.FieldMask") {
                    if seen.contains(&k.as_str()) {
                        return Err(RestError::invalid(k.as_str(), "is given more than once"));
                    }
                    seen.push(k);
                }
                set_path(&mut msg, &proto_path, v, false)
                    .map_err(|e| RestError::invalid(proto_path.as_str(), e))?;
            }
            None if free_arguments => match arguments.get_mut(k) {
                None => {
                    arguments.insert(k.clone(), J::String(v.clone()));
                }
                Some(J::Array(a)) => a.push(J::String(v.clone())),
                Some(prev) => *prev = J::Array(vec![prev.take(), J::String(v.clone())]),
            },
            None => {
                return Err(RestError::invalid(
                    k.as_str(),
                    "unknown query parameter (fields of the request are named as in the proto: snake_case or lowerCamelCase, nested with dots)",
                ));
            }
        }
    }
    if !arguments.is_empty()
        && let Some(f) = input.get_field_by_name("arguments")
        && let Kind::Message(d) = f.kind()
    {
        let s = from_json_value(&d, J::Object(arguments), "arguments")?;
        msg.set_field(&f, Value::Message(s));
    }

    if route.server_streaming
        && let Some(id) = p.headers.get("last-event-id")
        && let Some(f) = input.get_field_by_name("after_seq")
    {
        let id = id.to_str().unwrap_or_default().trim();
        let v = parse_scalar(&f, id).map_err(|e| RestError::invalid("Last-Event-ID", e))?;
        msg.set_field(&f, v);
    }

    if let (Some(f), Some(paths)) = (mask_field, inferred)
        && !msg.has_field(&f)
    {
        msg.set_field(
            &f,
            Value::Message(field_mask(paths).map_err(RestError::internal)?),
        );
    }
    Ok(msg)
}

/// `stream` of a request whose RPC has a streaming sibling: whether to stream.
pub(crate) fn wants_stream(route: &Route, msg: &DynamicMessage) -> bool {
    match msg.descriptor().get_field_by_name("stream") {
        Some(f) if msg.has_field(&f) => matches!(msg.get_field(&f).as_ref(), Value::Bool(true)),
        // Seed 002's default is true, on its own path; our main path defaults to a JSON answer.
        Some(_) => route.binding > 0,
        None => false,
    }
}

fn is_message(f: &FieldDescriptor, full_name: &str) -> bool {
    matches!(f.kind(), Kind::Message(m) if m.full_name() == full_name)
}

fn is_well_known(m: &MessageDescriptor) -> bool {
    m.package_name() == "google.protobuf"
}

fn field_mask(paths: Vec<String>) -> Result<DynamicMessage, String> {
    let mut m = DynamicMessage::new(message("google.protobuf.FieldMask")?);
    m.try_set_field_by_name(
        "paths",
        Value::List(paths.into_iter().map(Value::String).collect()),
    )
    .map_err(|e| e.to_string())?;
    Ok(m)
}

fn json_options() -> DeserializeOptions {
    DeserializeOptions::new().deny_unknown_fields(true)
}

/// A field path for errors: `prefix.path`, either part possibly empty.
fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty() || path == ".") {
        (_, true) => prefix.to_owned(),
        (true, false) => path.to_owned(),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// Parses JSON text into a message, naming the failing field on error.
fn parse_json(
    desc: &MessageDescriptor,
    body: &[u8],
    prefix: &str,
) -> Result<DynamicMessage, RestError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let res = DynamicMessage::deserialize_with_options(
        desc.clone(),
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
        &json_options(),
    );
    match res {
        Ok(m) => {
            de.end()
                .map_err(|e| RestError::invalid(prefix, format!("malformed JSON body: {e}")))?;
            Ok(m)
        }
        Err(e) => Err(json_error(
            prefix,
            &track.path().to_string(),
            &e.to_string(),
            e.is_syntax() || e.is_eof(),
        )),
    }
}

/// Like [`parse_json`], from an already parsed JSON value.
fn from_json_value(
    desc: &MessageDescriptor,
    json: J,
    prefix: &str,
) -> Result<DynamicMessage, RestError> {
    let mut track = serde_path_to_error::Track::new();
    DynamicMessage::deserialize_with_options(
        desc.clone(),
        serde_path_to_error::Deserializer::new(json, &mut track),
        &json_options(),
    )
    .map_err(|e| json_error(prefix, &track.path().to_string(), &e.to_string(), false))
}

fn json_error(prefix: &str, path: &str, message: &str, syntax: bool) -> RestError {
    let path = if path == "." { "" } else { path };
    if syntax {
        return RestError::invalid(prefix, format!("malformed JSON body: {message}"));
    }
    let field = join(prefix, path);
    let message = match message.strip_prefix("unrecognized field name '") {
        Some(rest) => {
            let name = rest.split('\'').next().unwrap_or(rest);
            let mut m = format!("unknown field {name:?}");
            if prefix == "agent"
                && path.is_empty()
                && [
                    "playbook",
                    "playbook_template",
                    "monitoring",
                    "identity_id",
                    "llm_config",
                ]
                .contains(&name)
            {
                m.push_str(" (seed 004's playbook, playbook_template, monitoring, identity_id and llm_config live in metadata)");
            }
            return RestError::invalid(join(&field, name), m);
        }
        None => message.to_owned(),
    };
    RestError::invalid(field, message)
}

/// The update mask paths a JSON body implies (see the module doc).
fn infer_mask(desc: &MessageDescriptor, body: &J, bound: &[&str]) -> Vec<String> {
    let J::Object(map) = body else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    for (k, v) in map {
        let Some(f) = by_any_name(desc, k) else {
            continue; // Deserialization rejects it, naming it.
        };
        if bound.contains(&f.name()) {
            continue;
        }
        match (f.kind(), v) {
            (Kind::Message(m), J::Object(sub))
                if !f.is_list() && !f.is_map() && !is_well_known(&m) && !sub.is_empty() =>
            {
                for k2 in sub.keys() {
                    let name =
                        by_any_name(&m, k2).map_or_else(|| k2.clone(), |f2| f2.name().to_owned());
                    paths.push(format!("{}.{name}", f.name()));
                }
            }
            _ => paths.push(f.name().to_owned()),
        }
    }
    paths
}

fn by_any_name(desc: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    desc.get_field_by_name(name)
        .or_else(|| desc.get_field_by_json_name(name))
}

/// The proto path and leaf field of a dotted query key (proto or JSON names), if it names a settable
/// field: singular non-well-known messages on the way, a scalar, enum, repeated scalar or string-form
/// well-known type at the end.
fn resolve(desc: &MessageDescriptor, key: &str) -> Option<(String, FieldDescriptor)> {
    let mut msg = desc.clone();
    let mut path = String::new();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let f = by_any_name(&msg, part)?;
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(f.name());
        if parts.peek().is_none() {
            let ok = match f.kind() {
                Kind::Message(m) => !f.is_map() && is_well_known(&m) && string_form(&m),
                _ => !f.is_map(),
            };
            return ok.then_some((path, f));
        }
        match f.kind() {
            Kind::Message(m) if f.cardinality() != Cardinality::Repeated && !is_well_known(&m) => {
                msg = m
            }
            _ => return None,
        }
    }
    None
}

/// Well-known types with a string or scalar JSON form.
fn string_form(m: &MessageDescriptor) -> bool {
    !matches!(m.name(), "Struct" | "Value" | "ListValue" | "Any" | "Empty")
}

/// Sets (or appends to) the field at `path` from its text form. With `exclusive`, a value already set
/// (by the body) must be the same.
fn set_path(
    msg: &mut DynamicMessage,
    path: &str,
    text: &str,
    exclusive: bool,
) -> Result<(), String> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let f = msg
        .descriptor()
        .get_field_by_name(head)
        .ok_or_else(|| format!("no field {head}"))?;
    if let Some(rest) = rest {
        return match msg.get_field_mut(&f) {
            Value::Message(sub) => set_path(sub, rest, text, exclusive),
            _ => Err(format!("{head} is not a message")),
        };
    }
    let value = parse_scalar(&f, text)?;
    if f.is_list() {
        if let Value::List(items) = msg.get_field_mut(&f) {
            match value {
                Value::List(more) => items.extend(more),
                v => items.push(v),
            }
        }
        return Ok(());
    }
    if exclusive && msg.has_field(&f) && *msg.get_field(&f) != value {
        return Err(format!(
            "contradicts the body's {head} ({})",
            describe(&msg.get_field(&f))
        ));
    }
    msg.set_field(&f, value);
    Ok(())
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

/// A field's value (one item, for a repeated field) from its text form in a path or query.
fn parse_scalar(f: &FieldDescriptor, s: &str) -> Result<Value, String> {
    parse_kind(&f.kind(), s)
}

fn parse_kind(kind: &Kind, s: &str) -> Result<Value, String> {
    let int = |what: &str| format!("{s:?} is not a valid {what}");
    Ok(match kind {
        Kind::String => Value::String(s.to_owned()),
        Kind::Bool => match s {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(format!("{s:?} is not a boolean (true or false)")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(s.parse().map_err(|_| int("32-bit integer"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(s.parse().map_err(|_| int("64-bit integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => {
            Value::U32(s.parse().map_err(|_| int("unsigned 32-bit integer"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::U64(s.parse().map_err(|_| int("unsigned 64-bit integer"))?)
        }
        Kind::Double => Value::F64(parse_float(s)?),
        Kind::Float => Value::F32(parse_float(s)? as f32),
        Kind::Bytes => {
            let engines = [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::URL_SAFE,
            ];
            let bytes = engines
                .iter()
                .find_map(|e| e.decode(s).ok())
                .ok_or_else(|| format!("{s:?} is not base64"))?;
            Value::Bytes(bytes.into())
        }
        Kind::Enum(e) => match e.get_value_by_name(s) {
            Some(v) => Value::EnumNumber(v.number()),
            None => match s.parse::<i32>() {
                Ok(n) => Value::EnumNumber(n),
                Err(_) => {
                    let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                    let names = names.join(", ");
                    return Err(format!("unknown enum value {s:?}; one of: {names}"));
                }
            },
        },
        Kind::Message(m) => Value::Message(parse_well_known(m, s)?),
    })
}

fn parse_float(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("{s:?} is not a number")),
    }
}

/// A well-known type from its text form: a FieldMask from comma-separated paths (snake_case or
/// lowerCamelCase), a wrapper from its scalar, others (Timestamp, Duration) from their JSON string.
fn parse_well_known(m: &MessageDescriptor, s: &str) -> Result<DynamicMessage, String> {
    if !is_well_known(m) || !string_form(m) {
        return Err(format!("a {} cannot be given as text", m.name()));
    }
    if m.name() == "FieldMask" {
        let paths = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.split('.').map(snake_case).collect::<Vec<_>>().join("."))
            .collect();
        return field_mask(paths);
    }
    if let Some(inner) = m.get_field_by_name("value")
        && m.fields().len() == 1
    {
        let mut w = DynamicMessage::new(m.clone());
        w.set_field(&inner, parse_scalar(&inner, s)?);
        return Ok(w);
    }
    DynamicMessage::deserialize_with_options(m.clone(), J::String(s.to_owned()), &json_options())
        .map_err(|e| format!("{s:?} is not a valid {}: {e}", m.name()))
}

/// `maxSteps` → `max_steps`; snake_case passes unchanged.
fn snake_case(part: &str) -> String {
    let mut out = String::with_capacity(part.len() + 4);
    for c in part.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[path = "transcode_tests.rs"]
mod tests;
