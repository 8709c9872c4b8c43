//! JSON conventions shared by the server and the client: time stamps, the error body, and
//! output printed the way qq prints it.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

const RFC3339_NANOS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// Formats a time as RFC 3339 in UTC with nanoseconds, e.g. `2026-12-03T17:45:48.123456789Z`.
pub fn rfc3339_nanos(t: OffsetDateTime) -> String {
    let utc = t.to_offset(time::UtcOffset::UTC);
    // Formatting a valid date with a fixed description only fails for years outside 0..=9999.
    utc.format(RFC3339_NANOS)
        .unwrap_or_else(|_| utc.unix_timestamp().to_string())
}

/// The error body every failed request is answered with.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// A stable machine-readable class, e.g. `http_not_found_error`.
    pub error_class: String,
    /// What went wrong, for a person.
    pub description: String,
    /// The part of the server that answered.
    pub module: String,
    /// Always empty: the server does not send its call stack.
    pub stack: Vec<String>,
    /// Always true.
    pub user_visible: bool,
}

/// Renders `value` as Python's `json.dumps(value, sort_keys=True, indent=4,
/// ensure_ascii=False)` does, which is how qq prints JSON answers.
pub fn pretty_like_qq(value: &serde_json::Value) -> String {
    // serde_json's map is ordered by key (no `preserve_order` feature), and its pretty printer
    // uses the same separators as Python's with an indent.
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    if value.serialize(&mut ser).is_err() {
        return String::from("null");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_nanoseconds_and_z() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(rfc3339_nanos(t), "2023-11-14T22:13:20.123456789Z");
        let t = OffsetDateTime::from_unix_timestamp(0).unwrap();
        assert_eq!(rfc3339_nanos(t), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn pretty_matches_python() {
        let v = serde_json::json!({"b": [1, {}], "a": {"z": null, "y": "é"}, "c": []});
        let want = "{\n    \"a\": {\n        \"y\": \"é\",\n        \"z\": null\n    },\n    \
                    \"b\": [\n        1,\n        {}\n    ],\n    \"c\": []\n}";
        assert_eq!(pretty_like_qq(&v), want);
    }
}
