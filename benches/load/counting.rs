//! The load generator's counting: the message format, parsing, and what each receiver saw.
//! Kept apart so `tests/load_generator_counting.rs` can check it.

use std::time::Instant;

/// Bytes of each message's text, as in the published figures we compare against.
pub const PAYLOAD: usize = 64;

/// One message line as a sender writes it: sender, sequence number and send time, padded.
pub fn message(sender: usize, seq: usize, base: Instant) -> Vec<u8> {
    let mut line = format!("S{sender:04}Q{seq:08}T{:016}", base.elapsed().as_nanos()).into_bytes();
    line.resize(PAYLOAD, b'x');
    line.push(b'\n');
    line
}

/// Parses a delivered message line (`NAME: S0001Q00000042T…xxx`): sender, sequence, send time.
pub fn parse(line: &[u8]) -> Option<(usize, u32, u64)> {
    let payload = line.get(line.len().checked_sub(PAYLOAD)?..)?;
    if payload[0] != b'S' || payload[5] != b'Q' || payload[14] != b'T' {
        return None;
    }
    let digits = |d: &[u8]| {
        d.iter().try_fold(0_u64, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
        })
    };
    Some((
        digits(&payload[1..5])? as usize,
        digits(&payload[6..14])? as u32,
        digits(&payload[15..31])?,
    ))
}

/// Splits a byte stream into lines, whatever the read boundaries.
#[derive(Debug, Default)]
pub struct Lines {
    carry: Vec<u8>,
}

impl Lines {
    /// Feeds one read's bytes, calling `on_line` for every complete non-empty line.
    pub fn feed(&mut self, data: &[u8], mut on_line: impl FnMut(&[u8])) {
        let mut rest = data;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            if self.carry.is_empty() {
                if end > 0 {
                    on_line(&rest[..end]);
                }
            } else {
                self.carry.extend_from_slice(&rest[..end]);
                on_line(&self.carry);
                self.carry.clear();
            }
            rest = &rest[end + 1..];
        }
        self.carry.extend_from_slice(rest);
    }
}

/// What one receiver saw of the messages.
#[derive(Debug)]
pub struct Tally {
    /// Messages it should receive.
    pub expected: u64,
    /// Messages it received.
    pub payloads: u64,
    /// Messages that did not carry their sender's next sequence number (duplicated, lost in
    /// between, or reordered).
    pub out_of_order: u64,
    /// A hash of the order of all messages across senders; equal for equal orders.
    pub order_hash: u64,
    pub done_at: Option<Instant>,
    /// Whether the server closed the connection before every message arrived.
    pub disconnected: bool,
    next_seq: Vec<u32>,
}

impl Tally {
    pub fn new(expected: u64) -> Tally {
        Tally {
            expected,
            payloads: 0,
            out_of_order: 0,
            order_hash: 0xcbf2_9ce4_8422_2325,
            done_at: None,
            disconnected: false,
            next_seq: Vec::new(),
        }
    }

    /// Counts one message from `sender` with sequence number `seq`.
    pub fn count(&mut self, sender: usize, seq: u32) {
        if self.next_seq.len() <= sender {
            self.next_seq.resize(sender + 1, 0);
        }
        if seq != self.next_seq[sender] {
            self.out_of_order += 1;
        }
        self.next_seq[sender] = seq + 1;
        self.payloads += 1;
        self.order_hash = (self.order_hash ^ ((sender as u64) << 32 | u64::from(seq)))
            .wrapping_mul(0x100_0000_01b3);
    }

    /// Messages it should have received and did not.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.payloads)
    }
}
