//! Opaque page cursors. A cursor names the last row of a page by its sort key, so that pages stay
//! stable while rows are inserted concurrently (keyset pagination, never offsets). The encoding is
//! base64url of a tagged, unit-separator-joined list; anything else is rejected as INVALID_ARGUMENT.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::error::{Error, Result};

const SEP: char = '\u{1f}';
const MAX_LEN: usize = 2048;

/// Encodes `fields` under `tag` (which says what the cursor may be used for).
pub fn encode(tag: &str, fields: &[&str]) -> String {
    let mut raw =
        String::with_capacity(tag.len() + fields.iter().map(|f| f.len() + 1).sum::<usize>());
    raw.push_str(tag);
    for f in fields {
        raw.push(SEP);
        raw.push_str(f);
    }
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes a cursor made by [`encode`] with the same `tag` and `N` fields.
pub fn decode<const N: usize>(tag: &str, cursor: &str) -> Result<[String; N]> {
    let bad = || Error::invalid("cursor", "malformed or foreign page cursor");
    if cursor.len() > MAX_LEN {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = raw.split(SEP);
    if parts.next() != Some(tag) {
        return Err(bad());
    }
    let fields: Vec<String> = parts.map(str::to_owned).collect();
    fields.try_into().map_err(|_| bad())
}

/// A cursor over `(create_time, id)`, the keyset of most lists.
pub fn encode_time_id(tag: &str, time: i64, id: &str) -> String {
    encode(tag, &[&time.to_string(), id])
}

pub fn decode_time_id(tag: &str, cursor: &str) -> Result<(i64, String)> {
    let [time, id] = decode::<2>(tag, cursor)?;
    let time = time
        .parse()
        .map_err(|_| Error::invalid("cursor", "malformed or foreign page cursor"))?;
    Ok((time, id))
}

/// The page size of a list request: 0 means the default of 20; 1 to 100 are accepted.
pub fn page_limit(limit: i32) -> Result<u64> {
    match limit {
        0 => Ok(20),
        1..=100 => Ok(limit as u64),
        _ => Err(Error::invalid("limit", "must be between 1 and 100")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let c = encode_time_id("agents", 42, "a-b");
        assert_eq!(
            decode_time_id("agents", &c).unwrap(),
            (42, "a-b".to_owned())
        );
        assert!(
            decode_time_id("keys", &c).is_err(),
            "a cursor of another list is refused"
        );
        for bad in ["", "!!!", "Zm9v", &"A".repeat(5000)] {
            assert!(decode_time_id("agents", bad).is_err(), "{bad}");
        }
        assert!(page_limit(-1).is_err() && page_limit(101).is_err());
        assert_eq!(page_limit(0).unwrap(), 20);
    }
}
