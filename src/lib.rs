//! A tiny, fast, hard-to-break line-based chat server on the [smol](https://docs.rs/smol) runtime.
//!
//! Clients connect over TCP with anything that sends lines (`nc`, `telnet`, `socat`); each line
//! goes to the others in the sender's room, prefixed by the sender's name. The server runs on
//! the caller's [`smol::Executor`], never prints, and reports through a [`Handle`].
//!
//! # Examples
//!
//! Serve until Ctrl-C would be the binary's job; here the server stops after one exchange:
//!
//! ```
//! use smol::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
//!
//! # fn main() -> std::io::Result<()> {
//! let server = smolchat::Server::bind("127.0.0.1:0", smolchat::Config::default())?;
//! let (addr, handle) = (server.local_addr(), server.handle());
//! let ex = smol::Executor::new();
//! let talk = ex.spawn(async move {
//!     let mut alice = BufReader::new(smol::net::TcpStream::connect(addr).await?);
//!     let mut bob = BufReader::new(smol::net::TcpStream::connect(addr).await?);
//!     let mut line = String::new();
//!     // Read bob's welcome, up to the line that tells him where he is.
//!     while !line.starts_with("*** you are") {
//!         line.clear();
//!         bob.read_line(&mut line).await?;
//!     }
//!     alice.get_mut().write_all(b"hello, bob\n").await?;
//!     loop {
//!         line.clear();
//!         bob.read_line(&mut line).await?;
//!         if line.ends_with(": hello, bob\n") {
//!             break;
//!         }
//!     }
//!     handle.shutdown();
//!     std::io::Result::Ok(())
//! });
//! // Serves until `handle.shutdown()`, then returns.
//! smol::block_on(ex.run(server.run(&ex, std::future::pending())));
//! smol::block_on(talk)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Protocol
//!
//! Plain UTF-8 text lines ending in `\n` (or `\r\n`). Every line a client receives starts with
//! a marker saying what it is, and user text can never imitate another kind:
//!
//! | line | meaning |
//! |---|---|
//! | `alice: hello` | a message in your room |
//! | `* alice waves` | an action (`/me waves`) |
//! | `*** bob joined #lobby` | a server notice or a reply to a command |
//! | `! unknown command /foo; /help lists the commands` | an error, for you only |
//! | `[pm from alice] psst` / `[pm to bob] psst` | a private message, received / sent |
//! | `[history] alice: hello` | a message from before you joined the room |
//!
//! Commands: `/nick NAME`, `/me TEXT`, `/msg NAME TEXT`, `/join ROOM`, `/who`, `/rooms`,
//! `/quit [REASON]`, `/help`; `//TEXT` sends a line starting with `/`. The full description,
//! with every reply and guarantee, is `docs/PROTOCOL.md`.
//!
//! # Layout
//!
//! - `server`: [`Server`] binds, runs the accept loop and the shutdown sequence.
//! - `hub`: the shared state (clients, names, rooms, history) behind one mutex, and delivery.
//! - `outbox`: a client's bounded queue of lines waiting to be written.
//! - `connection`: one client's reader (lines to chat) and writer (outbox to socket).
//! - `framing`, `sanitize`, `protocol`: the pure protocol: bytes to lines, safe text, commands.
//! - `handle`, `event`: the host's view: [`Handle`], [`Event`], [`Stats`].
//! - `config`: [`Config`], every limit with the reason for its default.
//! - `net`: socket options std lacks (listen backlog, keepalive timing).
//! - `cluster` (feature `redis`): the link to Redis that lets several nodes act as one chat.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

// A module of its own in the public API: its types only matter to hosts that run a cluster.
#[cfg(feature = "redis")]
pub mod cluster;
mod config;
mod connection;
mod event;
mod framing;
mod handle;
mod hub;
mod net;
mod outbox;
mod protocol;
mod sanitize;
mod server;

pub use config::{Config, Draft, Filter, Verdict};
pub use event::{Event, LeaveReason, Refusal, Stats};
pub use framing::{Frame, Framer};
pub use handle::{Handle, NotFound, RoomInfo, User};
pub use sanitize::sanitize_into;
pub use server::Server;

// Compiles the README's examples as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
