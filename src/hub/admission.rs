//! Admission: who may connect. Where [`Config::max_clients`] and [`Config::max_per_ip`] are
//! enforced, the address lists [`Config::allow`] and [`Config::deny`] applied, and bans kept.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::Refusal;
use crate::handle::{Ban, BanListFull};
use crate::{Cidr, Config};

/// Connections counted from admission until their task ends, joined or not, and the bans.
#[derive(Debug, Default)]
pub(super) struct Admission {
    /// Open connections, including those not yet joined.
    open: usize,
    /// Open connections per [`Cidr::host_group`].
    per_address: HashMap<Cidr, usize>,
    /// At most [`Config::max_bans`]; expired ones are dropped whenever the list is read.
    bans: Vec<BanEntry>,
    /// Wrong passwords per secret and [`Cidr::host_group`], so that guessing is slow from an
    /// address however many connections it opens. At most [`MAX_GUESSERS`] entries.
    guesses: HashMap<(Secret, Cidr), Guesses>,
}

/// Which password a guess was at: kept apart, so that knowing one (every member of a private
/// server knows `/pass`) does nothing for guesses at the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Secret {
    Pass,
    Oper,
}

/// Wrong passwords from one address, forgotten [`FORGET_GUESSES`] after the last.
#[derive(Debug, Clone, Copy)]
struct Guesses {
    failures: u32,
    last: Instant,
}

/// Addresses whose wrong passwords are remembered at once; bounds the table. Past it, the
/// ones that failed longest ago are forgotten first.
const MAX_GUESSERS: usize = 4096;

/// How long an address's wrong passwords count against it.
const FORGET_GUESSES: Duration = Duration::from_secs(10 * 60);

#[derive(Debug)]
struct BanEntry {
    range: Cidr,
    /// `None`: until lifted or the server restarts.
    until: Option<Instant>,
    reason: Arc<str>,
}

impl Admission {
    /// Counts a new connection, or says why the address lists, bans or limits refuse it.
    pub(super) fn admit(&mut self, addr: SocketAddr, config: &Config) -> Result<(), Refusal> {
        let ip = addr.ip().to_canonical();
        if !allowed(ip, config) {
            return Err(Refusal::NotAllowed);
        }
        if let Some(reason) = self.banned(ip, Instant::now()) {
            return Err(Refusal::Banned(reason));
        }
        let key = Cidr::host_group(ip);
        let from_here = self.per_address.get(&key).copied().unwrap_or(0);
        if self.open >= config.max_clients {
            return Err(Refusal::ServerFull);
        }
        if from_here >= config.max_per_ip && (config.limit_loopback || !ip.is_loopback()) {
            return Err(Refusal::TooManyFromAddress);
        }
        self.open += 1;
        self.per_address.insert(key, from_here + 1);
        Ok(())
    }

    /// Wrong guesses at `secret` from `ip`'s address group that still count.
    pub(super) fn guesses(&mut self, secret: Secret, ip: IpAddr, now: Instant) -> u32 {
        let key = (secret, Cidr::host_group(ip.to_canonical()));
        match self.guesses.get(&key) {
            Some(g) if now.saturating_duration_since(g.last) < FORGET_GUESSES => g.failures,
            Some(_) => {
                self.guesses.remove(&key);
                0
            }
            None => 0,
        }
    }

