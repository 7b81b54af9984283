//! The REST route table, read from the `google.api.http` rule (and its `additional_bindings`) of every RPC
//! in the descriptor set, and written to `OUT_DIR/rest_routes.rs` as a static array that the shim in
//! `src/rest/` matches requests against. No REST route is written by hand: a rule that names a field the
//! request message lacks, or uses a template feature the shim does not support, fails the build here.
//!
//! Supported templates (google/api/http.proto grammar): literal segments, `{field.path}` and
//! `{field.path=*}` (one segment), `{field.path=**}` (the rest of the path, last only), and a `:verb` suffix.

use std::fmt::Write as _;

use prost_reflect::{Cardinality, DescriptorPool, DynamicMessage, Kind, MethodDescriptor, Value};

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// A variable bound to one segment: the field path it sets.
    Var(String),
    /// A variable bound to the rest of the path (`{field=**}`).
    Rest(String),
}

/// One HTTP binding of an RPC.
#[derive(Debug, Clone)]
pub struct Binding {
    pub method: MethodDescriptor,
    /// "GET", "POST", "PUT", "PATCH" or "DELETE".
    pub http_method: &'static str,
    /// The template as written in the proto.
    pub template: String,
    pub segments: Vec<Segment>,
    /// The `:verb` suffix without the colon; empty when none.
    pub verb: String,
    /// "" (no body), "*" (the whole request) or the name of a top-level request field.
    pub body: String,
    /// 0 for the main rule, 1.. for its additional_bindings in order.
    pub index: usize,
}

impl Binding {
    /// `<Service>_<Method>`, with `_<index>` for additional bindings.
    pub fn operation_id(&self) -> String {
        let base = format!(
            "{}_{}",
            self.method.parent_service().name(),
            self.method.name()
        );
        if self.index == 0 {
            base
        } else {
            format!("{base}_{}", self.index)
        }
    }

    /// `/agentry.v1.AgentService/GetAgent`.
    pub fn grpc_path(&self) -> String {
        format!(
            "/{}/{}",
            self.method.parent_service().full_name(),
            self.method.name()
        )
    }

    /// The field paths bound by the template's variables.
    pub fn path_fields(&self) -> Vec<&str> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Var(f) | Segment::Rest(f) => Some(f.as_str()),
                Segment::Literal(_) => None,
            })
            .collect()
    }
}

/// Every binding of every RPC of the services in `package`, in proto order.
pub fn bindings(pool: &DescriptorPool, package: &str) -> Result<Vec<Binding>, String> {
    let http = pool.get_extension_by_name("google.api.http").ok_or(
        "google.api.http is not in the descriptor set: import google/api/annotations.proto",
    )?;
    let mut out = Vec::new();
    for service in pool.services().filter(|s| s.package_name() == package) {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&http) {
                return Err(format!(
                    "{} has no google.api.http annotation",
                    method.full_name()
                ));
            }
            let rule = match options.get_extension(&http).as_ref() {
                Value::Message(m) => m.clone(),
                other => {
                    return Err(format!(
                        "{}: unexpected http rule {other:?}",
                        method.full_name()
                    ));
                }
            };
            out.push(binding(&method, &rule, 0)?);
            if let Some(Value::List(extra)) =
                rule.get_field_by_name("additional_bindings").as_deref()
            {
                for (i, b) in extra.iter().enumerate() {
                    let Value::Message(b) = b else {
                        return Err(format!("{}: bad additional binding", method.full_name()));
                    };
                    out.push(binding(&method, b, i + 1)?);
                }
            }
        }
    }
    Ok(out)
}

