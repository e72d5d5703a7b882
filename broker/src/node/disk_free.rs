//! Reads the data directory's free space for `limits.disk_free_min_bytes`,
//! beside the node task: the cores read no file system.

use std::path::PathBuf;
use std::time::Duration;

use tracing::debug;

use super::{NodeHandle, Request};
use crate::io::{self as seam, Io};

/// How often the free space is read: a producer at disk speed fills well
/// under a second's worth of the limit between two reads.
pub const DISK_FREE_INTERVAL: Duration = Duration::from_secs(1);

/// Tells the node the free space of `dir` at once and then every
/// [`DISK_FREE_INTERVAL`], until the node stops.
pub async fn watch_disk_free<I: Io>(io: I, dir: PathBuf, node: NodeHandle) {
    loop {
        let free_bytes = match io.available_bytes(&dir).await {
            Ok(free_bytes) => free_bytes,
            Err(error) => {
                debug!(%error, "cannot read the data directory's free space");
                None
            }
        };
        if node.send(Request::DiskFree { free_bytes }).is_err() {
            return;
        }
        seam::sleep_until(io.now() + DISK_FREE_INTERVAL).await;
    }
}
