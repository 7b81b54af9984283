//! Protobuf bytes → proto3 JSON, straight from the wire format, driven by a plan precomputed from the
//! descriptors: no `DynamicMessage` is built. The answer of every REST call goes through here, so it is
//! the hot path of the shim (decoding into a `DynamicMessage` and serializing that cost a quarter of the
//! server's CPU on GetAgent).
//!
//! The output is what prost-reflect's serializer gives with proto field names and defaults included
//! (a unit test checks both agree): fields in field-number order, fields without presence always
//! written (`""`, `0`, `false`, `[]`, `{}`, the enum's zero name), fields with presence (messages,
//! `optional`, oneof members) only when set; 64-bit integers as strings, enums by name, bytes in base64,
//! non-finite floats as "NaN"/"Infinity"/"-Infinity", and the well-known types in their JSON forms.

use std::{collections::HashMap, sync::LazyLock};

use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{Kind, MessageDescriptor};

use super::{
    json_wkt::{camel, float, write_json_value, write_list, write_struct},
    transcode,
};

/// How to write a value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum K {
    Double,
    Float,
    Int32,
    Sint32,
    Sfixed32,
    Int64,
    Sint64,
    Sfixed64,
    Uint32,
    Fixed32,
    Uint64,
    Fixed64,
    Bool,
    String,
    Bytes,
    /// Index into [`Plans::enums`].
    Enum(usize),
    /// Index into [`Plans::messages`].
    Message(usize),
    Timestamp,
    Duration,
    FieldMask,
    Struct,
    Value,
    ListValue,
    Empty,
    /// Anything else well-known (wrappers, Any): through prost-reflect.
    Reflect(usize),
}

#[derive(Debug)]
struct Field {
    number: u32,
    /// `"name":`
    key: Vec<u8>,
    kind: K,
    list: bool,
    /// Key and value kinds of a map field.
    map: Option<(K, K)>,
    presence: bool,
}

#[derive(Debug)]
struct Message {
    /// In field-number order.
    fields: Vec<Field>,
    /// Field number → index into `fields`, for small numbers.
    index: Vec<Option<u16>>,
}

#[derive(Debug)]
struct Enum {
    names: HashMap<i32, String>,
    zero: String,
}

struct Plans {
    messages: Vec<Message>,
    enums: Vec<Enum>,
    by_name: HashMap<String, usize>,
    /// Descriptors of the `Reflect` kinds.
    reflect: Vec<MessageDescriptor>,
}

static PLANS: LazyLock<Plans> = LazyLock::new(build);

fn build() -> Plans {
    let pool = transcode::pool();
    let mut p = Plans {
        messages: Vec::new(),
        enums: Vec::new(),
        by_name: HashMap::new(),
        reflect: Vec::new(),
    };
    let all: Vec<MessageDescriptor> = pool.all_messages().collect();
    for (i, m) in all.iter().enumerate() {
        p.by_name.insert(m.full_name().to_owned(), i);
    }
    let mut enum_index: HashMap<String, usize> = HashMap::new();
    let mut messages = Vec::with_capacity(all.len());
    for m in &all {
        let mut fields: Vec<Field> = m
            .fields()
            .map(|f| {
                let map = if f.is_map() {
                    match f.kind() {
                        Kind::Message(entry) => Some((
                            kind(&mut p, &mut enum_index, &entry.map_entry_key_field().kind()),
                            kind(
                                &mut p,
                                &mut enum_index,
                                &entry.map_entry_value_field().kind(),
                            ),
                        )),
                        _ => None,
                    }
                } else {
                    None
                };
                Field {
                    number: f.number(),
                    key: format!("\"{}\":", f.name()).into_bytes(),
                    kind: kind(&mut p, &mut enum_index, &f.kind()),
                    list: f.is_list(),
                    map,
                    presence: f.supports_presence(),
                }
            })
            .collect();
        fields.sort_by_key(|f| f.number);
        let max = fields.iter().map(|f| f.number).max().unwrap_or(0).min(1024) as usize;
        let mut index = vec![None; max + 1];
        for (i, f) in fields.iter().enumerate() {
            if let Some(slot) = index.get_mut(f.number as usize) {
                *slot = Some(i as u16);
            }
        }
        messages.push(Message { fields, index });
    }
    p.messages = messages;
    p
}

