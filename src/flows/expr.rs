//! CEL over a flow run's context, and the `{{ expr }}` templates built on it.
//!
//! Every expression a flow holds (edge conditions, branch cases, wait deadlines, trigger filters,
//! template placeholders) is compiled when the flow or trigger is written, so a typo is an
//! INVALID_ARGUMENT naming the field, not a failed run days later. Evaluation takes the context as JSON
//! (`input`, `nodes`, or `event`) and converts it once per evaluation.

use std::sync::{Arc, LazyLock};

use cel::{Context, Env, Program, Value as Cel, objects::Key};
use serde_json::Value;

use crate::error::{Error, Result};

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// Longest expression accepted (a CEL program is parsed recursively).
const MAX_EXPR: usize = 4096;

/// Compiles `src`, naming `field` when it does not parse.
pub fn compile(field: &str, src: &str) -> Result<Program> {
    if src.len() > MAX_EXPR {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_EXPR} characters"),
        ));
    }
    // The parser recurses per nesting level: refuse absurd nesting before it does.
    let depth = src
        .chars()
        .scan(0i32, |d, c| {
            match c {
                '(' | '[' | '{' => *d += 1,
                ')' | ']' | '}' => *d -= 1,
                _ => {}
            }
            Some(*d)
        })
        .max()
        .unwrap_or(0);
    if depth > 32 {
        return Err(Error::invalid(field, "nested more than 32 levels deep"));
    }
    Program::compile(src).map_err(|e| Error::invalid(field, format!("CEL: {e}")))
}

/// The variables an expression sees, as JSON objects by name.
pub struct Vars<'a>(pub &'a [(&'a str, &'a Value)]);

/// Evaluates `src` over `vars`. The error is a message for the step or run that failed.
pub fn eval(src: &str, vars: &Vars<'_>) -> std::result::Result<Cel, String> {
    let program = Program::compile(src).map_err(|e| format!("CEL {src:?}: {e}"))?;
    let mut ctx = Context::with_env(ENV.clone());
    for (name, v) in vars.0 {
        ctx.add_variable_from_value(*name, to_cel(v));
    }
    program
        .execute(&ctx)
        .map_err(|e| format!("CEL {src:?}: {e}"))
}

/// Evaluates a condition: it must yield a bool.
pub fn eval_bool(src: &str, vars: &Vars<'_>) -> std::result::Result<bool, String> {
    match eval(src, vars)? {
        Cel::Bool(b) => Ok(b),
        other => Err(format!(
            "CEL {src:?} must evaluate to a bool, got {}",
            other.type_of()
        )),
    }
}

/// JSON to CEL. Integral numbers become ints, so `input.count + 1` works on a proto Struct's doubles.
pub fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Cel::Int(f as i64),
            (None, Some(f)) => Cel::Float(f),
            (None, None) => Cel::Null,
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => {
            let map: std::collections::HashMap<Key, Cel> = o
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            Cel::Map(map.into())
        }
    }
}

/// CEL to JSON (timestamps as RFC 3339, durations as "<seconds>s").
pub fn to_json(v: &Cel) -> std::result::Result<Value, String> {
    match v {
        Cel::Duration(d) => Ok(Value::String(format!(
            "{}s",
            d.num_milliseconds() as f64 / 1000.0
        ))),
        Cel::List(l) => l
            .iter()
            .map(to_json)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Cel::Map(m) => {
            let mut o = serde_json::Map::with_capacity(m.map.len());
            for (k, v) in m.map.iter() {
                o.insert(k.to_string(), to_json(v)?);
            }
            Ok(Value::Object(o))
        }
        other => other
            .json()
            .map_err(|_| format!("a {} has no JSON form", other.type_of())),
    }
}

/// The `{{ expr }}` placeholders of a template string, as (start, end, expression) byte ranges.
fn placeholders(s: &str) -> std::result::Result<Vec<(usize, usize, &str)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(open) = s[at..].find("{{") {
        let start = at + open;
        let close = s[start + 2..]
            .find("}}")
            .ok_or_else(|| format!("unclosed placeholder at byte {start}"))?;
        let end = start + 2 + close + 2;
        out.push((start, end, s[start + 2..end - 2].trim()));
        at = end;
    }
    Ok(out)
}

