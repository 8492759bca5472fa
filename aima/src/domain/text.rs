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

/// The line of an engine's log that names its error, when its last line does not: Python
/// engines end a crash with a traceback whose last lines may only point back ("Engine core
/// initialization failed. See root cause above", a shutdown line), while the cause is the
/// last `SomethingError: …` line that does not.
pub fn error_line(logs: &str) -> Option<&str> {
    let lines: Vec<&str> = logs
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let last = *lines.last()?;
    let names_error = |line: &str| {
        line.split(':').next().is_some_and(|head| {
            let head = head.rsplit(['.', ' ']).next().unwrap_or(head);
            (head.ends_with("Error") || head.ends_with("Exception"))
                && head.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    // A line that only refers to an earlier one is no cause.
    let points_back = |line: &str| {
        let lower = line.to_ascii_lowercase();
        lower.contains("cause above") || lower.contains("see above")
    };
    if names_error(last) && !points_back(last) {
        return None;
    }
    lines
        .iter()
        .rev()
        .copied()
        .find(|l| names_error(l) && !points_back(l))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_error_line_of_a_python_traceback_is_found_under_a_pointer() {
        let vllm = "(EngineCore pid=211) ERROR 12-03 engine init failed\n\
            Traceback (most recent call last):\n\
              File \"/v/engine.py\", line 90, in __init__\n\
            RuntimeError: Insufficient space in /dev/shm to create shared memory (160 MiB required, 64 MiB free)\n\
            \n\
            The above exception was the direct cause of the following exception:\n\
            RuntimeError: Engine core initialization failed. See root cause above.\n\
            (APIServer pid=1) INFO shutting down\n";
        assert_eq!(
            super::error_line(vllm),
            Some(
                "RuntimeError: Insufficient space in /dev/shm to create shared memory (160 MiB required, 64 MiB free)"
            )
        );
        let pointer = "ValueError: Insufficient space in /dev/shm\nSee root cause above\n";
        assert_eq!(
            super::error_line(pointer),
            Some("ValueError: Insufficient space in /dev/shm")
        );
        assert_eq!(
            super::error_line("torch.OutOfMemoryError: CUDA out of memory"),
            None,
            "the last line is the error itself"
        );
        assert_eq!(super::error_line("INFO all fine\nINFO bye"), None);
    }

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