fn kind(p: &mut Plans, enums: &mut HashMap<String, usize>, k: &Kind) -> K {
    match k {
        Kind::Double => K::Double,
        Kind::Float => K::Float,
        Kind::Int32 => K::Int32,
        Kind::Sint32 => K::Sint32,
        Kind::Sfixed32 => K::Sfixed32,
        Kind::Int64 => K::Int64,
        Kind::Sint64 => K::Sint64,
        Kind::Sfixed64 => K::Sfixed64,
        Kind::Uint32 => K::Uint32,
        Kind::Fixed32 => K::Fixed32,
        Kind::Uint64 => K::Uint64,
        Kind::Fixed64 => K::Fixed64,
        Kind::Bool => K::Bool,
        Kind::String => K::String,
        Kind::Bytes => K::Bytes,
        Kind::Enum(e) => {
            let i = *enums.entry(e.full_name().to_owned()).or_insert_with(|| {
                p.enums.push(Enum {
                    names: e
                        .values()
                        .map(|v| (v.number(), v.name().to_owned()))
                        .collect(),
                    zero: e
                        .get_value(0)
                        .map_or_else(|| "0".to_owned(), |v| v.name().to_owned()),
                });
                p.enums.len() - 1
            });
            K::Enum(i)
        }
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" => K::Timestamp,
            "google.protobuf.Duration" => K::Duration,
            "google.protobuf.FieldMask" => K::FieldMask,
            "google.protobuf.Struct" => K::Struct,
            "google.protobuf.Value" => K::Value,
            "google.protobuf.ListValue" => K::ListValue,
            "google.protobuf.Empty" => K::Empty,
            n if n.starts_with("google.protobuf.") => {
                p.reflect.push(m.clone());
                K::Reflect(p.reflect.len() - 1)
            }
            n => K::Message(p.by_name.get(n).copied().unwrap_or(usize::MAX)),
        },
    }
}

/// The JSON of `bytes`, an encoded `full_name` message.
pub(crate) fn to_json(full_name: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let plans = &*PLANS;
    let i = *plans
        .by_name
        .get(full_name)
        .ok_or_else(|| format!("no message {full_name}"))?;
    let mut out = Vec::with_capacity(bytes.len() * 2 + 64);
    write_message(plans, i, &[bytes], &mut out)?;
    Ok(out)
}

/// One field occurrence on the wire.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    I64(u64),
    I32(u32),
    Len(&'a [u8]),
}

fn varint(b: &mut &[u8]) -> Result<u64, String> {
    prost::encoding::decode_varint(b).map_err(|e| e.to_string())
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if b.len() < n {
        return Err("truncated message".into());
    }
    let (head, tail) = b.split_at(n);
    *b = tail;
    Ok(head)
}

/// Splits encoded messages (several encodings of one message merge) into occurrences per field.
fn occurrences<'a>(m: &Message, parts: &[&'a [u8]]) -> Result<Vec<Vec<Raw<'a>>>, String> {
    let mut slots: Vec<Vec<Raw<'a>>> = vec![Vec::new(); m.fields.len()];
    for part in parts {
        let mut b = *part;
        while !b.is_empty() {
            let key = varint(&mut b)?;
            let (number, wire) = ((key >> 3) as u32, key & 7);
            let raw = match wire {
                0 => Raw::Varint(varint(&mut b)?),
                1 => Raw::I64(u64::from_le_bytes(
                    take(&mut b, 8)?.try_into().map_err(|_| "bad fixed64")?,
                )),
                5 => Raw::I32(u32::from_le_bytes(
                    take(&mut b, 4)?.try_into().map_err(|_| "bad fixed32")?,
                )),
                2 => {
                    let n = usize::try_from(varint(&mut b)?).map_err(|_| "bad length")?;
                    Raw::Len(take(&mut b, n)?)
                }
                w => return Err(format!("unsupported wire type {w}")),
            };
            let slot = m
                .index
                .get(number as usize)
                .copied()
                .flatten()
                .map(usize::from)
                .or_else(|| m.fields.iter().position(|f| f.number == number));
            if let Some(s) = slot {
                slots[s].push(raw);
            }
        }
    }
    Ok(slots)
}

