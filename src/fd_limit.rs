//! Raising the open-file limit: each client needs a descriptor. Used by the binary and the
//! benchmark (`benches/load.rs` includes this file); not part of the library.

use rustix::io::Errno;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// What [`raise_fd_limit`] did.
#[derive(Debug)]
pub enum FdLimit {
    /// The soft limit already was the hard one.
    Unchanged,
    /// Raised to the hard limit (`None`: unlimited).
    Raised(Option<u64>),
    /// Could not be raised: the soft limit stays where it was.
    Kept(Option<u64>, Errno),
}

/// Raises the soft open-file limit to the hard one.
pub fn raise_fd_limit() -> FdLimit {
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none() || limit.current == limit.maximum {
        return FdLimit::Unchanged;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => FdLimit::Raised(limit.maximum),
        Err(e) => FdLimit::Kept(limit.current, e),
    }
}
