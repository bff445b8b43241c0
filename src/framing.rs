//! Line framing: turns the bytes a client sends into lines of bounded length, and answers the
//! telnet commands among them.
//!
//! A line ends with `\n`; a `\r` right before it is dropped too, so `\r\n` works, and so does
//! `\r\0`, which telnet sends for Enter in character mode. A lone `\r` elsewhere is ordinary
//! line content (the sanitizer later shows it as U+FFFD, so it cannot return another user's
//! cursor to the start of their line).
//!
//! Telnet (RFC 854) commands are `IAC` (0xFF) followed by a command byte (240–255). The framer
//! removes them and answers as a minimal telnet server that supports no options: it refuses
//! every option the client offers or asks for (`DONT`/`WONT`), except that it answers
//! `DO TIMING-MARK` with `WILL TIMING-MARK` (RFC 860), which a telnet client waits for after
//! Ctrl-C before it shows output again, and it answers "are you there" (`AYT`) with a short
//! line. `IP`, `AO`, `BRK` and the other commands are ignored. A 0xFF followed by anything
//! else is not a command but data (invalid UTF-8, later shown as U+FFFD), as is the escaped
//! `IAC IAC`; so a 0xFF never swallows the byte after it, nor a line end.

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

/// Splits a byte stream into lines of at most `max_line` bytes, and collects the answers to
/// the telnet commands in it.
///
/// Memory stays bounded whatever arrives: the framer holds at most one partial line (up to
/// `max_line + 1` bytes) plus the last chunk pushed, and at most [`Framer::MAX_REPLIES`] bytes
/// of telnet answers. Once a line is known to be too long, its bytes are dropped as they arrive
/// until its newline.
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
    /// The last data byte was `\r`, so a `\0` next ends the line (telnet's CR NUL).
    after_cr: bool,
    /// Telnet answers waiting to be sent, in the order their commands arrived.
    replies: Vec<u8>,
}

/// Where the framer is inside a telnet command (RFC 854).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Telnet {
    Data,
    /// After `IAC`.
    Command,
    /// After `IAC WILL|WONT|DO|DONT` (the verb): one option byte follows.
    Option(u8),
    /// Inside `IAC SB … IAC SE`.
    Sub,
    /// After `IAC` inside a subnegotiation.
    SubIac,
}

const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const AYT: u8 = 246;
const SE: u8 = 240;
/// Lowest command byte: after `IAC`, anything below is data.
const FIRST_COMMAND: u8 = SE;
/// RFC 860: a client asks `DO TIMING-MARK` and discards output until it is answered.
const TIMING_MARK: u8 = 6;

