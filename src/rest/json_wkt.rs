//! JSON writers of `json_out.rs` for floats and the well-known types with a JSON form of their own
//! (`Struct`, `Value`, `ListValue`; `FieldMask` paths in lowerCamelCase).

pub(super) fn float(out: &mut Vec<u8>, v: f64, single: bool) -> Result<(), String> {
    if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if v == f64::INFINITY {
        out.extend_from_slice(b"\"Infinity\"");
    } else if v == f64::NEG_INFINITY {
        out.extend_from_slice(b"\"-Infinity\"");
    } else if single {
        serde_json::to_writer(&mut *out, &(v as f32)).map_err(|e| e.to_string())?;
    } else {
        serde_json::to_writer(&mut *out, &v).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `config.max_steps` → `config.maxSteps`.
pub(super) fn camel(path: &str) -> String {
    let mut s = String::with_capacity(path.len());
    let mut up = false;
    for c in path.chars() {
        if c == '_' {
            up = true;
        } else if up {
            s.push(c.to_ascii_uppercase());
            up = false;
        } else {
            s.push(c);
        }
    }
    s
}

pub(super) fn write_struct(s: &prost_types::Struct, out: &mut Vec<u8>) -> Result<(), String> {
    out.push(b'{');
    for (i, (k, v)) in s.fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, k).map_err(|e| e.to_string())?;
        out.push(b':');
        write_json_value(v, out)?;
    }
    out.push(b'}');
    Ok(())
}

pub(super) fn write_list(l: &prost_types::ListValue, out: &mut Vec<u8>) -> Result<(), String> {
    out.push(b'[');
    for (i, v) in l.values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_value(v, out)?;
    }
    out.push(b']');
    Ok(())
}

pub(super) fn write_json_value(v: &prost_types::Value, out: &mut Vec<u8>) -> Result<(), String> {
    use prost_types::value::Kind as V;
    match &v.kind {
        None | Some(V::NullValue(_)) => out.extend_from_slice(b"null"),
        Some(V::BoolValue(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Some(V::NumberValue(n)) if n.is_finite() => {
            serde_json::to_writer(&mut *out, n).map_err(|e| e.to_string())?
        }
        Some(V::NumberValue(_)) => {
            return Err("a non-finite number in a google.protobuf.Value".into());
        }
        Some(V::StringValue(s)) => {
            serde_json::to_writer(&mut *out, s).map_err(|e| e.to_string())?
        }
        Some(V::StructValue(s)) => write_struct(s, out)?,
        Some(V::ListValue(l)) => write_list(l, out)?,
    }
    Ok(())
}
