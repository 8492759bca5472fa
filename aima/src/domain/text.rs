//! Text that reaches a terminal or a log line: one line, no control characters, no
//! bidirectional overrides that could make a name read differently than it is.

/// Characters that reorder the text around them (Trojan Source, CVE-2021-42574), and
/// the Unicode line and paragraph separators.
fn is_layout_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// True for characters a name must not hold: control characters and bidi controls.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || is_layout_control(c)
}

/// `text` as one line: newlines, tabs and other control or bidi characters escaped
/// (`\n`, `\u{202e}`), so a reason or an error never spans or reorders lines.
pub fn one_line(text: &str) -> String {
    if !text.chars().any(is_unsafe_char) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` cut to at most `max` characters, ending in `…` when it was longer.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(one_line("plain words"), "plain words");
        assert_eq!(one_line("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(one_line("x\u{202E}y\u{1b}[31m"), "x\\u{202e}y\\u{1b}[31m");
        assert_eq!(one_line("l1\u{2028}l2"), "l1\\u{2028}l2");
    }

    #[test]
    fn long_text_is_shortened_on_a_character_boundary() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("ééééé", 3), "éé…");
    }
}
