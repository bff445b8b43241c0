//! Feeds arbitrary bytes to the RESP2 reply parser and checks its promises: no panic, nothing
//! consumed past the input or the size limit, every prefix of a whole reply "not yet", and
//! commands encoded by `Command` parse back to their arguments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smolchat::cluster::{parse, Command, Reply};

const MAX: usize = 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, used))) = parse(data, MAX) {
        assert!(used <= data.len() && used <= MAX);
        for end in 0..used {
            assert!(!matches!(parse(&data[..end], MAX), Ok(Some(_))), "prefix {end}");
        }
    }

    // The same bytes as arguments of a command, split at every 0xff.
    let args: Vec<&[u8]> = data.split(|&b| b == 0xff).collect();
    let mut cmd = Command::new("ECHO");
    for arg in &args {
        cmd = cmd.arg(arg);
    }
    let wire = cmd.encode();
    if let Ok(Some((Reply::Array(items), used))) = parse(&wire, usize::MAX / 4) {
        assert_eq!(used, wire.len());
        assert_eq!(items.len(), args.len() + 1);
        for (item, arg) in items[1..].iter().zip(&args) {
            assert_eq!(item, &Reply::Bulk(arg.to_vec()));
        }
    } else {
        panic!("an encoded command must parse back");
    }
});
