//! Wall-clock helpers. Pure code takes `now` as a parameter; only the edges
//! call these.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in whole seconds.
pub fn unix_secs() -> i64 {
    unix_millis() / 1000
}

/// Unix time in milliseconds.
pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 (UTC, seconds precision) for a Unix time in seconds.
pub fn rfc3339(unix_secs: i64) -> String {
    let secs = u64::try_from(unix_secs).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}
