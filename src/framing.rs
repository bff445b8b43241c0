//! Line framing: turns the bytes a client sends into lines of bounded length.
//!
//! A line ends with `\n`; a `\r` right before it is dropped too, so `\r\n` works. A lone `\r`
//! elsewhere is ordinary line content (the sanitizer later shows it as U+FFFD, so it cannot
//! return another user's cursor to the start of their line). Telnet negotiation sequences
//! (`IAC …`) are removed before framing: they are never valid UTF-8 text, only noise from a
//! telnet client.

/// What the framer found next in the input.
///
/// # Examples
///
/// ```
/// use smolchat::fuzzing::{Frame, Framer};
///
/// let mut framer = Framer::new(4);
/// framer.push(b"hello\nhi\n");
/// assert_eq!(framer.next_frame(), Some(Frame::TooLong));
/// assert_eq!(framer.next_frame(), Some(Frame::Line(b"hi")));
/// ```
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line, without its `\n` or `\r\n` ending.
    Line(&'a [u8]),
    /// A line longer than the limit was discarded, whole.
    TooLong,
}

/// Splits a byte stream into lines of at most `max_line` bytes.
///
/// Memory stays bounded whatever arrives: the framer holds at most one partial line (up to
/// `max_line + 1` bytes) plus the last chunk pushed. Once a line is known to be too long, its
/// bytes are dropped as they arrive until its newline.
///
/// # Examples
///
/// ```
/// use smolchat::fuzzing::{Frame, Framer};
///
/// let mut framer = Framer::new(8);
/// framer.push(b"hi\r\nthis is too long\nok");
/// assert_eq!(framer.next_frame(), Some(Frame::Line(b"hi")));
/// assert_eq!(framer.next_frame(), Some(Frame::TooLong));
/// assert_eq!(framer.next_frame(), None);
/// assert!(framer.has_partial_line());
/// framer.push(b"\n");
/// assert_eq!(framer.next_frame(), Some(Frame::Line(b"ok")));
/// ```
#[derive(Debug)]
pub struct Framer {
    /// Bytes received and not yet returned; the unread part starts at `start`.
    buf: Vec<u8>,
    start: usize,
    /// How far `buf` has been searched for `\n`, so no byte is scanned twice.
    scanned: usize,
    max_line: usize,
    /// Dropping the rest of an overlong line until its newline.
    discarding: bool,
    telnet: Telnet,
}

/// Where the framer is inside a telnet command (RFC 854).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Telnet {
    Data,
    /// After `IAC`.
    Command,
    /// After `IAC WILL|WONT|DO|DONT`: one option byte follows.
    Option,
    /// Inside `IAC SB … IAC SE`.
    Sub,
    /// After `IAC` inside a subnegotiation.
    SubIac,
}

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DONT: u8 = 254;

