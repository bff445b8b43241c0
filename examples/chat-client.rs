//! A tiny chat client for systems without `nc`: stdin goes to the server, the server to stdout.
//!
//! ```sh
//! cargo run --example chat-client -- 127.0.0.1:8888
//! ```

use futures_lite::{future, io, AsyncReadExt, AsyncWriteExt};
use smol::{net::TcpStream, Unblock};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8888".into());
    smol::block_on(async {
        let stream = TcpStream::connect(&*addr).await?;
        let (mut reader, mut writer) = (stream.clone(), stream);
        let mut stdin = Unblock::new(std::io::stdin());
        let mut stdout = Unblock::new(std::io::stdout());
        let from_server = async {
            let mut buf = vec![0; 4096];
            loop {
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                stdout.write_all(&buf[..n]).await?;
                // Show each line as it arrives, not when a buffer fills.
                stdout.flush().await?;
            }
        };
        let to_server = async { io::copy(&mut stdin, &mut writer).await.map(drop) };
        // Whichever side ends first (the server closes, or stdin ends) ends the client.
        future::or(from_server, to_server).await
    })
}
