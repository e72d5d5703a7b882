//! A node's incarnation ([`Origin`]), which names what it proposes and the
//! consumers it registers, and the durable count of its starts.

use std::path::Path;

use crate::io::{Io, naming};
use crate::queue::ConsumerId;
use crate::raft::replica::NodeId;

/// The file that counts this node's starts (see [`Origin`]).
const INCARNATION_FILE: &str = "incarnation";

/// A node's incarnation: its id and how many times it has started (modulo
/// 2^16). Tokens are numbered per origin, so a restarted node never
/// collides with what it proposed before; and the consumers it registers
/// are numbered from [`Origin::first_consumer`], so that a consumer id says
/// which incarnation serves it.
///
/// ```text
/// bits 63..48 node id | 47..32 start count | 31..0 zero (a consumer's number)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin(u64);

impl Origin {
    const NODE_SHIFT: u32 = 48;
    const START_SHIFT: u32 = 32;
    /// The bits a consumer id adds to its origin's.
    const CONSUMER_BITS: u64 = (1 << Self::START_SHIFT) - 1;

    /// Start number `start` (wrapping at 2^16) of node `node`.
    pub const fn new(node: NodeId, start: u64) -> Self {
        Self((node << Self::NODE_SHIFT) | ((start & 0xffff) << Self::START_SHIFT))
    }

    /// The origin that registered `consumer`.
    pub const fn of_consumer(consumer: ConsumerId) -> Self {
        Self(consumer & !Self::CONSUMER_BITS)
    }

    /// The node.
    pub const fn node(self) -> NodeId {
        self.0 >> Self::NODE_SHIFT
    }

    /// Which start of the node, modulo 2^16.
    pub const fn start(self) -> u64 {
        (self.0 >> Self::START_SHIFT) & 0xffff
    }

    /// The first consumer id this incarnation registers.
    pub const fn first_consumer(self) -> ConsumerId {
        self.0
    }

    /// As encoded in a batch or a group's snapshot.
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// From [`Origin::to_bits`]; any value names some origin.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.node(), self.start())
    }
}

/// This node's incarnation: its id and its start count. Counting starts
/// needs one small durable write.
pub(super) async fn next_origin<I: Io>(
    io: &I,
    data_dir: &Path,
    node_id: NodeId,
) -> std::io::Result<Origin> {
    io.create_dir_all(data_dir).await?;
    let path = data_dir.join(INCARNATION_FILE);
    // A failed read or write names the file: a broker that cannot start
    // must say why.
    let previous = match io.read_file(&path).await.map_err(naming("read", &path)) {
        Ok(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not 8 bytes", path.display()),
                )
            })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => return Err(error),
    };
    let count = previous.wrapping_add(1);
    crate::io::replace_file(io, &path, &count.to_be_bytes())
        .await
        .map_err(naming("replace", &path))?;
    Ok(Origin::new(node_id, count))
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;

    use super::*;
    use crate::io::TokioIo;
    use crate::io::faulty::FaultyIo;

    /// A broker that cannot count its starts refuses to start with an error
    /// that names the file, not a bare "other error".
    #[tokio::test]
    async fn a_failed_read_of_the_count_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new(TokioIo);
        next_origin(&io, dir.path(), 1).await.unwrap();
        io.faults.fail_reads(Some((ErrorKind::Other, 0)));
        let error = next_origin(&io, dir.path(), 1).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Other);
        let message = error.to_string();
        assert!(message.contains(INCARNATION_FILE), "{message}");
        assert!(message.starts_with("read "), "{message}");
    }
}
