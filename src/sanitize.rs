//! Sanitizing: what one user sends must never control another user's terminal.

use std::borrow::Cow;

/// Shown in place of every character that could control a terminal or reorder text.
const REPLACEMENT: char = '\u{FFFD}';

/// Appends `text` to `out`, making every terminal-controlling character visible as U+FFFD.
///
/// Replaced: C0 controls (so also ESC, which starts cursor, clear-screen, window-title and OSC 52
/// clipboard sequences, and `\r`, which would forge a line start), DEL, C1 controls (including
/// the 8-bit CSI), the Unicode line and paragraph separators, and the bidirectional formatting
/// characters that can reorder how a line reads. A tab becomes a space. Replacing rather than
/// stripping keeps an attempt visible and never joins two harmless pieces into a harmful one.
///
/// # Examples
///
/// ```
/// let mut out = String::new();
/// smolchat::fuzzing::sanitize_into(&mut out, "hi\u{1b}[2J\tthere\u{202e}");
/// assert_eq!(out, "hi\u{fffd}[2J there\u{fffd}");
/// ```
pub fn sanitize_into(out: &mut String, text: &str) {
    if is_clean(text) {
        out.push_str(text);
        return;
    }
    out.extend(text.chars().map(|c| match c {
        '\t' => ' ',
        c if is_unsafe(c) => REPLACEMENT,
        c => c,
    }));
}

/// `text` sanitized, borrowed when it needs no change (as almost every chat line does), so the
/// per-message path copies it only into the line it relays.
pub(crate) fn sanitize(text: &str) -> Cow<'_, str> {
    if is_clean(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    sanitize_into(&mut out, text);
    Cow::Owned(out)
}

/// Whether `text` needs no change: printable ASCII is checked byte by byte, the rest by character.
fn is_clean(text: &str) -> bool {
    text.bytes().all(|b| (b' '..=b'~').contains(&b))
        || text.chars().all(|c| c != '\t' && !is_unsafe(c))
}

fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(text: &str) -> String {
        let mut out = String::new();
        sanitize_into(&mut out, text);
        assert_eq!(sanitize(text), out, "both entry points agree");
        out
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(
            clean("hello, world! ünïcödé 👋"),
            "hello, world! ünïcödé 👋"
        );
    }

    #[test]
    fn escape_sequences_are_defused() {
        // Clear screen, move cursor, window title, OSC 52 clipboard write, 8-bit CSI.
        let attacks = [
            "\x1b[2J",
            "\x1b[10;10H",
            "\x1b]0;pwned\x07",
            "\x1b]52;c;ZWNobyBoaQ==\x07",
            "\u{9b}31m",
        ];
        for attack in attacks {
            let out = clean(attack);
            assert!(
                out.chars().all(|c| !c.is_control()),
                "{attack:?} gave {out:?}"
            );
            assert!(out.starts_with(REPLACEMENT), "{attack:?} gave {out:?}");
        }
    }

    #[test]
    fn line_forging_and_bidi_are_defused() {
        assert_eq!(clean("x\rserver: fake"), "x\u{fffd}server: fake");
        assert_eq!(
            clean("a\u{202e}b\u{2066}c\u{2028}d\0e\u{7f}"),
            "a\u{fffd}b\u{fffd}c\u{fffd}d\u{fffd}e\u{fffd}"
        );
        assert_eq!(clean("tab\there"), "tab here");
    }

    #[test]
    fn property_output_never_contains_a_controlling_character() {
        let mut state = 0x1234_5678_9abc_def1_u64;
        let pool = [
            'a', ' ', '\t', '\r', '\n', '\x1b', '\x07', '\u{7f}', '\u{85}', '\u{9b}', 'é',
            '\u{202e}', '\u{2067}', '\u{200f}', '\u{fffd}', '好',
        ];
        for _ in 0..5000 {
            let mut text = String::new();
            for _ in 0..(state % 24) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push(pool[(state % pool.len() as u64) as usize]);
            }
            let out = clean(&text);
            assert!(
                out.chars().all(|c| !is_unsafe(c) && c != '\t'),
                "{text:?} gave {out:?}"
            );
            assert_eq!(
                out.chars().count(),
                text.chars().count(),
                "one character out for each in"
            );
        }
    }
}
