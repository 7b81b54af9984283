//! `current_time`: the current time in UTC or at a fixed offset.
//!
//! Models do not know what time it is; this is the cheapest way to tell them. Only UTC and fixed
//! offsets (`+02:00`, `-0530`, `UTC+2`) are supported: named zones (`Europe/Paris`) need a time-zone
//! database, which the server does not ship, and a wrong daylight-saving guess is worse than a clear
//! refusal that tells the model to pass an offset.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolError};

pub struct CurrentTime;

#[tonic::async_trait]
impl Tool for CurrentTime {
    fn name(&self) -> &str {
        "current_time"
    }

    fn description(&self) -> &str {
        "The current date and time. Optional `timezone`: \"UTC\" (default) or a fixed UTC offset such as \"+02:00\" or \"-05:30\"."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "timezone": {"type": "string", "description": "\"UTC\" or a fixed offset like \"+02:00\""}
            },
            "additionalProperties": false
        })
    }

    async fn call(&self, _ctx: &ToolContext, arguments: Value) -> Result<Value, ToolError> {
        let tz = match arguments.get("timezone").or_else(|| arguments.get("tz")) {
            None | Some(Value::Null) => "UTC",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                return Err(ToolError::new(
                    "invalid_arguments",
                    "timezone must be a string",
                ));
            }
        };
        let (offset, label) = parse_timezone(tz)?;
        Ok(render(Utc::now(), offset, &label))
    }
}

/// `{iso, unix, timezone}` of `now` at `offset`.
pub fn render(now: DateTime<Utc>, offset: FixedOffset, label: &str) -> Value {
    let local = now.with_timezone(&offset);
    json!({
        "iso": local.to_rfc3339_opts(SecondsFormat::Secs, true),
        "unix": now.timestamp(),
        "timezone": label,
    })
}

/// UTC and its aliases, or a fixed offset up to ±14:00; returns the offset and its canonical label.
pub fn parse_timezone(tz: &str) -> Result<(FixedOffset, String), ToolError> {
    let unsupported = || {
        ToolError::new(
            "invalid_arguments",
            format!(
                "time zone {tz:?} is not supported: use \"UTC\" or a fixed offset like \"+02:00\""
            ),
        )
    };
    let t = tz.trim();
    let upper = t.to_ascii_uppercase();
    if matches!(
        upper.as_str(),
        "" | "UTC" | "Z" | "GMT" | "ETC/UTC" | "ETC/GMT" | "UNIVERSAL" | "ZULU"
    ) {
        return Ok((FixedOffset::east_opt(0).expect("zero offset"), "UTC".into()));
    }
    let rest = upper
        .strip_prefix("UTC")
        .or_else(|| upper.strip_prefix("GMT"))
        .unwrap_or(&upper);
    let (sign, digits) = match rest.as_bytes().first() {
        Some(b'+') => (1, &rest[1..]),
        Some(b'-') => (-1, &rest[1..]),
        _ => return Err(unsupported()),
    };
    let (h, m) = match digits.split_once(':') {
        Some((h, m)) => (h, m),
        None if digits.len() == 4 => digits.split_at(2),
        None => (digits, "0"),
    };
    let num = |s: &str| {
        (!s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<i32>().ok())
            .flatten()
    };
    let (Some(h), Some(m)) = (num(h), num(m)) else {
        return Err(unsupported());
    };
    if h > 14 || m > 59 || (h == 14 && m > 0) {
        return Err(unsupported());
    }
    let secs = sign * (h * 3600 + m * 60);
    let offset = FixedOffset::east_opt(secs).ok_or_else(unsupported)?;
    if secs == 0 {
        return Ok((offset, "UTC".into()));
    }
    Ok((
        offset,
        format!("{}{h:02}:{m:02}", if sign > 0 { '+' } else { '-' }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(tz: &str) -> Option<String> {
        parse_timezone(tz).ok().map(|(_, l)| l)
    }

    #[test]
    fn parses_utc_and_offsets() {
        for utc in ["", "UTC", "utc", "Z", "GMT", "Etc/UTC", "+00:00", "UTC+0"] {
            assert_eq!(label(utc).as_deref(), Some("UTC"), "{utc:?}");
        }
        assert_eq!(label("+02:00").as_deref(), Some("+02:00"));
        assert_eq!(label("-0530").as_deref(), Some("-05:30"));
        assert_eq!(label("+2").as_deref(), Some("+02:00"));
        assert_eq!(label("UTC-3").as_deref(), Some("-03:00"));
        assert_eq!(label("GMT+05:45").as_deref(), Some("+05:45"));
        assert_eq!(label("+14:00").as_deref(), Some("+14:00"));
        for bad in [
            "Europe/Paris",
            "+15:00",
            "+02:60",
            "+1:2:3",
            "2",
            "+",
            "+abc",
            "+14:30",
            "UTC+",
        ] {
            assert_eq!(
                parse_timezone(bad).unwrap_err().code,
                "invalid_arguments",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn renders_iso_unix_and_label() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let (off, l) = parse_timezone("+02:00").unwrap();
        assert_eq!(
            render(now, off, &l),
            json!({"iso": "2023-11-15T00:13:20+02:00", "unix": 1_700_000_000, "timezone": "+02:00"})
        );
        let (off, l) = parse_timezone("UTC").unwrap();
        assert_eq!(render(now, off, &l)["iso"], "2023-11-14T22:13:20Z");
    }

    #[tokio::test]
    async fn call_defaults_to_utc_and_refuses_named_zones() {
        let v = CurrentTime
            .call(&ToolContext::default(), json!({}))
            .await
            .unwrap();
        assert_eq!(v["timezone"], "UTC");
        assert!(v["iso"].as_str().unwrap().ends_with('Z'));
        let e = CurrentTime
            .call(
                &ToolContext::default(),
                json!({"timezone": "America/New_York"}),
            )
            .await
            .unwrap_err();
        assert!(e.message.contains("fixed offset"));
    }
}
