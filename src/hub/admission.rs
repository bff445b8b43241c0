//! Admission: how many connections are open, in all and per address. Where
//! [`Config::max_clients`] and [`Config::max_per_ip`] are enforced.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::event::Refusal;
use crate::Config;

/// Connections counted from admission until their task ends, joined or not.
#[derive(Debug, Default)]
pub(super) struct Admission {
    /// Open connections, including those not yet joined.
    open: usize,
    /// Open connections per [`address_group`].
    per_address: HashMap<IpAddr, usize>,
}

impl Admission {
    /// Counts a new connection, or says why the limits refuse it.
    pub(super) fn admit(&mut self, addr: SocketAddr, config: &Config) -> Result<(), Refusal> {
        let ip = addr.ip().to_canonical();
        let key = address_group(ip);
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

    /// Forgets a connection counted by [`admit`](Self::admit).
    pub(super) fn release(&mut self, addr: SocketAddr) {
        let key = address_group(addr.ip().to_canonical());
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
}

/// What the per-address limit counts by: the IPv4 address, or the IPv6 /64 prefix, since one
/// IPv6 host is usually given a whole /64 and could otherwise take every slot by itself.
fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    #[test]
    fn per_address_limit_groups_ipv6_by_prefix() {
        let group =
            |ip: &str| address_group(ip.parse::<IpAddr>().expect("an address").to_canonical());
        assert_eq!(group("2001:db8:1:2:aaaa::1"), group("2001:db8:1:2:ffff::9"));
        assert_ne!(group("2001:db8:1:2::1"), group("2001:db8:1:3::1"));
        assert_eq!(
            group("192.0.2.7"),
            "192.0.2.7".parse::<IpAddr>().expect("an address")
        );
        assert_eq!(group("::ffff:192.0.2.7"), group("192.0.2.7"));
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
}
