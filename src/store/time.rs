//! Times are microseconds since the Unix epoch in the database and `google.protobuf.Timestamp` on the wire.

use std::time::{SystemTime, UNIX_EPOCH};

use pbjson_types::Timestamp;

pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub fn to_timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// `None` for timestamps outside the representable range.
pub fn from_timestamp(ts: &Timestamp) -> Option<i64> {
    ts.seconds
        .checked_mul(1_000_000)?
        .checked_add(i64::from(ts.nanos) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_including_before_the_epoch() {
        for micros in [0, 1, 999_999, 1_700_000_000_123_456, -1, -1_500_000] {
            assert_eq!(from_timestamp(&to_timestamp(micros)), Some(micros));
        }
    }
}
