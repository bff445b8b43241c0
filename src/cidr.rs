//! Address ranges: `192.0.2.0/24`, `2001:db8::/32`, or one address. Used by
//! [`Config::allow`](crate::Config::allow), [`Config::deny`](crate::Config::deny) and bans.

use std::error::Error;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A range of IP addresses: a network address and a prefix length.
///
/// Written `ADDRESS/PREFIX` or as a bare address (the whole-length prefix). Host bits after the
/// prefix are cleared, so `192.0.2.7/24` is `192.0.2.0/24`. An IPv4 range also matches the
/// IPv4-mapped IPv6 form of its addresses (`::ffff:192.0.2.7`), as dual-stack listeners see them.
///
/// # Examples
///
/// ```
/// use smolchat::Cidr;
///
/// let net: Cidr = "192.0.2.7/24".parse()?;
/// assert_eq!(net.to_string(), "192.0.2.0/24");
/// assert!(net.contains("192.0.2.200".parse()?));
/// assert!(!net.contains("198.51.100.1".parse()?));
/// let host: Cidr = "2001:db8::1".parse()?;
/// assert_eq!((host.to_string(), host.prefix()), ("2001:db8::1".to_string(), 128));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The range of `addr`'s first `prefix` bits, or `None` if `prefix` is longer than the
    /// address (32 for IPv4, 128 for IPv6). An IPv4-mapped IPv6 address counts as IPv4.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::Ipv4Addr;
    ///
    /// let net = smolchat::Cidr::new(Ipv4Addr::new(10, 1, 2, 3).into(), 8).expect("a valid prefix");
    /// assert_eq!(net.to_string(), "10.0.0.0/8");
    /// assert!(smolchat::Cidr::new(Ipv4Addr::LOCALHOST.into(), 33).is_none());
    /// ```
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let addr = match addr.to_canonical() {
            IpAddr::V4(v4) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
            _ => return None,
        };
        Some(Cidr { addr, prefix })
    }

    /// The range a ban on `addr` covers: the address itself for IPv4, its /64 for IPv6, since
    /// one IPv6 host is usually given a whole /64 and could otherwise step around a ban.
    ///
    /// # Examples
    ///
    /// ```
    /// let ip = "2001:db8:1:2:aaaa::1".parse()?;
    /// assert_eq!(smolchat::Cidr::host_group(ip).to_string(), "2001:db8:1:2::/64");
    /// # Ok::<(), std::net::AddrParseError>(())
    /// ```
    pub fn host_group(addr: IpAddr) -> Cidr {
        let ip = addr.to_canonical();
        let prefix = if ip.is_ipv4() { 32 } else { 64 };
        Cidr::new(ip, prefix).unwrap_or(Cidr { addr: ip, prefix })
    }

    /// The network address (host bits cleared).
    ///
    /// # Examples
    ///
    /// ```
    /// let net: smolchat::Cidr = "10.9.8.7/16".parse()?;
    /// assert_eq!(net.addr().to_string(), "10.9.0.0");
    /// # Ok::<(), smolchat::CidrError>(())
    /// ```
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// How many leading bits the range fixes.
    ///
    /// # Examples
    ///
    /// ```
    /// let net: smolchat::Cidr = "10.0.0.0/8".parse()?;
    /// assert_eq!(net.prefix(), 8);
    /// # Ok::<(), smolchat::CidrError>(())
    /// ```
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the range.
    ///
    /// # Examples
    ///
    /// ```
    /// let lan: smolchat::Cidr = "fd00::/8".parse()?;
    /// assert!(lan.contains("fd12:3456::1".parse()?));
    /// assert!(!lan.contains("192.0.2.1".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn contains(&self, ip: IpAddr) -> bool {
        Cidr::new(ip, self.prefix).is_some_and(|net| net.addr == self.addr)
    }

    /// Whether the range is a single address.
    fn is_host(&self) -> bool {
        self.prefix == if self.addr.is_ipv4() { 32 } else { 128 }
    }
}