impl Framer {
    /// Creates a framer that accepts lines of up to `max_line` bytes (without the ending).
    ///
    /// # Examples
    ///
    /// ```
    /// let framer = smolchat::fuzzing::Framer::new(2048);
    /// assert!(!framer.has_partial_line());
    /// ```
    pub fn new(max_line: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max_line,
            discarding: false,
            telnet: Telnet::Data,
        }
    }

    /// Appends received bytes. Call [`next_frame`](Self::next_frame) until it returns `None`
    /// before pushing more, or the buffer grows by what is pushed.
    ///
    /// # Examples
    ///
    /// ```
    /// use smolchat::fuzzing::{Frame, Framer};
    ///
    /// let mut framer = Framer::new(64);
    /// framer.push(b"split ");
    /// assert_eq!(framer.next_frame(), None);
    /// framer.push(b"line\r\n");
    /// assert_eq!(framer.next_frame(), Some(Frame::Line(b"split line")));
    /// ```
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        if self.telnet == Telnet::Data && !bytes.contains(&IAC) {
            self.buf.extend_from_slice(bytes);
        } else {
            for &byte in bytes {
                self.telnet_byte(byte);
            }
        }
    }

    fn telnet_byte(&mut self, byte: u8) {
        self.telnet = match (self.telnet, byte) {
            (Telnet::Data, IAC) => Telnet::Command,
            (Telnet::Data, _) => {
                self.buf.push(byte);
                Telnet::Data
            }
            (Telnet::Command, SB) => Telnet::Sub,
            (Telnet::Command, WILL..=DONT) => Telnet::Option,
            // `IAC IAC` is an escaped 0xFF, which is never valid UTF-8 text: drop it too.
            (Telnet::Command, _) | (Telnet::Option, _) => Telnet::Data,
            (Telnet::Sub, IAC) => Telnet::SubIac,
            (Telnet::Sub, _) => Telnet::Sub,
            (Telnet::SubIac, SE) => Telnet::Data,
            (Telnet::SubIac, _) => Telnet::Sub,
        };
    }

    /// Returns the next complete line or overflow notice, or `None` when more input is needed.
    ///
    /// # Examples
    ///
    /// ```
    /// use smolchat::fuzzing::{Frame, Framer};
    ///
    /// let mut framer = Framer::new(64);
    /// framer.push(b"one\ntwo\n");
    /// let mut lines = Vec::new();
    /// while let Some(Frame::Line(line)) = framer.next_frame() {
    ///     lines.push(line.to_vec());
    /// }
    /// assert_eq!(lines, [b"one".to_vec(), b"two".to_vec()]);
    /// ```
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            let Some(offset) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                return self.need_more();
            };
            let line_start = self.start;
            let line_end = self.scanned + offset;
            self.start = line_end + 1;
            self.scanned = self.start;
            if self.discarding {
                // The tail of a line already reported as too long.
                self.discarding = false;
                continue;
            }
            let mut line = &self.buf[line_start..line_end];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.len() > self.max_line {
                return Some(Frame::TooLong);
            }
            return Some(Frame::Line(line));
        }
    }

    fn need_more(&mut self) -> Option<Frame<'static>> {
        self.scanned = self.buf.len();
        let pending = self.buf.len() - self.start;
        // One byte of slack: a full-length line may still be waiting for the `\n` of its `\r\n`.
        let overflow = !self.discarding && pending > self.max_line + 1;
        if overflow {
            self.discarding = true;
        }
        if self.discarding || pending == 0 {
            // Nothing worth keeping: give the memory back, so idle clients cost nothing here.
            self.buf = Vec::new();
            self.start = 0;
            self.scanned = 0;
        }
        overflow.then_some(Frame::TooLong)
    }

    /// At end of input: returns the unfinished last line, if there is one, as a frame like any
    /// other (or [`Frame::TooLong`] if it was), and forgets it.
    ///
    /// # Examples
    ///
    /// ```
    /// use smolchat::fuzzing::{Frame, Framer};
    ///
    /// let mut framer = Framer::new(64);
    /// framer.push(b"first\nlast");
    /// assert_eq!(framer.next_frame(), Some(Frame::Line(b"first")));
    /// assert_eq!(framer.next_frame(), None);
    /// assert_eq!(framer.finish(), Some(Frame::Line(b"last")));
    /// assert_eq!(framer.finish(), None);
    /// ```
    pub fn finish(&mut self) -> Option<Frame<'_>> {
        if std::mem::take(&mut self.discarding) {
            self.buf = Vec::new();
            (self.start, self.scanned) = (0, 0);
            return None;
        }
        let start = std::mem::replace(&mut self.start, self.buf.len());
        self.scanned = self.buf.len();
        let mut line = &self.buf[start..];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if line.is_empty() {
            return None;
        }
        Some(if line.len() > self.max_line {
            Frame::TooLong
        } else {
            Frame::Line(line)
        })
    }

    /// Whether a line has begun but not ended (used to time out clients that never finish one).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut framer = smolchat::fuzzing::Framer::new(64);
    /// framer.push(b"half a li");
    /// assert_eq!(framer.next_frame(), None);
    /// assert!(framer.has_partial_line());
    /// ```
    pub fn has_partial_line(&self) -> bool {
        self.buf.len() > self.start || self.discarding || self.telnet != Telnet::Data
    }

    /// Bytes of memory the framer holds now (its buffer's capacity), for checking the bound.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut framer = smolchat::fuzzing::Framer::new(8);
    /// framer.push(&[b'x'; 10_000]);
    /// while framer.next_frame().is_some() {}
    /// assert_eq!(framer.buffered(), 0); // an overlong line is dropped, not kept
    /// ```
    pub fn buffered(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in the given chunk sizes and collects every frame as an owned value.
    fn frames(
        max: usize,
        input: &[u8],
        chunks: &mut dyn Iterator<Item = usize>,
    ) -> Vec<Option<Vec<u8>>> {
        let mut framer = Framer::new(max);
        let mut out = Vec::new();
        let mut rest = input;
        let mut biggest = 0;
        while !rest.is_empty() {
            let n = chunks.next().unwrap_or(rest.len()).clamp(1, rest.len());
            biggest = biggest.max(n);
            framer.push(&rest[..n]);
            rest = &rest[n..];
            while let Some(frame) = framer.next_frame() {
                out.push(match frame {
                    Frame::Line(line) => Some(line.to_vec()),
                    Frame::TooLong => None,
                });
            }
            assert!(framer.buffered() <= 2 * (max + 2 + biggest) + 16);
        }
        out
    }

    fn whole(max: usize, input: &[u8]) -> Vec<Option<Vec<u8>>> {
        frames(max, input, &mut std::iter::empty())
    }

    fn line(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn splits_on_lf_and_crlf() {
        assert_eq!(
            whole(16, b"a\nb\r\n\nc\r\r\n"),
            [line("a"), line("b"), line(""), line("c\r")]
        );
    }

    #[test]
    fn lone_cr_is_content() {
        assert_eq!(whole(16, b"a\rb\n"), [line("a\rb")]);
    }

    #[test]
    fn line_of_exactly_max_is_accepted_with_either_ending() {
        assert_eq!(
            whole(4, b"abcd\nabcd\r\nabcde\n"),
            [line("abcd"), line("abcd"), None]
        );
        let byte_by_byte = frames(4, b"abcd\r\nabcde\r\nok\n", &mut std::iter::repeat(1));
        assert_eq!(byte_by_byte, [line("abcd"), None, line("ok")]);
    }

    #[test]
    fn overlong_line_is_reported_once_and_dropped_whole() {
        let mut input = vec![b'x'; 10_000];
        input.extend_from_slice(b"\nafter\n");
        assert_eq!(
            frames(8, &input, &mut std::iter::repeat(100)),
            [None, line("after")]
        );
    }

    #[test]
    fn endless_line_keeps_memory_bounded() {
        let mut framer = Framer::new(1024);
        let chunk = [b'y'; 4096];
        let mut too_long = 0;
        for _ in 0..10_000 {
            framer.push(&chunk);
            while let Some(frame) = framer.next_frame() {
                assert_eq!(frame, Frame::TooLong);
                too_long += 1;
            }
            assert!(framer.buffered() <= 8192, "buffered {}", framer.buffered());
        }
        assert_eq!(too_long, 1);
    }

    #[test]
    fn telnet_negotiation_is_removed() {
        // IAC DO ECHO, IAC WILL SGA, IAC SB NAWS 0 80 0 24 IAC SE, IAC NOP, IAC IAC.
        let input = b"\xff\xfd\x01hi\xff\xfb\x03 there\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0!\xff\xf1\xff\xff\n";
        assert_eq!(whole(64, input), [line("hi there!")]);
        let split = frames(64, input, &mut std::iter::repeat(1));
        assert_eq!(split, [line("hi there!")]);
    }

    #[test]
    fn partial_line_is_tracked() {
        let mut framer = Framer::new(8);
        assert!(!framer.has_partial_line());
        framer.push(b"ab");
        assert_eq!(framer.next_frame(), None);
        assert!(framer.has_partial_line());
        framer.push(b"\n");
        assert_eq!(framer.next_frame(), Some(Frame::Line(b"ab")));
        assert_eq!(framer.next_frame(), None);
        assert!(!framer.has_partial_line());
        assert_eq!(framer.buffered(), 0);
    }

    /// A small deterministic generator, so property tests need no extra crate and replay exactly.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The simplest possible framer, to compare against: split, strip `\r`, check length.
    fn model(max: usize, input: &[u8]) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        let unterminated = parts.pop().unwrap_or_default();
        for mut part in parts {
            if let [rest @ .., b'\r'] = part {
                part = rest;
            }
            out.push((part.len() <= max).then(|| part.to_vec()));
        }
        // An unfinished line is reported as soon as it cannot fit, even with a `\r\n` ending.
        if unterminated.len() > max + 1 {
            out.push(None);
        }
        out
    }

    #[test]
    fn property_any_split_gives_the_same_lines_as_the_model() {
        let mut rng = Rng(0x5eed_cafe_f00d_1234);
        let alphabet = b"ab\r\n\n\x00\xc3\xa9 ";
        for case in 0..2000 {
            let max = 1 + rng.below(12) as usize;
            let len = rng.below(200) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect();
            let expected = model(max, &input);
            let seed = rng.next() | 1;
            let mut chunk_rng = Rng(seed);
            let mut chunks = std::iter::from_fn(move || Some(1 + chunk_rng.below(17) as usize));
            assert_eq!(
                frames(max, &input, &mut chunks),
                expected,
                "case {case}, max {max}, input {input:?}"
            );
            assert_eq!(
                frames(max, &input, &mut std::iter::repeat(1)),
                expected,
                "byte by byte, case {case}"
            );
            assert_eq!(whole(max, &input), expected, "whole, case {case}");
        }
    }
}
