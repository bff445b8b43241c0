//! The directory: every joined client by id and by name, and guest numbering. The one place a
//! client's name, room and preferences (away, ignore list, timestamps) are kept.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::Id;
use crate::outbox::Outbox;
use crate::protocol::{CommandError, MAX_IGNORED};

/// Most senders an away client remembers having told its away message. Past it the record
/// starts over (those senders may be told once more), so a client away for weeks on a busy
/// server does not collect the id of everyone who ever wrote to it.
const MAX_TOLD_AWAY: usize = 256;

/// A joined client, as the hub knows it.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) name: Arc<str>,
    /// The key of its room in [`Rooms`](super::rooms::Rooms).
    pub(super) room: Arc<str>,
    pub(super) addr: SocketAddr,
    pub(super) outbox: Outbox,
    /// When it joined, for `/whois`.
    pub(super) connected: Instant,
    /// When it last sent a message, action or private message, for `/whois`'s idle time.
    pub(super) last_active: Instant,
    /// Whether every line it gets starts with `HH:MM ` (`/timestamps`). Its room keeps a copy
    /// beside its outbox so a broadcast looks nothing up; `Hub::set_timestamps` changes both.
    pub(super) timestamps: bool,
    /// Set by `/away`, cleared by `/back`.
    pub(super) away: Option<Away>,
    /// Whom it ignores, by id so that renames change nothing; at most [`MAX_IGNORED`].
    pub(super) ignoring: Vec<Id>,
    /// Who ignores it: its lines skip them. Empty for nearly everyone, so a broadcast of
    /// anyone else's line costs nothing more.
    pub(super) ignored_by: HashSet<Id>,
    /// Gave the right `/oper` password: it may moderate, and sees others' addresses in
    /// `/whois`.
    pub(super) operator: bool,
    /// Its lines go nowhere (`/mute`).
    pub(super) muted: bool,
}

/// A client's away state.
#[derive(Debug)]
pub(super) struct Away {
    /// Sanitized; empty for `/away` without a message.
    pub(super) message: Arc<str>,
    /// Who was already told this away message, so each sender gets it once.
    told: HashSet<Id>,
}

impl Client {
    pub(super) fn new(
        name: Arc<str>,
        room: Arc<str>,
        addr: SocketAddr,
        outbox: Outbox,
        timestamps: bool,
    ) -> Client {
        let now = Instant::now();
        Client {
            name,
            room,
            addr,
            outbox,
            connected: now,
            last_active: now,
            timestamps,
            away: None,
            ignoring: Vec::new(),
            ignored_by: HashSet::new(),
            operator: false,
            muted: false,
        }
    }
}

impl Away {
    pub(super) fn new(message: Arc<str>) -> Away {
        Away {
            message,
            told: HashSet::new(),
        }
    }

    /// Whether `sender`'s private message should get the away message back: the first time
    /// for each sender (see [`MAX_TOLD_AWAY`]).
    pub(super) fn tell(&mut self, sender: Id) -> bool {
        if self.told.len() >= MAX_TOLD_AWAY && !self.told.contains(&sender) {
            self.told.clear();
        }
        self.told.insert(sender)
    }
}

/// Clients by id, and ids by name.
#[derive(Debug, Default)]
pub(super) struct Directory {
    clients: HashMap<Id, Client>,
    /// Lowercased name → client, so names are unique case-insensitively.
    names: HashMap<String, Id>,
    next_id: Id,
    /// The number of the last guest name given out.
    last_guest: u64,
}

impl Directory {
    /// Adds a client under the next free `guestN` name, or under an id and name given out
    /// before (by [`reserve_id`](Self::reserve_id), the name claimed across a cluster) if the
    /// name is free here; returns its id and record.
    pub(super) fn register(
        &mut self,
        addr: SocketAddr,
        room: Arc<str>,
        outbox: Outbox,
        timestamps: bool,
        named: Option<(Id, Arc<str>)>,
    ) -> (Id, &Client) {
        let (id, name) = match named {
            Some((id, name)) if !self.names.contains_key(&name.to_ascii_lowercase()) => (id, name),
            Some((id, _)) => (id, self.free_guest_name()),
            None => (self.reserve_id(), self.free_guest_name()),
        };
        self.names.insert(name.to_ascii_lowercase(), id);
        let client = Client::new(name, room, addr, outbox, timestamps);
        (id, self.clients.entry(id).insert_entry(client).into_mut())
    }