fn write_message(p: &Plans, i: usize, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), String> {
    let m = p.messages.get(i).ok_or("unknown message type")?;
    let slots = occurrences(m, parts)?;
    out.push(b'{');
    let mut first = true;
    for (f, occ) in m.fields.iter().zip(&slots) {
        if occ.is_empty() && f.presence {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(&f.key);
        if let Some((kk, vk)) = f.map {
            write_map(p, kk, vk, occ, out)?;
        } else if f.list {
            out.push(b'[');
            let mut first = true;
            for raw in occ {
                match (raw, packable(f.kind)) {
                    (Raw::Len(b), true) => {
                        let mut b = *b;
                        while !b.is_empty() {
                            let item = match f.kind {
                                K::Double | K::Fixed64 | K::Sfixed64 => {
                                    Raw::I64(u64::from_le_bytes(
                                        take(&mut b, 8)?.try_into().map_err(|_| "bad fixed64")?,
                                    ))
                                }
                                K::Float | K::Fixed32 | K::Sfixed32 => {
                                    Raw::I32(u32::from_le_bytes(
                                        take(&mut b, 4)?.try_into().map_err(|_| "bad fixed32")?,
                                    ))
                                }
                                _ => Raw::Varint(varint(&mut b)?),
                            };
                            if !first {
                                out.push(b',');
                            }
                            first = false;
                            write_value(p, f.kind, &[item], out)?;
                        }
                    }
                    _ => {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        write_value(p, f.kind, std::slice::from_ref(raw), out)?;
                    }
                }
            }
            out.push(b']');
        } else if occ.is_empty() {
            write_default(p, f.kind, out);
        } else {
            write_value(p, f.kind, occ, out)?;
        }
    }
    out.push(b'}');
    Ok(())
}

fn packable(k: K) -> bool {
    !matches!(
        k,
        K::String
            | K::Bytes
            | K::Message(_)
            | K::Timestamp
            | K::Duration
            | K::FieldMask
            | K::Struct
            | K::Value
            | K::ListValue
            | K::Empty
            | K::Reflect(_)
    )
}

fn write_map(p: &Plans, kk: K, vk: K, occ: &[Raw<'_>], out: &mut Vec<u8>) -> Result<(), String> {
    out.push(b'{');
    let mut first = true;
    for raw in occ {
        let Raw::Len(entry) = raw else {
            return Err("bad map entry".into());
        };
        let (mut key, mut value) = (None, Vec::new());
        let mut b = *entry;
        while !b.is_empty() {
            let tag = varint(&mut b)?;
            let raw = match tag & 7 {
                0 => Raw::Varint(varint(&mut b)?),
                1 => Raw::I64(u64::from_le_bytes(
                    take(&mut b, 8)?.try_into().map_err(|_| "bad fixed64")?,
                )),
                5 => Raw::I32(u32::from_le_bytes(
                    take(&mut b, 4)?.try_into().map_err(|_| "bad fixed32")?,
                )),
                2 => {
                    let n = usize::try_from(varint(&mut b)?).map_err(|_| "bad length")?;
                    Raw::Len(take(&mut b, n)?)
                }
                w => return Err(format!("unsupported wire type {w}")),
            };
            match tag >> 3 {
                1 => key = Some(raw),
                2 => value.push(raw),
                _ => {}
            }
        }
        if !first {
            out.push(b',');
        }
        first = false;
        // Keys are strings in JSON: a string key as itself, others as their JSON text in quotes.
        let mut k = Vec::new();
        match key {
            Some(r) => write_value(p, kk, &[r], &mut k)?,
            None => write_default(p, kk, &mut k),
        }
        if k.first() == Some(&b'"') {
            out.extend_from_slice(&k);
        } else {
            out.push(b'"');
            out.extend_from_slice(&k);
            out.push(b'"');
        }
        out.push(b':');
        if value.is_empty() {
            write_default(p, vk, out);
        } else {
            write_value(p, vk, &value, out)?;
        }
    }
    out.push(b'}');
    Ok(())
}

fn write_default(p: &Plans, k: K, out: &mut Vec<u8>) {
    match k {
        K::Int64 | K::Sint64 | K::Sfixed64 | K::Uint64 | K::Fixed64 => {
            out.extend_from_slice(b"\"0\"")
        }
        K::Bool => out.extend_from_slice(b"false"),
        K::String | K::Bytes => out.extend_from_slice(b"\"\""),
        K::Double | K::Float => out.extend_from_slice(b"0.0"),
        K::Enum(e) => {
            let zero = p.enums.get(e).map_or("0", |e| e.zero.as_str());
            let _ = serde_json::to_writer(&mut *out, zero);
        }
        // Messages have presence: only a map value can be a default message.
        K::Message(_) | K::Struct | K::Empty | K::Reflect(_) => out.extend_from_slice(b"{}"),
        K::ListValue => out.extend_from_slice(b"[]"),
        K::Value => out.extend_from_slice(b"null"),
        K::Timestamp => out.extend_from_slice(b"\"1970-01-01T00:00:00Z\""),
        K::Duration => out.extend_from_slice(b"\"0s\""),
        K::FieldMask => out.extend_from_slice(b"\"\""),
        _ => out.push(b'0'),
    }
}

/// The last occurrence of a scalar wins; occurrences of a message merge.
fn write_value(p: &Plans, k: K, occ: &[Raw<'_>], out: &mut Vec<u8>) -> Result<(), String> {
    let last = *occ.last().ok_or("no value")?;
    let bad = || format!("wire type mismatch for {k:?}");
    match (k, last) {
        (K::Int32, Raw::Varint(v)) => itoa(out, i64::from(v as i32)),
        (K::Sint32, Raw::Varint(v)) => itoa(out, i64::from(zigzag32(v as u32))),
        (K::Sfixed32, Raw::I32(v)) => itoa(out, i64::from(v as i32)),
        (K::Uint32, Raw::Varint(v)) => itoa(out, i64::from(v as u32)),
        (K::Fixed32, Raw::I32(v)) => itoa(out, i64::from(v)),
        (K::Int64, Raw::Varint(v)) => quoted(out, &(v as i64).to_string()),
        (K::Sint64, Raw::Varint(v)) => quoted(out, &zigzag64(v).to_string()),
        (K::Sfixed64, Raw::I64(v)) => quoted(out, &(v as i64).to_string()),
        (K::Uint64, Raw::Varint(v)) | (K::Fixed64, Raw::I64(v)) => quoted(out, &v.to_string()),
        (K::Bool, Raw::Varint(v)) => out.extend_from_slice(if v != 0 { b"true" } else { b"false" }),
        (K::Double, Raw::I64(v)) => float(out, f64::from_bits(v), false)?,
        (K::Float, Raw::I32(v)) => float(out, f64::from(f32::from_bits(v)), true)?,
        (K::Enum(e), Raw::Varint(v)) => match p.enums.get(e).and_then(|e| e.names.get(&(v as i32)))
        {
            Some(name) => serde_json::to_writer(&mut *out, name).map_err(|e| e.to_string())?,
            None => itoa(out, i64::from(v as i32)),
        },
        (K::String, Raw::Len(b)) => {
            let s = std::str::from_utf8(b).map_err(|_| "a string that is not UTF-8")?;
            serde_json::to_writer(&mut *out, s).map_err(|e| e.to_string())?;
        }
        (K::Bytes, Raw::Len(b)) => {
            out.push(b'"');
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(b)
                    .as_bytes(),
            );
            out.push(b'"');
        }
        (K::Message(i), _) => {
            let parts = slices(occ).ok_or_else(bad)?;
            write_message(p, i, &parts, out)?;
        }
        (K::Empty, _) => out.extend_from_slice(b"{}"),
        (K::Timestamp, _) => {
            let t = prost_types::Timestamp::decode(concat(occ).ok_or_else(bad)?.as_slice())
                .map_err(|e| e.to_string())?;
            if !(-62_135_596_800..=253_402_300_799).contains(&t.seconds)
                || !(0..1_000_000_000).contains(&t.nanos)
            {
                return Err("timestamp out of range".into());
            }
            quoted(out, &t.to_string());
        }
        (K::Duration, _) => {
            let d = prost_types::Duration::decode(concat(occ).ok_or_else(bad)?.as_slice())
                .map_err(|e| e.to_string())?;
            quoted(out, &d.to_string());
        }
        (K::FieldMask, _) => {
            let m = prost_types::FieldMask::decode(concat(occ).ok_or_else(bad)?.as_slice())
                .map_err(|e| e.to_string())?;
            let paths: Vec<String> = m.paths.iter().map(|p| camel(p)).collect();
            serde_json::to_writer(&mut *out, &paths.join(",")).map_err(|e| e.to_string())?;
        }
        (K::Struct, _) => {
            let s = prost_types::Struct::decode(concat(occ).ok_or_else(bad)?.as_slice())
                .map_err(|e| e.to_string())?;
            write_struct(&s, out)?;
        }
        (K::Value, _) => {
            let v = prost_types::Value::decode(concat(occ).ok_or_else(bad)?.as_slice())
                .map_err(|e| e.to_string())?;
            write_json_value(&v, out)?;
        }
        (K::ListValue, _) => {
            let l = prost_types::ListValue::decode(concat(occ).ok_or_else(bad)?.as_slice())
                .map_err(|e| e.to_string())?;
            write_list(&l, out)?;
        }
        (K::Reflect(i), _) => {
            let desc = p.reflect.get(i).ok_or("unknown message type")?;
            let msg = prost_reflect::DynamicMessage::decode(
                desc.clone(),
                concat(occ).ok_or_else(bad)?.as_slice(),
            )
            .map_err(|e| e.to_string())?;
            let mut ser = serde_json::Serializer::new(&mut *out);
            msg.serialize_with_options(&mut ser, &transcode::serialize_options())
                .map_err(|e| e.to_string())?;
        }
        _ => return Err(bad()),
    }
    Ok(())
}

fn slices<'a>(occ: &[Raw<'a>]) -> Option<Vec<&'a [u8]>> {
    occ.iter()
        .map(|r| match r {
            Raw::Len(b) => Some(*b),
            _ => None,
        })
        .collect()
}

fn concat(occ: &[Raw<'_>]) -> Option<Vec<u8>> {
    Some(slices(occ)?.concat())
}

fn zigzag32(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

fn zigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn itoa(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(v.to_string().as_bytes());
}

fn quoted(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

#[cfg(test)]
#[path = "json_out_tests.rs"]
mod tests;
