//! Feeds arbitrary bytes, split at arbitrary points, through the framer and the sanitizer and
//! checks their promises: bounded memory, bounded lines, the same lines and telnet replies
//! however the input is split, and sanitized text that cannot control a terminal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smolchat::fuzzing::{sanitize_into, Frame, Framer};

const MAX_LINE: usize = 64;

/// The frames, and the telnet replies taken after each chunk.
type Output = (Vec<Option<Vec<u8>>>, Vec<u8>);

fn frames(input: &[u8], split: impl Iterator<Item = usize>) -> Output {
    let mut framer = Framer::new(MAX_LINE);
    let mut out = Vec::new();
    let mut replies = Vec::new();
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
        let reply = framer.take_replies().unwrap_or_default();
        assert!(reply.len() <= Framer::MAX_REPLIES);
        replies.extend(reply);
    }
    (out, replies)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(seed) + 1;
    let whole = frames(input, std::iter::empty());
    let split = frames(input, std::iter::repeat(chunk));
    assert_eq!(whole.0, split.0);
    // Replies past the bound are dropped, so only inputs whose replies all fit (every reply
    // is under 32 bytes) compare whole.
    if whole.1.len() + 32 <= Framer::MAX_REPLIES {
        assert_eq!(whole.1, split.1);
    }
    for line in whole.0.into_iter().flatten() {
        let mut text = String::new();
        sanitize_into(&mut text, &String::from_utf8_lossy(&line));
        assert!(!text.chars().any(|c| c.is_control()
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)));
    }
});