/// Checks at write time that every placeholder of the template `v` compiles.
pub fn check_template(field: &str, v: &Value) -> Result<()> {
    match v {
        Value::String(s) => {
            for (_, _, e) in placeholders(s).map_err(|m| Error::invalid(field, m))? {
                if e.is_empty() {
                    return Err(Error::invalid(field, "empty placeholder"));
                }
                compile(field, e)?;
            }
            Ok(())
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_template(&format!("{field}[{i}]"), v)),
        Value::Object(o) => o
            .iter()
            .try_for_each(|(k, v)| check_template(&format!("{field}.{k}"), v)),
        _ => Ok(()),
    }
}

/// Renders a template: a string that is exactly one placeholder yields the expression's JSON value;
/// other strings are rendered as text; lists and objects are rendered element by element; other
/// values are literals.
pub fn render(v: &Value, vars: &Vars<'_>) -> std::result::Result<Value, String> {
    match v {
        Value::String(s) => render_str(s, vars),
        Value::Array(a) => a
            .iter()
            .map(|v| render(v, vars))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(o) => {
            let mut out = serde_json::Map::with_capacity(o.len());
            for (k, v) in o {
                out.insert(k.clone(), render(v, vars)?);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

fn render_str(s: &str, vars: &Vars<'_>) -> std::result::Result<Value, String> {
    let holes = placeholders(s)?;
    if holes.is_empty() {
        return Ok(Value::String(s.to_owned()));
    }
    if let [(0, end, e)] = holes.as_slice()
        && *end == s.len()
    {
        return to_json(&eval(e, vars)?);
    }
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (start, end, e) in holes {
        out.push_str(&s[at..start]);
        match to_json(&eval(e, vars)?)? {
            Value::String(t) => out.push_str(&t),
            Value::Null => {}
            other => out.push_str(&other.to_string()),
        }
        at = end;
    }
    out.push_str(&s[at..]);
    Ok(Value::String(out))
}

/// Renders a template that must yield text (URLs, headers, messages).
pub fn render_text(s: &str, vars: &Vars<'_>) -> std::result::Result<String, String> {
    match render_str(s, vars)? {
        Value::String(t) => Ok(t),
        Value::Null => Ok(String::new()),
        other => Ok(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn conditions_and_templates_over_the_context() {
        let input = json!({"score": 72.0, "name": "Ada", "tags": ["a", "b"]});
        let nodes = json!({"enrich": {"company": "ACME", "size": 12}});
        let vars = Vars(&[("input", &input), ("nodes", &nodes)]);
        assert!(eval_bool("input.score > 50 && size(input.tags) == 2", &vars).unwrap());
        assert!(eval_bool("input.score + 1 == 73", &vars).unwrap());
        assert!(eval_bool("input.name == 'Bob'", &vars).is_ok_and(|b| !b));
        assert!(eval_bool("input.score", &vars).is_err(), "not a bool");
        assert!(eval_bool("input.missing > 1", &vars).is_err());
        assert_eq!(
            render(&json!("{{ nodes.enrich }}"), &vars).unwrap(),
            json!({"company": "ACME", "size": 12})
        );
        assert_eq!(
            render(
                &json!("Hi {{input.name}} of {{ nodes.enrich.company }} ({{ nodes.enrich.size }})"),
                &vars
            )
            .unwrap(),
            json!("Hi Ada of ACME (12)")
        );
        assert_eq!(
            render(&json!({"n": ["{{ input.tags[1] }}", 3, true]}), &vars).unwrap(),
            json!({"n": ["b", 3, true]})
        );
        assert_eq!(render_text("plain", &vars).unwrap(), "plain");
    }

    #[test]
    fn bad_expressions_are_refused_at_write_time() {
        assert!(compile("f", "input.score >").is_err());
        assert!(compile("f", &"(".repeat(100)).is_err());
        assert!(check_template("t", &json!({"a": "{{ input. }}"})).is_err());
        assert!(check_template("t", &json!("{{ input.a")).is_err());
        assert!(check_template("t", &json!("{{}}")).is_err());
        assert!(check_template("t", &json!(["{{ input.a }} and {{ nodes.b.c }}"])).is_ok());
    }
}
