//! The directory: every joined client by id and by name, and guest numbering. The one place a
//! client's name and room are kept.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::Id;
use crate::outbox::Outbox;
use crate::protocol::CommandError;

/// A joined client, as the hub knows it.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) name: Arc<str>,
    /// The key of its room in [`Rooms`](super::rooms::Rooms).
    pub(super) room: Arc<str>,
    pub(super) addr: SocketAddr,
    pub(super) outbox: Outbox,
    /// Gave the right `/oper` password.
    pub(super) operator: bool,
    /// Its lines go nowhere (`/mute`).
    pub(super) muted: bool,
    /// Wrong `/oper` passwords so far: each doubles the wait for the next answer.
    pub(super) oper_failures: u32,
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
    /// Adds a client under the next free `guestN` name; returns its id and name.
    pub(super) fn register(
        &mut self,
        addr: SocketAddr,
        room: Arc<str>,
        outbox: Outbox,
    ) -> (Id, Arc<str>) {
        let id = self.next_id;
        self.next_id += 1;
        let name: Arc<str> = loop {
            self.last_guest += 1;
            let name = format!("guest{}", self.last_guest);
            if !self.names.contains_key(&name) {
                break name.into();
            }
        };
        self.names.insert(name.to_ascii_lowercase(), id);
        let client = Client {
            name: name.clone(),
            room,
            addr,
            outbox,
            operator: false,
            muted: false,
            oper_failures: 0,
        };
        self.clients.insert(id, client);
        (id, name)
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

    /// Takes a client out; its name is free again.
    pub(super) fn remove(&mut self, id: Id) -> Option<Client> {
        let client = self.clients.remove(&id)?;
        self.names.remove(&client.name.to_ascii_lowercase());
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
        directory.register(
            addr,
            "lobby".into(),
            crate::outbox::testing::outbox(8, 1024).0,
        )
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
}
