//! `redis://[user:password@]HOST[:PORT][/DB]`, parsed by hand. Pure code, no sockets.

use std::fmt;
use std::str::FromStr;

/// Where Redis is and how to log in; the password never appears in `Debug` or `Display`.
///
/// # Examples
///
/// ```
/// use smolchat::cluster::RedisUrl;
///
/// let url: RedisUrl = "redis://chat:s3cret@127.0.0.1:6380/2".parse()?;
/// assert_eq!((url.host.as_str(), url.port, url.db), ("127.0.0.1", 6380, 2));
/// assert_eq!(url.user.as_deref(), Some("chat"));
/// assert_eq!(url.to_string(), "redis://chat:***@127.0.0.1:6380/2");
/// assert!(!format!("{url:?}").contains("s3cret"));
/// # Ok::<(), smolchat::cluster::UrlError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// A host name or an IP literal (IPv6 without its brackets).
    pub host: String,
    /// TCP port (default 6379).
    pub port: u16,
    /// ACL user for `AUTH user password`; `None` with a password means `AUTH password`, and a
    /// user without a password logs in as an ACL `nopass` user.
    pub user: Option<String>,
    /// Password, if any: sent once in `AUTH`, never shown.
    pub password: Option<Password>,
    /// Database selected with `SELECT` (default 0).
    pub db: u32,
}

/// A secret that formats as `***`.
///
/// # Examples
///
/// ```
/// let password = smolchat::cluster::Password::new("s3cret");
/// assert_eq!(format!("{password:?} {password}"), "*** ***");
/// assert_eq!(password.expose(), "s3cret");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    ///
    /// # Examples
    ///
    /// ```
    /// let _ = smolchat::cluster::Password::new("s3cret");
    /// ```
    pub fn new(secret: impl Into<String>) -> Password {
        Password(secret.into())
    }

    /// The secret itself, for the one place that sends it.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(smolchat::cluster::Password::new("pw").expose(), "pw");
    /// ```
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a Redis URL was refused; the message never quotes the URL, which may hold a password.
///
/// # Examples
///
/// ```
/// use smolchat::cluster::{RedisUrl, UrlError};
///
/// assert_eq!("http://x".parse::<RedisUrl>(), Err(UrlError::Scheme));
/// assert_eq!(UrlError::Port.to_string(), "the port must be a number from 1 to 65535");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlError {
    /// It does not start with `redis://`.
    Scheme,
    /// No host, or a malformed one.
    Host,
    /// The port is not 1–65535.
    Port,
    /// The database is not a number.
    Db,
    /// A `%` escape in the user or password is not two hex digits of UTF-8.
    Escape,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlError::Scheme => "a redis URL starts with redis://",
            UrlError::Host => "a redis URL needs a host: redis://HOST:PORT",
            UrlError::Port => "the port must be a number from 1 to 65535",
            UrlError::Db => "the database after / must be a number",
            UrlError::Escape => "a % escape in the user or password is invalid",
        })
    }
}

impl std::error::Error for UrlError {}

impl FromStr for RedisUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<RedisUrl, UrlError> {
        let rest = url.strip_prefix("redis://").ok_or(UrlError::Scheme)?;
        let (authority, db) = match rest.split_once('/') {
            Some((authority, "")) => (authority, 0),
            Some((authority, db)) => (authority, db.parse().map_err(|_| UrlError::Db)?),
            None => (rest, 0),
        };
        // The password may contain `@`; the host never does.
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = info.split_once(':').unwrap_or((info, ""));
                let user = Some(unescape(user)?).filter(|u| !u.is_empty());
                let password = Some(unescape(password)?)
                    .filter(|p| !p.is_empty())
                    .map(Password);
                (user, password)
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(UrlError::Host)?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or(UrlError::Port)?)),
            }
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(UrlError::Host);
        }
        let port = match port {
            None => 6379,
            Some(port) => port
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or(UrlError::Port)?,
        };
        Ok(RedisUrl {
            host: host.to_owned(),
            port,
            user,
            password,
            db,
        })
    }
}

/// Decodes `%XX` escapes, so a password may hold `:`, `@` or `/`.
fn unescape(text: &str) -> Result<String, UrlError> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail.get(..2).ok_or(UrlError::Escape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| UrlError::Escape)?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| UrlError::Escape)?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| UrlError::Escape)
}

impl fmt::Display for RedisUrl {
    /// The URL with the password as `***`, fit for a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis://")?;
        match (&self.user, &self.password) {
            (Some(user), Some(_)) => write!(f, "{user}:***@")?,
            (Some(user), None) => write!(f, "{user}@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (None, None) => {}
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        write!(f, ":{}/{}", self.port, self.db)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("db", &self.db)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> RedisUrl {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn host_port_and_db() {
        let u = url("redis://127.0.0.1:6380/3");
        assert_eq!((u.host.as_str(), u.port, u.db), ("127.0.0.1", 6380, 3));
        assert_eq!((u.user, u.password), (None, None));
        let u = url("redis://cache.example");
        assert_eq!((u.host.as_str(), u.port, u.db), ("cache.example", 6379, 0));
        assert_eq!(url("redis://h:1/").db, 0);
    }

    #[test]
    fn ipv6_literals_in_brackets() {
        let u = url("redis://[::1]:7000/1");
        assert_eq!((u.host.as_str(), u.port, u.db), ("::1", 7000, 1));
        assert_eq!(url("redis://[::1]").port, 6379);
        assert_eq!(u.to_string(), "redis://[::1]:7000/1");
    }

    #[test]
    fn user_and_password_with_escapes() {
        let u = url("redis://alice:p%40ss:w@rd@10.0.0.1:6379");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_ref().map(Password::expose), Some("p@ss:w@rd"));
        assert_eq!(u.host, "10.0.0.1");
        let u = url("redis://:only@h:1");
        assert_eq!(u.user, None);
        assert_eq!(u.password.as_ref().map(Password::expose), Some("only"));
        assert_eq!(u.to_string(), "redis://:***@h:1/0");
    }

    #[test]
    fn the_password_never_shows() {
        let u = url("redis://alice:hunter2@h:1/0");
        for shown in [format!("{u}"), format!("{u:?}"), format!("{u:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
    }

    #[test]
    fn malformed_urls() {
        for (text, err) in [
            ("http://h:1", UrlError::Scheme),
            ("redis://", UrlError::Host),
            ("redis://:1", UrlError::Host),
            ("redis://u:p@", UrlError::Host),
            ("redis://[::1", UrlError::Host),
            ("redis://h:0", UrlError::Port),
            ("redis://h:65536", UrlError::Port),
            ("redis://h:x", UrlError::Port),
            ("redis://[::1]x", UrlError::Port),
            ("redis://h:1/x", UrlError::Db),
            ("redis://u:%zz@h", UrlError::Escape),
            ("redis://u:%4@h", UrlError::Escape),
        ] {
            assert_eq!(text.parse::<RedisUrl>(), Err(err), "{text}");
        }
    }
}
