//! A host application embedding smolchat: its own multi-threaded executor, a log of events, a
//! notice every five seconds, and a graceful shutdown on Ctrl-C.
//!
//! ```sh
//! cargo run --example embed            # then: nc 127.0.0.1 8888
//! ```

use std::time::Duration;

use async_signal::{Signal, Signals};
use futures_lite::StreamExt;
use smol::{Executor, Timer};
use smolchat::{Config, Event, Server};

fn main() -> std::io::Result<()> {
    let server = Server::bind(
        "127.0.0.1:8888",
        Config {
            motd: Some("hosted by the embed example".into()),
            ..Config::default()
        },
    )?;
    let handle = server.handle();
    println!("chat on {}; Ctrl-C to stop", server.local_addr());

    // The host's own executor, on every core: this thread and one more per extra core, which
    // run it until `stop` is dropped.
    let ex = Executor::new();
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let events = handle.subscribe(1024);
    ex.spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                Event::Joined { name, addr } => println!("+ {name} ({addr})"),
                Event::Left { name, reason } => println!("- {name} ({reason})"),
                Event::Message {
                    name, room, text, ..
                } => println!("#{room} <{name}> {text}"),
                other => println!("{other:?}"),
            }
        }
    })
    .detach();

    let ticker = handle.clone();
    ex.spawn(async move {
        loop {
            Timer::after(Duration::from_secs(5)).await;
            let stats = ticker.stats();
            ticker.announce(&format!(
                "{} online, {} lines relayed so far",
                stats.clients, stats.lines_relayed
            ));
        }
    })
    .detach();

    let mut signals = Signals::new([Signal::Int, Signal::Term])?;
    let ctrl_c = async move {
        signals.next().await;
        println!("shutting down");
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|| smol::block_on(ex.run(stopped.recv())));
        }
        smol::block_on(ex.run(server.run(&ex, ctrl_c)));
        drop(stop);
    });
    println!("stopped: {:?}", handle.stats());
    Ok(())
}
