//! The cluster link on its own: claim a name, enter a room, publish a line and read it back.
//! Also the program whose size docs/CLUSTER.md compares with the `redis` crate's.
//!
//! ```sh
//! redis-server --port 6399 --save '' --appendonly no &
//! cargo run --features redis --example cluster-link -- redis://127.0.0.1:6399
//! ```

use smolchat::cluster::{Claim, Incoming, Link, LinkConfig, RedisUrl};

fn main() -> std::io::Result<()> {
    let url: RedisUrl = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
        .parse()
        .map_err(std::io::Error::other)?;
    let ex = smol::Executor::new();
    smol::block_on(ex.run(async {
        let (link, incoming) = Link::connect(&ex, url, LinkConfig::default()).await?;
        println!("node {} linked", link.node());
        let claim = link.claim("alice", 1).await;
        println!("claim alice: {claim:?}");
        if claim == Ok(Claim::Claimed) {
            link.enter("lobby", 1, "alice");
            link.synced().await.map_err(std::io::Error::other)?;
            link.publish("lobby", Some(1), "alice: hello\n")
                .map_err(std::io::Error::other)?;
            while let Ok(message) = incoming.recv().await {
                if let Incoming::Room { seq, line, .. } = message {
                    print!("#lobby {seq}: {line}");
                    break;
                }
            }
        }
        link.close().await;
        Ok(())
    }))
}
