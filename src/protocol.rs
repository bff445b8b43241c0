//! The wire protocol: what a client's line means, and how server lines look.
//!
//! Every line a client receives starts with a marker that says what it is (see
//! `docs/PROTOCOL.md`). Names are restricted to `[A-Za-z0-9_-]`, so a user's line `name: text`
//! can never begin like a server line (`*** `, `! `, `* `, `[`).

use std::fmt;
use std::sync::Arc;

/// Longest name or room name, in characters.
pub(crate) const MAX_NAME: usize = 16;

/// Names nobody may take, so nobody can pass for the server or its staff.
const RESERVED: &[&str] = &[
    "server", "smolchat", "admin", "operator", "system", "root", "history", "pm",
];

/// One line from a client, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Input<'a> {
    /// Nothing to do (an empty or blank line).
    Empty,
    /// A chat line for the room.
    Say(&'a str),
    Me(&'a str),
    Nick(&'a str),
    Msg(&'a str, &'a str),
    Join(&'a str),
    Who,
    Rooms,
    Help,
    Quit(Option<&'a str>),
}

/// Parses a sanitized line. Errors are the text of the error line to send back.
pub(crate) fn parse(line: &str) -> Result<Input<'_>, String> {
    if line.trim().is_empty() {
        return Ok(Input::Empty);
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Input::Say(line));
    };
    if command.starts_with('/') {
        return Ok(Input::Say(command));
    }
    let (word, rest) = command.split_once(' ').unwrap_or((command, ""));
    let rest = rest.trim();
    let arg = |usage: &str| {
        if rest.is_empty() {
            Err(format!("usage: {usage}"))
        } else {
            Ok(rest)
        }
    };
    let lower = word.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "help" => Input::Help,
        "who" => Input::Who,
        "rooms" => Input::Rooms,
        "nick" => Input::Nick(arg("/nick NAME")?),
        "me" => Input::Me(arg("/me TEXT")?),
        "join" => Input::Join(arg("/join ROOM")?),
        "quit" => Input::Quit(Some(rest).filter(|r| !r.is_empty())),
        "msg" => {
            let (to, text) = arg("/msg NAME TEXT")?
                .split_once(' ')
                .ok_or("usage: /msg NAME TEXT")?;
            Input::Msg(to, text.trim())
        }
        _ => return Err(format!("unknown command /{word}; /help lists the commands")),
    })
}

/// Why a name or room name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameError {
    Invalid,
    Reserved,
}

/// Checks the shape of a name: 1–16 characters from `[A-Za-z0-9_-]`, not reserved.
pub(crate) fn check_name(name: &str) -> Result<(), NameError> {
    let valid = (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(NameError::Invalid);
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(NameError::Reserved);
    }
    Ok(())
}

/// Checks a room name (an optional leading `#`, then the name rules) and returns its key.
pub(crate) fn room_key(room: &str) -> Result<String, NameError> {
    let room = room.strip_prefix('#').unwrap_or(room);
    match check_name(room) {
        Err(NameError::Invalid) => Err(NameError::Invalid),
        // Reserved words are only about passing for someone; a room may be called anything.
        _ => Ok(room.to_ascii_lowercase()),
    }
}

/// The `/help` reply.
pub(crate) const HELP: &str = "\
*** commands:
***   /nick NAME       change your name (1-16 letters, digits, _ or -)
***   /me TEXT         send an action: * NAME TEXT
***   /msg NAME TEXT   send a private message
***   /join ROOM       leave your room and enter ROOM (created if new)
***   /who             list the users in your room
***   /rooms           list the rooms and their sizes
***   /quit [REASON]   leave the chat
***   /help            show this list
***   //TEXT           send a line that starts with /
";

/// A server notice line: `*** text`.
pub(crate) fn notice(text: impl fmt::Display) -> Arc<str> {
    format!("*** {text}\n").into()
}

/// An error line addressed to one client: `! text`.
pub(crate) fn error(text: impl fmt::Display) -> Arc<str> {
    format!("! {text}\n").into()
}

/// Builds a relayed line from a fixed prefix and sanitized user text, in one allocation.
pub(crate) fn relay(parts: &[&str], text: &str) -> Arc<str> {
    let mut line =
        String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + text.len() + 1);
    parts.iter().for_each(|p| line.push_str(p));
    line.push_str(text);
    line.push('\n');
    line.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse("hello"), Ok(Input::Say("hello")));
        assert_eq!(parse("  "), Ok(Input::Empty));
        assert_eq!(parse("//etc/passwd"), Ok(Input::Say("/etc/passwd")));
        assert_eq!(parse("/ME waves"), Ok(Input::Me("waves")));
        assert_eq!(
            parse("/msg bob hi there"),
            Ok(Input::Msg("bob", "hi there"))
        );
        assert_eq!(parse("/quit"), Ok(Input::Quit(None)));
        assert_eq!(
            parse("/quit  gone fishing "),
            Ok(Input::Quit(Some("gone fishing")))
        );
        assert_eq!(parse("/join #rust"), Ok(Input::Join("#rust")));
        assert_eq!(parse("/msg bob"), Err("usage: /msg NAME TEXT".into()));
        assert_eq!(parse("/nick"), Err("usage: /nick NAME".into()));
        assert_eq!(
            parse("/dance now"),
            Err("unknown command /dance; /help lists the commands".into())
        );
    }

    #[test]
    fn checks_names() {
        assert_eq!(check_name("alice_B-2"), Ok(()));
        assert_eq!(check_name("abcdefghijklmnop"), Ok(()));
        assert_eq!(check_name("abcdefghijklmnopq"), Err(NameError::Invalid));
        assert_eq!(check_name(""), Err(NameError::Invalid));
        assert_eq!(check_name("a b"), Err(NameError::Invalid));
        assert_eq!(check_name("émile"), Err(NameError::Invalid));
        assert_eq!(check_name("Server"), Err(NameError::Reserved));
        assert_eq!(room_key("#Rust"), Ok("rust".into()));
        assert_eq!(room_key("#"), Err(NameError::Invalid));
        assert_eq!(room_key("a room"), Err(NameError::Invalid));
    }
}