impl fmt::Display for Cidr {
    /// A single address is shown bare, a wider range as `ADDRESS/PREFIX`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let error = || CidrError(s.into());
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| error())?;
        let full = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            // Digits only: `u8::from_str` would also take a sign.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| error())?
            }
            Some(_) => return Err(error()),
            None => full,
        };
        // A mapped address's prefix counts IPv6 bits: `::ffff:192.0.2.0/120` is `192.0.2.0/24`.
        let prefix = match (addr, addr.to_canonical()) {
            (IpAddr::V6(_), IpAddr::V4(_)) if prefix >= 96 => prefix - 96,
            (IpAddr::V6(_), IpAddr::V4(_)) if prefix < 96 => return Err(error()),
            _ => prefix,
        };
        Cidr::new(addr, prefix).ok_or_else(error)
    }
}

/// Text that is not an address range; holds the text.
///
/// # Examples
///
/// ```
/// let error = "10.0.0.0/33".parse::<smolchat::Cidr>().unwrap_err();
/// assert_eq!(error.to_string(), "invalid address range \"10.0.0.0/33\": expected ADDRESS or ADDRESS/PREFIX");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(Box<str>);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid address range \"{}\": expected ADDRESS or ADDRESS/PREFIX",
            self.0
        )
    }
}

impl Error for CidrError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn parses_ipv4_ranges_and_clears_host_bits() {
        assert_eq!(cidr("192.0.2.7/24").to_string(), "192.0.2.0/24");
        assert_eq!(cidr("192.0.2.7").to_string(), "192.0.2.7");
        assert_eq!(cidr("192.0.2.7/32").to_string(), "192.0.2.7");
        assert_eq!(cidr("10.200.0.1/9").to_string(), "10.128.0.0/9");
        assert_eq!(cidr("1.2.3.4/0").to_string(), "0.0.0.0/0");
    }

    #[test]
    fn parses_ipv6_ranges_and_mapped_ipv4() {
        assert_eq!(
            cidr("2001:db8:1:2:3::9/64").to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(cidr("2001:db8::1").prefix(), 128);
        assert_eq!(cidr("::/0").to_string(), "::/0");
        assert_eq!(cidr("2001:db8::ff/121").to_string(), "2001:db8::80/121");
        assert_eq!(cidr("::ffff:192.0.2.9/120").to_string(), "192.0.2.0/24");
        assert_eq!(cidr("::ffff:192.0.2.9").to_string(), "192.0.2.9");
    }

    #[test]
    fn rejects_malformed_ranges() {
        for bad in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/0008",
            "10.0.0.0/8/8",
            "10.0.0/8",
            "2001:db8::/129",
            "::ffff:1.2.3.4/95",
            "example.com",
            "10.0.0.0 /8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn contains_matches_by_prefix_and_family() {
        let net = cidr("192.0.2.0/24");
        assert!(net.contains(ip("192.0.2.0")));
        assert!(net.contains(ip("192.0.2.255")));
        assert!(net.contains(ip("::ffff:192.0.2.1")), "dual-stack form");
        assert!(!net.contains(ip("192.0.3.0")));
        assert!(
            !net.contains(ip("::c000:201")),
            "IPv4-compatible is not IPv4"
        );
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.5")));
        assert!(!cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(!cidr("::/0").contains(ip("192.0.2.1")));
        let v6 = cidr("2001:db8:1:2::/64");
        assert!(v6.contains(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert!(!v6.contains(ip("2001:db8:1:3::")));
        assert!(cidr("127.0.0.2").contains(ip("127.0.0.2")));
        assert!(!cidr("127.0.0.2").contains(ip("127.0.0.1")));
    }

    #[test]
    fn host_groups_are_the_address_or_its_slash_64() {
        assert_eq!(Cidr::host_group(ip("192.0.2.7")).to_string(), "192.0.2.7");
        assert_eq!(
            Cidr::host_group(ip("::ffff:192.0.2.7")),
            Cidr::host_group(ip("192.0.2.7"))
        );
        assert_eq!(
            Cidr::host_group(ip("2001:db8:1:2:aaaa::1")),
            Cidr::host_group(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Cidr::host_group(ip("2001:db8:1:2::1")),
            Cidr::host_group(ip("2001:db8:1:3::1"))
        );
    }
}
