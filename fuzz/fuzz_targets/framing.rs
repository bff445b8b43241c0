//! Feeds arbitrary bytes, split at arbitrary points, through the framer and the sanitizer and
//! checks their promises: bounded memory, bounded lines, the same lines however the input is
//! split, and sanitized text that cannot control a terminal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smolchat::fuzzing::{sanitize_into, Frame, Framer};

const MAX_LINE: usize = 64;

fn frames(input: &[u8], split: impl Iterator<Item = usize>) -> Vec<Option<Vec<u8>>> {
    let mut framer = Framer::new(MAX_LINE);
    let mut out = Vec::new();
    let mut rest = input;
    let mut split = split;
    let mut biggest = 0;
    while !rest.is_empty() {
        let n = split.next().unwrap_or(rest.len()).clamp(1, rest.len());
        biggest = biggest.max(n);
        framer.push(&rest[..n]);
        rest = &rest[n..];
        while let Some(frame) = framer.next_frame() {
            out.push(match frame {
                Frame::Line(line) => {
                    assert!(line.len() <= MAX_LINE);
                    Some(line.to_vec())
                }
                Frame::TooLong => None,
            });
        }
        // At most one partial line plus the chunk just pushed (with Vec's doubling).
        assert!(framer.buffered() <= 2 * (MAX_LINE + 2 + biggest) + 16);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(seed) + 1;
    let whole = frames(input, std::iter::empty());
    assert_eq!(whole, frames(input, std::iter::repeat(chunk)));
    for line in whole.into_iter().flatten() {
        let mut text = String::new();
        sanitize_into(&mut text, &String::from_utf8_lossy(&line));
        assert!(!text.chars().any(|c| c.is_control()
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)));
    }
});