    /// Records a wrong guess at `secret` from `ip`. A right one clears nothing: the record only
    /// fades, so a right password cannot reset a guesser's wait, nor tell another connection
    /// that it was right.
    pub(super) fn guessed_wrong(&mut self, secret: Secret, ip: IpAddr, now: Instant) {
        let key = (secret, Cidr::host_group(ip.to_canonical()));
        let failures = self.guesses(secret, ip, now).saturating_add(1);
        if self.guesses.len() >= MAX_GUESSERS && !self.guesses.contains_key(&key) {
            let oldest = self
                .guesses
                .iter()
                .min_by_key(|(_, g)| g.last)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.guesses.remove(&oldest);
            }
        }
        self.guesses.insert(
            key,
            Guesses {
                failures,
                last: now,
            },
        );
    }

    /// Forgets a connection counted by [`admit`](Self::admit).
    pub(super) fn release(&mut self, addr: SocketAddr) {
        let key = Cidr::host_group(addr.ip());
        self.open -= 1;
        if let Some(count) = self.per_address.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&key);
            }
        }
    }

    /// Connections open now.
    pub(super) fn open(&self) -> usize {
        self.open
    }

    /// The reason of the ban `ip` is under, if any.
    pub(super) fn banned(&mut self, ip: IpAddr, now: Instant) -> Option<Arc<str>> {
        self.expire(now);
        let ban = self.bans.iter().find(|ban| ban.range.contains(ip))?;
        Some(ban.reason.clone())
    }

    /// Bans a range, replacing any ban on the same range.
    pub(super) fn ban(
        &mut self,
        range: Cidr,
        until: Option<Instant>,
        reason: Arc<str>,
        config: &Config,
    ) -> Result<(), BanListFull> {
        self.expire(Instant::now());
        self.bans.retain(|ban| ban.range != range);
        if self.bans.len() >= config.max_bans {
            return Err(BanListFull(config.max_bans));
        }
        self.bans.push(BanEntry {
            range,
            until,
            reason,
        });
        Ok(())
    }

    /// Lifts the ban on exactly this range; `false` if there was none.
    pub(super) fn unban(&mut self, range: Cidr) -> bool {
        self.expire(Instant::now());
        let before = self.bans.len();
        self.bans.retain(|ban| ban.range != range);
        self.bans.len() < before
    }

    /// The bans in force, by range.
    pub(super) fn bans(&mut self, now: Instant) -> Vec<Ban> {
        self.expire(now);
        let mut bans: Vec<Ban> = self
            .bans
            .iter()
            .map(|ban| Ban {
                range: ban.range,
                remaining: ban.until.map(|until| until.saturating_duration_since(now)),
                reason: ban.reason.clone(),
            })
            .collect();
        bans.sort_unstable_by_key(|ban| ban.range);
        bans
    }

    fn expire(&mut self, now: Instant) {
        self.bans
            .retain(|ban| ban.until.is_none_or(|until| until > now));
    }
}

/// Whether the address lists let `ip` in: never when denied, otherwise when allowed or when no
/// allow list is given.
fn allowed(ip: IpAddr, config: &Config) -> bool {
    !config.deny.iter().any(|net| net.contains(ip))
        && (config.allow.is_empty() || config.allow.iter().any(|net| net.contains(ip)))
}

