//! Timestamps: milliseconds since the Unix epoch, UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

/// Parses an ISO 8601 / RFC 3339 timestamp as SDKs send it. Accepts an offset or `Z`, a
/// naive date-time (read as UTC) and a bare date. Returns `None` when it is none of these.
pub fn parse_timestamp(s: &str) -> Option<Millis> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some(dt.timestamp_millis());
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp_millis())
}

/// Formats milliseconds as RFC 3339 with millisecond precision and `Z`.
pub fn format_millis(ms: Millis) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|dt| dt.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

/// Segment's clock-skew correction: the device clock may be wrong, so the event time is
/// placed as far before the server's receipt as the device saw it before sending:
/// `timestamp = receivedAt - (sentAt - timestamp)`. Without `sentAt` the device time is kept;
/// without a device time the receipt time is used.
pub fn correct_skew(timestamp: Option<Millis>, sent_at: Option<Millis>, received_at: Millis) -> Millis {
    match (timestamp, sent_at) {
        (Some(ts), Some(sent)) => received_at - (sent - ts),
        (Some(ts), None) => ts,
        (None, _) => received_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_sdks_send() {
        let z = parse_timestamp("2026-11-22T13:30:24.123Z").unwrap();
        assert_eq!(parse_timestamp("2026-11-22T14:30:24.123+01:00"), Some(z));
        assert_eq!(parse_timestamp("2026-11-22T13:30:24.123000+00:00"), Some(z));
        assert_eq!(parse_timestamp("2026-11-22T13:30:24.123"), Some(z));
        assert_eq!(parse_timestamp("2026-11-22"), Some(z - (13 * 3600 + 30 * 60 + 24) * 1000 - 123));
        assert_eq!(format_millis(z), "2026-11-22T13:30:24.123Z");
        for bad in ["", "yesterday", "2026-13-01", "2026-11-22T25:00:00Z", "1700000000"] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn skew_is_corrected_as_segment_does() {
        // The device clock runs 1 h fast; the event happened 5 s before sending.
        let received = 1_000_000_000;
        let device_sent = received + 3_600_000;
        let device_ts = device_sent - 5_000;
        assert_eq!(correct_skew(Some(device_ts), Some(device_sent), received), received - 5_000);
        assert_eq!(correct_skew(Some(device_ts), None, received), device_ts);
        assert_eq!(correct_skew(None, Some(device_sent), received), received);
    }
}
