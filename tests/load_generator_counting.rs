//! The benchmark's load generator counts deliveries, losses, duplicates and order correctly,
//! however the stream is split into reads.

// The benchmark also reads timing fields this test has no use for.
#[allow(dead_code)]
#[path = "../benches/load/counting.rs"]
mod counting;

use std::time::Instant;

use counting::{message, parse, Lines, Tally};

/// Feeds `stream` to a fresh tally in reads of `chunk` bytes, as a receiver would.
fn tally(stream: &[u8], chunk: usize, expected: u64) -> Tally {
    let mut tally = Tally::new(expected);
    let mut lines = Lines::default();
    for read in stream.chunks(chunk) {
        lines.feed(read, |line| {
            if let Some((sender, seq, _)) = parse(line) {
                tally.count(sender, seq);
            }
        });
    }
    tally
}

/// What a receiver reads: notices mixed with messages from `order`, as the server formats them.
fn stream(order: &[(usize, usize)]) -> Vec<u8> {
    let base = Instant::now();
    let mut out = b"*** welcome to smolchat, guest9! /help lists the commands\n".to_vec();
    for (i, &(sender, seq)) in order.iter().enumerate() {
        out.extend_from_slice(format!("guest{sender}: ").as_bytes());
        out.extend_from_slice(&message(sender, seq, base));
        if i % 7 == 0 {
            out.extend_from_slice(b"*** someone joined #lobby\n");
        }
    }
    out
}

fn interleaved(senders: usize, messages: usize) -> Vec<(usize, usize)> {
    (0..messages)
        .flat_map(|seq| (0..senders).map(move |sender| (sender, seq)))
        .collect()
}

#[test]
fn message_lines_round_trip_and_other_lines_are_ignored() {
    let base = Instant::now();
    let line = message(42, 1234, base);
    assert_eq!(line.len(), counting::PAYLOAD + 1);
    let delivered = [b"guest7: ".as_slice(), &line[..line.len() - 1]].concat();
    let (sender, seq, sent) = parse(&delivered).expect("a message line");
    assert_eq!((sender, seq), (42, 1234));
    assert!(u128::from(sent) <= base.elapsed().as_nanos());
    assert_eq!(parse(b"*** guest1 joined #lobby"), None);
    assert_eq!(parse(&[b'x'; 80]), None);
}

#[test]
fn complete_in_order_stream_counts_everything_whatever_the_reads() {
    let order = interleaved(5, 200);
    let bytes = stream(&order);
    let whole = tally(&bytes, bytes.len(), 1000);
    for chunk in [1, 2, 7, 64, 1000, 4096] {
        let t = tally(&bytes, chunk, 1000);
        assert_eq!(
            (t.payloads, t.lost(), t.out_of_order),
            (1000, 0, 0),
            "reads of {chunk}"
        );
        assert_eq!(t.order_hash, whole.order_hash, "reads of {chunk}");
    }
}

#[test]
fn losses_duplicates_and_reordering_are_reported() {
    let order = interleaved(3, 100);
    let mut lost = order.clone();
    lost.remove(50);
    let t = tally(&stream(&lost), 13, 300);
    assert_eq!((t.payloads, t.lost(), t.out_of_order), (299, 1, 1));

    let mut duplicated = order.clone();
    duplicated.insert(60, order[59]);
    let t = tally(&stream(&duplicated), 13, 300);
    assert_eq!((t.payloads, t.out_of_order), (301, 1));

    let mut swapped = order.clone();
    swapped.swap(30, 33); // the same sender's lines 10 and 11
    let t = tally(&stream(&swapped), 13, 300);
    // 11 where 10 was due, 10 where 12 was due, 12 where 11 was due.
    assert_eq!((t.payloads, t.out_of_order), (300, 3));
}

#[test]
fn different_interleavings_give_different_order_hashes() {
    let order = interleaved(3, 100);
    let mut other = order.clone();
    other.swap(10, 11); // two senders' lines: each sender's own order is intact
    let (a, b) = (
        tally(&stream(&order), 100, 300),
        tally(&stream(&other), 100, 300),
    );
    assert_eq!((a.out_of_order, b.out_of_order), (0, 0));
    assert_ne!(
        a.order_hash, b.order_hash,
        "a different total order must be noticed"
    );
}
