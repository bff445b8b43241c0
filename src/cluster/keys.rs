//! Every Redis key and channel smolchat uses, the node id, and the payloads on the channels.
//! Pure code, no sockets.
//!
//! Room keys and names are `[a-z0-9_-]` (names lowercased for their key), node ids are hex, so
//! `:` never appears inside a part and no two kinds of key can collide.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Channel every node announces itself on (`hello <node>`, `bye <node>`).
pub(crate) const CONTROL_CHANNEL: &str = "smolchat:nodes";
/// Set of rooms that have members on some node.
pub(crate) const ROOMS_KEY: &str = "smolchat:rooms";
/// Counter handing out guest numbers, so `guestN` is unique across nodes.
pub(crate) const GUEST_KEY: &str = "smolchat:guests";

/// Channel of a room's lines: only nodes with members in the room subscribe.
pub(crate) fn room_channel(room: &str) -> String {
    format!("smolchat:room:{room}")
}

/// Channel of one node: private messages for its users.
pub(crate) fn node_channel(node: &NodeId) -> String {
    format!("smolchat:node:{node}")
}

/// A claimed name: `<node>:<id>:<Name>`, expiring unless its node renews it.
pub(crate) fn name_key(name: &str) -> String {
    format!("smolchat:name:{}", name.to_ascii_lowercase())
}

/// A room's last lines, oldest first.
pub(crate) fn history_key(room: &str) -> String {
    format!("smolchat:history:{room}")
}

/// A room's line counter: each published line gets the next number.
pub(crate) fn seq_key(room: &str) -> String {
    format!("smolchat:seq:{room}")
}

/// One node's members of one room: a hash of connection id to name, expiring unless renewed.
pub(crate) fn presence_key(room: &str, node: &NodeId) -> String {
    format!("smolchat:presence:{room}:{node}")
}

/// Set of the nodes with members in a room.
pub(crate) fn room_nodes_key(room: &str) -> String {
    format!("smolchat:room-nodes:{room}")
}

/// Exists while a node is alive: it sets it with an expiry at each heartbeat.
pub(crate) fn alive_key(node: &NodeId) -> String {
    format!("smolchat:alive:{node}")
}

/// A node of the cluster: 16 hex digits, random per process.
///
/// # Examples
///
/// ```
/// use smolchat::cluster::NodeId;
///
/// let (a, b) = (NodeId::random(), NodeId::random());
/// assert_ne!(a, b);
/// assert_eq!(a.to_string().len(), 16);
/// assert_eq!(a.to_string().parse::<NodeId>(), Ok(a));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// A new id: 64 bits from the standard library's per-process random hasher keys, mixed with
    /// the time and process id so two processes started at once still differ.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_ne!(smolchat::cluster::NodeId::random(), smolchat::cluster::NodeId::random());
    /// ```
    pub fn random() -> NodeId {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        hasher.write_u128(nanos);
        NodeId(format!("{:016x}", hasher.finish()).into())
    }

    /// The id as text.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(smolchat::cluster::NodeId::random().as_str().len(), 16);
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = ();

    /// Accepts exactly 16 lowercase hex digits, the form [`NodeId::random`] makes.
    fn from_str(text: &str) -> Result<NodeId, ()> {
        let valid =
            text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| NodeId(text.into())).ok_or(())
    }
}

/// A room line as published, and as the history keeps it: `<node> <sender id or -> <seq>
/// <line>`; the publish script builds it.
pub(crate) fn parse_room_payload(payload: &str) -> Option<(NodeId, Option<u64>, u64, &str)> {
    let (node, rest) = payload.split_once(' ')?;
    let (sender, rest) = rest.split_once(' ')?;
    let sender = match sender {
        "-" => None,
        id => Some(id.parse().ok()?),
    };
    let (seq, line) = rest.split_once(' ')?;
    Some((node.parse().ok()?, sender, seq.parse().ok()?, line))
}

/// A claimed name's value: `<node>:<id>:<Name>`.
pub(crate) fn name_value(node: &NodeId, id: u64, name: &str) -> String {
    format!("{node}:{id}:{name}")
}

/// Splits a claimed name's value.
pub(crate) fn parse_name_value(value: &str) -> Option<(NodeId, u64, &str)> {
    let mut parts = value.splitn(3, ':');
    let node = parts.next()?.parse().ok()?;
    let id = parts.next()?.parse().ok()?;
    Some((node, id, parts.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        "00112233445566ff".parse().expect("a node id")
    }

    #[test]
    fn room_payloads_round_trip_lines_with_spaces() {
        let payload = format!("{} 42 9 alice: a b  c\n", node());
        assert_eq!(
            parse_room_payload(&payload),
            Some((node(), Some(42), 9, "alice: a b  c\n"))
        );
        let payload = format!("{} - 10 *** bob joined #lobby\n", node());
        assert_eq!(
            parse_room_payload(&payload),
            Some((node(), None, 10, "*** bob joined #lobby\n"))
        );
        for bad in [
            "",
            "x",
            "nothex0000000000 - 1 x",
            "00112233445566ff x 1 y",
            "00112233445566ff - x y",
        ] {
            assert_eq!(parse_room_payload(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn name_values_round_trip() {
        let value = name_value(&node(), 7, "Alice");
        assert_eq!(value, "00112233445566ff:7:Alice");
        assert_eq!(parse_name_value(&value), Some((node(), 7, "Alice")));
        assert_eq!(parse_name_value("00112233445566ff:x:Alice"), None);
    }

    #[test]
    fn names_share_one_key_whatever_their_case() {
        assert_eq!(name_key("Alice"), name_key("aLICE"));
        assert_eq!(name_key("Alice"), "smolchat:name:alice");
    }

    #[test]
    fn node_ids_are_strict_hex() {
        for bad in ["", "0011223344556", "00112233445566FF", "00112233445566gg"] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad:?}");
        }
    }
}