/// The answer to "are you there": one server notice line.
const AYT_REPLY: &[u8] = b"*** smolchat is here\n";

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
            after_cr: false,
            replies: Vec::new(),
        }
    }

    /// Most bytes of telnet answers held until [`take_replies`](Self::take_replies). A client
    /// that floods negotiation without reading gets no more answers than this, so they cannot
    /// grow without bound; a real client's negotiation needs a few dozen bytes.
    pub const MAX_REPLIES: usize = 512;

    /// Appends received bytes. Call [`next_frame`](Self::next_frame) until it returns `None`
    /// before pushing more, or the buffer grows by what is pushed; then send what
    /// [`take_replies`](Self::take_replies) returns.
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
        let plain = |b: &u8| *b != IAC && *b != 0;
        if self.telnet == Telnet::Data && bytes.iter().all(plain) {
            self.buf.extend_from_slice(bytes);
            if let Some(&last) = bytes.last() {
                self.after_cr = last == b'\r';
            }
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
                self.data_byte(byte);
                Telnet::Data
            }
            (Telnet::Command, ..FIRST_COMMAND) => {
                // Not a command: the 0xFF was data, and this byte is data too.
                self.data_byte(IAC);
                self.data_byte(byte);
                Telnet::Data
            }
            (Telnet::Command, IAC) => {
                self.data_byte(IAC);
                Telnet::Data
            }
            (Telnet::Command, SB) => Telnet::Sub,
            (Telnet::Command, verb @ WILL..=DONT) => Telnet::Option(verb),
            (Telnet::Command, AYT) => {
                self.reply(AYT_REPLY);
                Telnet::Data
            }
            // IP, AO, BRK, EC, EL, GA, NOP, DM, SE: nothing to do.
            (Telnet::Command, _) => Telnet::Data,
            (Telnet::Option(verb), option) => {
                match (verb, option) {
                    (DO, TIMING_MARK) => self.reply(&[IAC, WILL, TIMING_MARK]),
                    (DO, _) => self.reply(&[IAC, WONT, option]),
                    (WILL, _) => self.reply(&[IAC, DONT, option]),
                    // WONT and DONT agree with what is already so (every option off), and
                    // answering them could loop (RFC 1143).
                    _ => {}
                }
                Telnet::Data
            }
            (Telnet::Sub, IAC) => Telnet::SubIac,
            (Telnet::Sub, _) => Telnet::Sub,
            (Telnet::SubIac, SE) => Telnet::Data,
            (Telnet::SubIac, _) => Telnet::Sub,
        };
    }

    fn data_byte(&mut self, byte: u8) {
        // CR NUL ends a line like CR LF; the `\r` is dropped with the line end.
        let byte = if byte == 0 && self.after_cr {
            b'\n'
        } else {
            byte
        };
        self.after_cr = byte == b'\r';
        self.buf.push(byte);
    }

    fn reply(&mut self, bytes: &[u8]) {
        if self.replies.len() + bytes.len() <= Self::MAX_REPLIES {
            self.replies.extend_from_slice(bytes);
        }
    }

    /// Takes the telnet answers collected so far (they contain 0xFF, so they are bytes, not
    /// text), to be written to the client before anything queued after them. `None` when there
    /// is nothing to send, as with any client that is not telnet.
    ///
    /// # Examples
    ///
    /// ```
    /// use smolchat::fuzzing::{Frame, Framer};
    ///
    /// let mut framer = Framer::new(64);
    /// // Ctrl-C in telnet: IAC IP, IAC DO TIMING-MARK.
    /// framer.push(&[255, 244, 255, 253, 6]);
    /// framer.push(b"hi\n");
    /// assert_eq!(framer.next_frame(), Some(Frame::Line(b"hi")));
    /// assert_eq!(framer.take_replies(), Some(vec![255, 251, 6])); // IAC WILL TIMING-MARK
    /// assert_eq!(framer.take_replies(), None);
    /// ```
    pub fn take_replies(&mut self) -> Option<Vec<u8>> {
        (!self.replies.is_empty()).then(|| std::mem::take(&mut self.replies))
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
        if std::mem::replace(&mut self.telnet, Telnet::Data) == Telnet::Command {
            // A 0xFF last of all: no command followed, so it was data.
            self.data_byte(IAC);
        }
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

    /// Feeds `input` in chunks of `chunk` bytes; returns the lines and every reply.
    fn telnet(input: &[u8], chunk: usize) -> (Vec<Option<Vec<u8>>>, Vec<u8>) {
        let mut framer = Framer::new(64);
        let (mut lines, mut replies) = (Vec::new(), Vec::new());
        for piece in input.chunks(chunk) {
            framer.push(piece);
            while let Some(frame) = framer.next_frame() {
                lines.push(match frame {
                    Frame::Line(line) => Some(line.to_vec()),
                    Frame::TooLong => None,
                });
            }
            replies.extend(framer.take_replies().unwrap_or_default());
        }
        (lines, replies)
    }

    /// The same lines and replies whether `input` arrives whole or byte by byte.
    fn telnet_any_split(input: &[u8]) -> (Vec<Option<Vec<u8>>>, Vec<u8>) {
        let whole = telnet(input, input.len().max(1));
        assert_eq!(telnet(input, 1), whole, "byte by byte");
        assert_eq!(telnet(input, 2), whole, "in pairs");
        whole
    }

    #[test]
    fn telnet_negotiation_is_removed_and_refused() {
        // IAC DO ECHO, IAC WILL SGA, IAC SB NAWS 0 80 0 24 IAC SE, IAC NOP, IAC WONT LINEMODE,
        // IAC DONT ECHO.
        let input = b"\xff\xfd\x01hi\xff\xfb\x03 there\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0!\xff\xf1\xff\xfc\x22\xff\xfe\x01\n";
        let (lines, replies) = telnet_any_split(input);
        assert_eq!(lines, [line("hi there!")]);
        // WONT ECHO, DONT SGA; nothing for WONT or DONT, which change nothing.
        assert_eq!(replies, b"\xff\xfc\x01\xff\xfe\x03");
    }

    #[test]
    fn ctrl_c_in_telnet_gets_its_timing_mark() {
        // IAC IP, IAC DO TIMING-MARK: telnet shows nothing more until WILL TIMING-MARK.
        let (lines, replies) = telnet_any_split(b"abc\xff\xf4\xff\xfd\x06def\n");
        assert_eq!(lines, [line("abcdef")]);
        assert_eq!(replies, [IAC, WILL, TIMING_MARK]);
    }

    #[test]
    fn are_you_there_is_answered_and_abort_output_ignored() {
        let (lines, replies) = telnet_any_split(b"\xff\xf6x\xff\xf5y\n");
        assert_eq!(lines, [line("xy")]);
        assert_eq!(replies, AYT_REPLY);
    }

    #[test]
    fn ff_without_a_command_is_data_and_swallows_nothing() {
        let (lines, replies) = telnet_any_split(b"latin1 \xffsome\nbefore\xff\nafter\n");
        assert_eq!(
            lines,
            [
                Some(b"latin1 \xffsome".to_vec()),
                Some(b"before\xff".to_vec()),
                line("after")
            ]
        );
        assert!(replies.is_empty());
        // An escaped 0xFF (IAC IAC) is data too; `\xff\r\n` is a line end after data.
        let (lines, _) = telnet_any_split(b"a\xff\xffb\xff\r\n");
        assert_eq!(lines, [Some(b"a\xffb\xff".to_vec())]);
    }

    #[test]
    fn cr_nul_ends_a_line_like_cr_lf() {
        let (lines, _) = telnet_any_split(b"hi\r\0there\r\n\0nul\x00x\n");
        assert_eq!(
            lines,
            [line("hi"), line("there"), Some(b"\0nul\0x".to_vec())]
        );
        // Across chunks, and ending an overlong line.
        let mut long = vec![b'x'; 100];
        long.extend_from_slice(b"\r\0ok\r\0");
        assert_eq!(
            frames(64, &long, &mut std::iter::repeat(7)),
            [None, line("ok")]
        );
    }

    #[test]
    fn replies_are_bounded_for_a_client_that_never_reads_them() {
        let mut framer = Framer::new(64);
        for _ in 0..10_000 {
            framer.push(&[IAC, DO, 1]);
            assert_eq!(framer.next_frame(), None);
        }
        let replies = framer.take_replies().unwrap_or_default();
        assert!(replies.len() <= Framer::MAX_REPLIES);
        assert_eq!(replies.len() % 3, 0, "only whole replies");
        assert!(!framer.has_partial_line());
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

    /// The simplest possible framer, to compare against: CR NUL is CR LF; split, strip `\r`,
    /// check length.
    fn model(max: usize, input: &[u8]) -> Vec<Option<Vec<u8>>> {
        let mut input = input.to_vec();
        for i in 1..input.len() {
            if input[i - 1] == b'\r' && input[i] == 0 {
                input[i] = b'\n';
            }
        }
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
