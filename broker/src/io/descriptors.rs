//! The process's limit on open file descriptors (`RLIMIT_NOFILE`), which
//! every socket and file counts against. The production binary raises it
//! as far as it may and fits `limits.max_connections` under it, so that
//! excess clients are refused at accept rather than by `accept` failing
//! with "Too many open files" for everybody.

use std::io;

/// Raises the soft limit on open descriptors to the hard limit, and
/// returns the limit now in force (`u64::MAX` if there is none).
///
/// # Errors
///
/// The operating system refused to raise it.
#[cfg(unix)]
pub fn raise_limit() -> io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    Ok(limit.maximum.unwrap_or(u64::MAX))
}

/// Where there is no such limit: none to raise, nothing to fit under.
///
/// # Errors
///
/// Never.
#[cfg(not(unix))]
pub fn raise_limit() -> io::Result<u64> {
    Ok(u64::MAX)
}