fn string_field(m: &DynamicMessage, name: &str) -> String {
    match m.get_field_by_name(name).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn binding(
    method: &MethodDescriptor,
    rule: &DynamicMessage,
    index: usize,
) -> Result<Binding, String> {
    let rpc = method.full_name();
    let mut found = None;
    for (field, verb) in [
        ("get", "GET"),
        ("post", "POST"),
        ("put", "PUT"),
        ("patch", "PATCH"),
        ("delete", "DELETE"),
    ] {
        let t = string_field(rule, field);
        if !t.is_empty() {
            if found.is_some() {
                return Err(format!("{rpc}: an http rule with two methods"));
            }
            found = Some((verb, t));
        }
    }
    let (http_method, template) = found.ok_or_else(|| {
        format!(
            "{rpc}: http rule #{index} has no get/post/put/patch/delete (custom is not supported)"
        )
    })?;
    if !string_field(rule, "response_body").is_empty() {
        return Err(format!("{rpc}: response_body is not supported"));
    }
    let body = string_field(rule, "body");
    let (segments, verb) =
        parse_template(&template).map_err(|e| format!("{rpc}: {template}: {e}"))?;
    let b = Binding {
        method: method.clone(),
        http_method,
        template,
        segments,
        verb,
        body,
        index,
    };
    check_fields(&b).map_err(|e| format!("{rpc}: {}: {e}", b.template))?;
    Ok(b)
}

/// Splits a template into segments and verb.
pub fn parse_template(t: &str) -> Result<(Vec<Segment>, String), String> {
    let rest = t.strip_prefix('/').ok_or("a template starts with '/'")?;
    // The verb is a ':' after the last '/' and outside any variable.
    let last = rest.rfind('/').map_or(0, |i| i + 1);
    let (path, verb) = match rest[last..].rfind(':') {
        Some(i) if !rest[last + i..].contains('}') => {
            (&rest[..last + i], rest[last + i + 1..].to_owned())
        }
        _ => (rest, String::new()),
    };
    let mut segments = Vec::new();
    let mut chars = path;
    while !chars.is_empty() {
        if let Some(inner) = chars.strip_prefix('{') {
            let end = inner.find('}').ok_or("unclosed '{'")?;
            let (var, pattern) = match inner[..end].split_once('=') {
                Some((v, p)) => (v, p),
                None => (&inner[..end], "*"),
            };
            if var.is_empty()
                || !var.split('.').all(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
            {
                return Err(format!("bad variable {var:?}"));
            }
            segments.push(match pattern {
                "*" => Segment::Var(var.to_owned()),
                "**" => Segment::Rest(var.to_owned()),
                p => {
                    return Err(format!(
                        "variable pattern {p:?} is not supported (only * and **)"
                    ));
                }
            });
            chars = &inner[end + 1..];
            match chars.strip_prefix('/') {
                Some(r) => chars = r,
                None if chars.is_empty() => {}
                None => return Err("a variable must fill a whole segment".into()),
            }
        } else {
            let end = chars.find('/').unwrap_or(chars.len());
            let lit = &chars[..end];
            if lit.is_empty() || lit.contains(['{', '}', ':', '*']) {
                return Err(format!("bad literal segment {lit:?}"));
            }
            segments.push(Segment::Literal(lit.to_owned()));
            chars = chars[end..].strip_prefix('/').unwrap_or("");
        }
    }
    if let Some(pos) = segments.iter().position(|s| matches!(s, Segment::Rest(_)))
        && pos + 1 != segments.len()
    {
        return Err("a ** variable must be the last segment".into());
    }
    if !verb.is_empty()
        && !verb
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!("bad verb {verb:?}"));
    }
    Ok((segments, verb))
}

/// Path variables name singular scalar fields (through singular message fields); the body is "", "*" or
/// a top-level message field.
fn check_fields(b: &Binding) -> Result<(), String> {
    let input = b.method.input();
    for path in b.path_fields() {
        let mut msg = input.clone();
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let f = msg.get_field_by_name(part).ok_or_else(|| {
                format!(
                    "path variable {path}: {} has no field {part}",
                    msg.full_name()
                )
            })?;
            if f.cardinality() == Cardinality::Repeated {
                return Err(format!("path variable {path}: {part} is repeated"));
            }
            match (f.kind(), i + 1 == parts.len()) {
                (Kind::Message(m), false) => msg = m,
                (Kind::Message(_), true) => {
                    return Err(format!("path variable {path} is a message"));
                }
                (_, false) => return Err(format!("path variable {path}: {part} is not a message")),
                (_, true) => {}
            }
        }
    }
    match b.body.as_str() {
        "" | "*" => {}
        field => {
            let f = input
                .get_field_by_name(field)
                .ok_or_else(|| format!("body {field}: no such field"))?;
            if !matches!(f.kind(), Kind::Message(_)) || f.cardinality() == Cardinality::Repeated {
                return Err(format!(
                    "body {field}: only a singular message field is supported"
                ));
            }
        }
    }
    if b.method.is_client_streaming() {
        return Err("client streaming has no REST mapping".into());
    }
    Ok(())
}

/// `OUT_DIR/rest_routes.rs`: `pub(crate) static ROUTES: &[Route]` for `src/rest/routes.rs`.
pub fn rust_table(bindings: &[Binding]) -> String {
    let mut s = String::from(
        "// Generated by build.rs from the google.api.http rules of proto/agentry/v1. Do not edit.\n\
         pub(crate) static ROUTES: &[Route] = &[\n",
    );
    for b in bindings {
        let segs: Vec<String> = b
            .segments
            .iter()
            .map(|seg| match seg {
                Segment::Literal(l) => format!("Seg::Lit({l:?})"),
                Segment::Var(f) => format!("Seg::Var({f:?})"),
                Segment::Rest(f) => format!("Seg::Rest({f:?})"),
            })
            .collect();
        let _ = writeln!(
            s,
            "    Route {{ method: http::Method::{}, template: {:?}, segments: &[{}], verb: {:?}, \
             grpc_path: {:?}, input: {:?}, output: {:?}, body: {:?}, server_streaming: {}, \
             operation_id: {:?}, binding: {} }},",
            b.http_method,
            b.template,
            segs.join(", "),
            b.verb,
            b.grpc_path(),
            b.method.input().full_name(),
            b.method.output().full_name(),
            b.body,
            b.method.is_server_streaming(),
            b.operation_id(),
            b.index,
        );
    }
    s.push_str("];\n");
    s
}
