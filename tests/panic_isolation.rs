//! A panic while serving one client takes down that client only.

mod common;

use std::io;
use std::sync::Arc;

use common::{config, eventually, TestServer};
use smolchat::{Config, Verdict};

#[test]
fn panic_while_serving_one_client_leaves_the_others_chatting() -> io::Result<()> {
    let server = TestServer::start(Config {
        filter: Some(Arc::new(|draft: &smolchat::Draft<'_>| {
            assert!(draft.text != "boom", "a bug triggered by this line");
            Verdict::Relay
        })),
        ..config()
    });
    smol::block_on(async {
        let mut c = server.clients(3).await?;
        let doomed = c[0].name.clone();
        c[0].send("boom").await?;
        c[1].expect(&format!("*** {doomed} left (internal error)"))
            .await?;
        c[2].expect(&format!("*** {doomed} left (internal error)"))
            .await?;
        c[0].expect_eof().await?;
        eventually("the client's slot is freed", || {
            server.handle.stats().clients == 2
        })
        .await?;

        c[1].send("still here").await?;
        let speaker = c[1].name.clone();
        c[2].expect(&format!("{speaker}: still here")).await?;
        let mut newcomer = server.connect().await?;
        c[1].expect(&format!("*** {} joined #lobby", newcomer.name))
            .await?;
        newcomer.send("me too").await?;
        c[2].until(|l| l.ends_with(": me too")).await?;
        Ok(())
    })
}