/// When a ban of `duration` from `now` ends; `None` (never) if that is beyond what `Instant`
/// can hold.
pub(super) fn ban_end(now: Instant, duration: Option<Duration>) -> Option<Instant> {
    duration.and_then(|d| now.checked_add(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    #[test]
    fn limits_refuse_until_a_place_is_released() {
        let config = Config {
            max_clients: 3,
            max_per_ip: 2,
            ..Config::default()
        };
        let mut admission = Admission::default();
        let (a, b) = (addr("192.0.2.1:1000"), addr("192.0.2.2:1000"));
        assert_eq!(admission.admit(a, &config), Ok(()));
        assert_eq!(admission.admit(a, &config), Ok(()));
        assert_eq!(
            admission.admit(a, &config),
            Err(Refusal::TooManyFromAddress)
        );
        assert_eq!(admission.admit(b, &config), Ok(()));
        assert_eq!(admission.admit(b, &config), Err(Refusal::ServerFull));
        admission.release(a);
        assert_eq!(admission.open(), 2);
        assert_eq!(admission.admit(a, &config), Ok(()));
    }

    #[test]
    fn loopback_is_exempt_from_the_per_address_limit_unless_asked() {
        let mut config = Config {
            max_per_ip: 1,
            ..Config::default()
        };
        let local = addr("127.0.0.1:1000");
        let mut admission = Admission::default();
        assert_eq!(admission.admit(local, &config), Ok(()));
        assert_eq!(admission.admit(local, &config), Ok(()));
        config.limit_loopback = true;
        assert_eq!(
            admission.admit(local, &config),
            Err(Refusal::TooManyFromAddress)
        );
    }

    #[test]
    fn per_address_limit_groups_ipv6_by_prefix() {
        let config = Config {
            max_per_ip: 1,
            ..Config::default()
        };
        let mut admission = Admission::default();
        assert_eq!(
            admission.admit(addr("[2001:db8:1:2::1]:1"), &config),
            Ok(())
        );
        assert_eq!(
            admission.admit(addr("[2001:db8:1:2:ffff::9]:1"), &config),
            Err(Refusal::TooManyFromAddress)
        );
        assert_eq!(
            admission.admit(addr("[2001:db8:1:3::1]:1"), &config),
            Ok(())
        );
        assert_eq!(admission.admit(addr("192.0.2.7:1"), &config), Ok(()));
        assert_eq!(
            admission.admit(addr("[::ffff:192.0.2.7]:1"), &config),
            Err(Refusal::TooManyFromAddress)
        );
    }

    #[test]
    fn deny_wins_over_allow_and_an_allow_list_shuts_out_the_rest() {
        let net = |s: &str| s.parse::<Cidr>().expect("a range");
        let config = Config {
            allow: vec![net("192.0.2.0/24"), net("2001:db8::/32")],
            deny: vec![net("192.0.2.128/25")],
            ..Config::default()
        };
        let mut admission = Admission::default();
        assert_eq!(admission.admit(addr("192.0.2.1:1"), &config), Ok(()));
        assert_eq!(admission.admit(addr("[2001:db8::5]:1"), &config), Ok(()));
        for refused in [
            "192.0.2.200:1",
            "198.51.100.1:1",
            "[2001:db9::1]:1",
            "127.0.0.1:1",
        ] {
            assert_eq!(
                admission.admit(addr(refused), &config),
                Err(Refusal::NotAllowed),
                "{refused}"
            );
        }
        assert_eq!(admission.open(), 2);
    }

    #[test]
    fn bans_refuse_their_range_until_they_expire_or_are_lifted() {
        let config = Config {
            max_bans: 2,
            ..Config::default()
        };
        let mut admission = Admission::default();
        let now = Instant::now();
        let host = Cidr::host_group("2001:db8:1:2::7".parse().expect("an address"));
        let soon = ban_end(now, Some(Duration::from_secs(60)));
        assert_eq!(admission.ban(host, soon, "spam".into(), &config), Ok(()));
        assert_eq!(
            admission.admit(addr("[2001:db8:1:2:9::1]:1"), &config),
            Err(Refusal::Banned("spam".into())),
            "the whole /64"
        );
        assert_eq!(
            admission.admit(addr("[2001:db8:1:3::1]:1"), &config),
            Ok(())
        );
        let range: Cidr = "10.0.0.0/8".parse().expect("a range");
        assert_eq!(admission.ban(range, None, "".into(), &config), Ok(()));
        let third: Cidr = "192.0.2.1".parse().expect("a range");
        assert_eq!(
            admission.ban(third, None, "".into(), &config),
            Err(BanListFull(2))
        );
        assert_eq!(
            admission.admit(addr("10.1.2.3:1"), &config),
            Err(Refusal::Banned("".into()))
        );
        let listed: Vec<String> = admission
            .bans(now)
            .iter()
            .map(|ban| format!("{} {:?}", ban.range, ban.remaining))
            .collect();
        assert_eq!(listed, ["10.0.0.0/8 None", "2001:db8:1:2::/64 Some(60s)"]);
        assert!(admission
            .banned("10.9.9.9".parse().expect("ip"), now)
            .is_some());
        let later = now + Duration::from_secs(61);
        assert!(admission
            .banned("2001:db8:1:2::7".parse().expect("ip"), later)
            .is_none());
        assert_eq!(admission.bans(later).len(), 1, "expired bans are gone");
        assert!(admission.unban(range));
        assert!(!admission.unban(range));
        assert_eq!(admission.admit(addr("10.1.2.3:1"), &config), Ok(()));
    }

    #[test]
    fn wrong_passwords_count_per_secret_and_address_group_until_forgotten() {
        let mut admission = Admission::default();
        let now = Instant::now();
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        admission.guessed_wrong(Secret::Oper, ip("2001:db8::1"), now);
        admission.guessed_wrong(Secret::Oper, ip("2001:db8::2"), now);
        assert_eq!(
            admission.guesses(Secret::Oper, ip("2001:db8::99"), now),
            2,
            "one /64"
        );
        assert_eq!(admission.guesses(Secret::Pass, ip("2001:db8::1"), now), 0);
        assert_eq!(admission.guesses(Secret::Oper, ip("192.0.2.1"), now), 0);
        let later = now + FORGET_GUESSES;
        assert_eq!(
            admission.guesses(Secret::Oper, ip("2001:db8::1"), later),
            0,
            "forgotten"
        );
        for i in 0..(MAX_GUESSERS as u32 + 10) {
            admission.guessed_wrong(Secret::Pass, IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(admission.guesses.len() <= MAX_GUESSERS);
    }
}
