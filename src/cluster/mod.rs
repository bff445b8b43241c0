//! Several smolchat nodes as one chat, through Redis (cargo feature `redis`).
//!
//! This is the link layer: a node's connection to Redis and the cluster state kept there.
//! Each node publishes its rooms' lines to a channel per room and subscribes only to the rooms
//! it has members in; names are claimed cluster-wide with an expiry their node renews;
//! presence is a hash per room and node, kept while the node's heartbeat lasts; history is a
//! list per room, appended in the same step as the publish. docs/CLUSTER.md has the design,
//! every key and channel, the guarantees and the faults.
//!
//! The client speaks RESP2 itself over smol's TCP: no dependency beyond the crate's own.
//!
//! # Layout
//!
//! - `resp`: [`Command`] encoding and the [`Reply`] parser, with a size limit (pure).
//! - `url`: [`RedisUrl`], parsed by hand; the password never shows (pure).
//! - `keys`: every key and channel name, [`NodeId`], the payload formats (pure).
//! - `scripts`: the Lua scripts that make multi-key steps atomic.
//! - `connection`: [`Connection`], one logged-in TCP connection.
//! - `link`: [`Link`], the node's two connections kept alive by one task, and what it
//!   tells the hub ([`Incoming`]).

mod connection;
mod keys;
mod link;
mod resp;
mod scripts;
mod url;

pub use connection::Connection;
pub use keys::NodeId;
pub use link::{Claim, HistoryLine, Incoming, Link, LinkConfig, LinkError, Owner, Reservation};
pub use resp::{parse, Command, Reply, RespError};
pub use url::{Password, RedisUrl, UrlError};