    /// An id no client has had.
    pub(super) fn reserve_id(&mut self) -> Id {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The next `guestN` name nobody here has.
    pub(super) fn free_guest_name(&mut self) -> Arc<str> {
        loop {
            self.last_guest += 1;
            let name = format!("guest{}", self.last_guest);
            if !self.names.contains_key(&name) {
                break name.into();
            }
        }
    }

    pub(super) fn get(&self, id: Id) -> Option<&Client> {
        self.clients.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: Id) -> Option<&mut Client> {
        self.clients.get_mut(&id)
    }

    /// Looks a client up by name, case-insensitively.
    pub(super) fn find(&self, name: &str) -> Option<(Id, &Client)> {
        let id = *self.names.get(&name.to_ascii_lowercase())?;
        self.clients.get(&id).map(|c| (id, c))
    }

    /// Gives a client a new name (already checked against the name rules); returns the old one.
    pub(super) fn rename(&mut self, id: Id, new: &str) -> Result<Arc<str>, CommandError> {
        let key = new.to_ascii_lowercase();
        if self.names.get(&key).is_some_and(|&other| other != id) {
            return Err(CommandError::NameTaken(new.into()));
        }
        let client = self
            .clients
            .get_mut(&id)
            .ok_or_else(|| CommandError::NoSuchUser(new.into()))?;
        if *client.name == *new {
            return Err(CommandError::AlreadyNamed(new.into()));
        }
        let old = std::mem::replace(&mut client.name, new.into());
        self.names.remove(&old.to_ascii_lowercase());
        self.names.insert(key, id);
        Ok(old)
    }

    /// Makes `id` ignore the client named `name`; returns that client's name as it is spelled.
    pub(super) fn ignore(&mut self, id: Id, name: &str) -> Result<Arc<str>, CommandError> {
        let (target, client) = self
            .find(name)
            .ok_or_else(|| CommandError::NoSuchUser(name.into()))?;
        let name = client.name.clone();
        if target == id {
            return Err(CommandError::IgnoreSelf);
        }
        let ignoring = &mut self
            .clients
            .get_mut(&id)
            .ok_or_else(|| CommandError::NoSuchUser((*name).into()))?
            .ignoring;
        if ignoring.contains(&target) {
            return Err(CommandError::AlreadyIgnoring(name));
        }
        if ignoring.len() >= MAX_IGNORED {
            return Err(CommandError::IgnoringTooMany);
        }
        ignoring.push(target);
        if let Some(client) = self.clients.get_mut(&target) {
            client.ignored_by.insert(id);
        }
        Ok(name)
    }

    /// Undoes [`ignore`](Self::ignore); returns the name as it is spelled.
    pub(super) fn unignore(&mut self, id: Id, name: &str) -> Result<Arc<str>, CommandError> {
        let (target, client) = self
            .find(name)
            .ok_or_else(|| CommandError::NoSuchUser(name.into()))?;
        let name = client.name.clone();
        let ignoring = &mut self
            .clients
            .get_mut(&id)
            .ok_or_else(|| CommandError::NoSuchUser((*name).into()))?
            .ignoring;
        let at = ignoring
            .iter()
            .position(|&other| other == target)
            .ok_or_else(|| CommandError::NotIgnoring(name.clone()))?;
        ignoring.remove(at);
        if let Some(client) = self.clients.get_mut(&target) {
            client.ignored_by.remove(&id);
        }
        Ok(name)
    }

    /// The names of those `id` ignores.
    pub(super) fn ignored(&self, id: Id) -> Vec<&str> {
        self.get(id)
            .into_iter()
            .flat_map(|client| &client.ignoring)
            .filter_map(|other| self.get(*other))
            .map(|other| &*other.name)
            .collect()
    }

    /// Takes a client out; its name is free again, and it drops out of every ignore list.
    pub(super) fn remove(&mut self, id: Id) -> Option<Client> {
        let client = self.clients.remove(&id)?;
        self.names.remove(&client.name.to_ascii_lowercase());
        for other in &client.ignoring {
            if let Some(other) = self.clients.get_mut(other) {
                other.ignored_by.remove(&id);
            }
        }
        for other in &client.ignored_by {
            if let Some(other) = self.clients.get_mut(other) {
                other.ignoring.retain(|&ignored| ignored != id);
            }
        }
        Some(client)
    }

    /// Takes every client out at once.
    pub(super) fn drain(&mut self) -> Vec<Client> {
        self.names.clear();
        self.clients.drain().map(|(_, client)| client).collect()
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.clients.keys().copied()
    }

    pub(super) fn clients(&self) -> impl Iterator<Item = &Client> {
        self.clients.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(directory: &mut Directory) -> (Id, Arc<str>) {
        let addr = "192.0.2.1:1000".parse().expect("an address");
        let outbox = crate::outbox::testing::outbox(8, 1024).0;
        let (id, client) = directory.register(addr, "lobby".into(), outbox, false, None);
        (id, client.name.clone())
    }

    #[test]
    fn guests_get_the_next_free_number() {
        let mut directory = Directory::default();
        let (first, _) = register(&mut directory);
        directory.rename(first, "guest2").expect("free");
        let (_, second) = register(&mut directory);
        assert_eq!(&*second, "guest3", "guest2 is taken, so skipped");
    }

    #[test]
    fn names_are_unique_ignoring_case_and_freed_on_rename_and_removal() {
        let mut directory = Directory::default();
        let (alice, _) = register(&mut directory);
        let (bob, _) = register(&mut directory);
        assert_eq!(directory.rename(alice, "Alice").as_deref(), Ok("guest1"));
        assert_eq!(
            directory.rename(bob, "ALICE"),
            Err(CommandError::NameTaken("ALICE".into()))
        );
        assert_eq!(
            directory.rename(alice, "Alice"),
            Err(CommandError::AlreadyNamed("Alice".into()))
        );
        assert_eq!(directory.rename(alice, "alice").as_deref(), Ok("Alice"));
        assert_eq!(directory.find("GUEST1").map(|(id, _)| id), None);
        assert_eq!(directory.find("ALICE").map(|(id, _)| id), Some(alice));
        directory.remove(alice);
        assert_eq!(directory.rename(bob, "alice").as_deref(), Ok("guest2"));
    }

    #[test]
    fn ignoring_is_by_id_bounded_and_undone_when_either_side_leaves() {
        let mut directory = Directory::default();
        let (alice, _) = register(&mut directory);
        let (bob, _) = register(&mut directory);
        assert_eq!(directory.ignore(alice, "GUEST2").as_deref(), Ok("guest2"));
        assert_eq!(
            directory.ignore(alice, "guest2"),
            Err(CommandError::AlreadyIgnoring("guest2".into()))
        );
        assert_eq!(
            directory.ignore(alice, "guest1"),
            Err(CommandError::IgnoreSelf)
        );
        directory.rename(bob, "bob").expect("free");
        assert_eq!(directory.ignored(alice), ["bob"]);
        assert!(directory
            .get(bob)
            .is_some_and(|b| b.ignored_by.contains(&alice)));
        assert_eq!(
            directory.unignore(bob, "guest1"),
            Err(CommandError::NotIgnoring("guest1".into()))
        );

        let others: Vec<(Id, Arc<str>)> =
            (0..MAX_IGNORED).map(|_| register(&mut directory)).collect();
        for (_, name) in &others[1..] {
            directory.ignore(alice, name).expect("within the bound");
        }
        assert_eq!(
            directory.ignore(alice, &others[0].1),
            Err(CommandError::IgnoringTooMany)
        );

        directory.remove(bob);
        assert_eq!(directory.ignored(alice).len(), MAX_IGNORED - 1);
        assert!(directory
            .get(alice)
            .is_some_and(|a| !a.ignoring.contains(&bob)));
        directory.remove(alice);
        assert!(others
            .iter()
            .all(|(o, _)| directory.get(*o).is_some_and(|c| c.ignored_by.is_empty())));
    }

    #[test]
    fn an_away_message_is_told_once_per_sender() {
        let mut away = Away::new("lunch".into());
        assert!(away.tell(1));
        assert!(!away.tell(1));
        assert!(away.tell(2));
        for sender in 3..(MAX_TOLD_AWAY as Id + 2) {
            assert!(away.tell(sender));
        }
        assert!(away.told.len() <= MAX_TOLD_AWAY, "bounded");
    }
}
