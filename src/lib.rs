//! A tiny, fast, hard-to-break line-based chat server on the [smol](https://docs.rs/smol) runtime.
//!
//! Clients connect over TCP with anything that sends lines (`nc`, `telnet`, `socat`); each line
//! goes to the others in the sender's room, prefixed by the sender's name. The server runs on
//! the caller's [`smol::Executor`], never prints, and reports through a [`Handle`]. Built with
//! the `tls` cargo feature, it serves TLS too, beside plain TCP or instead of it ([`Tls`]).
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
//! // Serves, driving `ex`, until `handle.shutdown()`, then returns.
//! smol::block_on(server.run(&ex, std::future::pending()));
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
//! | `[history 14:03] alice: hello` | a message from before you joined the room, and when it was said |
//!
//! Commands: `/nick NAME`, `/me TEXT`, `/msg NAME TEXT`, `/join ROOM`, `/who`, `/rooms`,
//! `/whois NAME`, `/away [MESSAGE]`, `/back`, `/ignore [NAME]`, `/unignore NAME`,
//! `/timestamps on|off`, `/topic [TEXT]`, `/oper PASSWORD`, `/quit [REASON]`, `/help`; `//TEXT`
//! sends a line starting with `/`. Operators (see [`Config::oper_password`]) also have `/kick`,
//! `/ban`, `/unban`, `/bans`, `/mute`, `/unmute` and `/stats`; a private server
//! ([`Config::password`]) wants `/pass PASSWORD` first. The full description, with every reply
//! and guarantee, is `docs/PROTOCOL.md`.
//!
//! # Layout
//!
//! - `server`: [`Server`] binds, runs the accept loop and the shutdown sequence.
//! - `hub`: the shared state behind one mutex, in parts: `directory` (clients, names, away,
//!   ignore lists, operators), `rooms` (members, history, topics, the fan-out), `admission`
//!   (connection limits, address lists, bans), `subscribers`, `counters`.
//! - `outbox`: a client's bounded queue of lines waiting to be written, and its flow control.
//! - `connection`: one client's reader (lines to chat) and writer (outbox to socket).
//! - `auth`: a private server's `/pass` phase before a client joins; password comparison.
//! - `framing`, `sanitize`, `protocol`: the pure protocol: bytes to lines (and answers to telnet),
//!   safe text, commands, and every line the server sends.
//! - `handle`, `event`: the host's view: [`Handle`], [`Stats`], [`Event`].
//! - `config`: [`Config`], every limit with the reason for its default, and its validation.
//! - `cidr`: [`Cidr`], the address ranges of allow and deny lists and bans.
//! - `net`: socket options std lacks (listen backlog, keepalive timing, TCP user timeout).
//! - `tls`: TLS termination (the `tls` feature): certificate loading, handshake, and a pump
//!   that serves a TLS client's connection over a Unix socket pair.
//! - `cluster` (feature `redis`): the link to Redis that lets several nodes act as one chat.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

// A module of its own in the public API: its types only matter to hosts that run a cluster.
#[cfg(feature = "redis")]
pub mod cluster;

mod auth;
mod cidr;
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
mod tls;

pub use cidr::{Cidr, CidrError};
pub use config::{Config, ConfigError, Draft, Filter, Tls, Verdict};
pub use event::{Event, LeaveReason, Refusal};
#[cfg(feature = "redis")]
pub use handle::ClusterStats;
pub use handle::{Ban, BanListFull, Handle, NotFound, RoomInfo, Stats, User};
pub use server::Server;

/// The pure parsers, reachable for the fuzz target only; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::framing::{Frame, Framer};
    pub use crate::sanitize::sanitize_into;
}

// Compiles the README's examples as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
