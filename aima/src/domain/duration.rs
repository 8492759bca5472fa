//! Durations as people and seed files write them: bare seconds (`600`) or with units
//! (`10m`, `1h 30m`, `500ms`). One rule for every flag, API body and setting.

use std::time::Duration;

/// What a bad duration's message tells the caller to write instead.
pub const DURATION_FORMS: &str = "give seconds (600) or a duration with a unit (10m, 30s)";

/// `text` as a duration: a bare whole number is seconds (`600`), anything else is read
/// with units (`10m`, `1h 30m`, `500ms`). `None` when it is neither.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(Duration::from_secs);
    }
    humantime::parse_duration(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_seconds_and_units_are_both_durations() {
        let secs = Duration::from_secs;
        assert_eq!(parse_duration("600"), Some(secs(600)));
        assert_eq!(parse_duration(" 5 "), Some(secs(5)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("10m"), Some(secs(600)));
        assert_eq!(parse_duration("1h 30m"), Some(secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        for bad in ["", "soon", "-5", "5x", "1.5", "99999999999999999999999"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
