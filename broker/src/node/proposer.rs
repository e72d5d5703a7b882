//! The proposing side of the sessions of [`super::state`]: per group, the
//! items this node has proposed and not yet seen applied, in token order.
//!
//! New items wait in the outbox until the end of the node's wake-up and then
//! go out together, as few entries as the size bounds allow. Whatever is not
//! applied is proposed again, from the oldest, when the proposer has reason
//! to believe it was lost: the group's leader changed, the group applied a
//! later item of ours first (a gap), or nothing came back for a while.
//! Duplicates that this creates are skipped by the group.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::batch::{self, ITEMS_MAX, Item};
use super::origin::Origin;
use crate::queue::{Command, ConsumerId, Outcome};

/// The most items in one entry: well under [`ITEMS_MAX`], so that one slow
/// entry does not hold up many producers' outcomes.
const ENTRY_ITEMS_MAX: usize = 1024;

/// Entries stop growing past this many bytes of commands (one command may
/// take it further): far below the transport's frame limit.
const ENTRY_BYTES_MAX: usize = 1 << 20;

const _: () = assert!(ENTRY_ITEMS_MAX < ITEMS_MAX);

/// The payload of one entry, as proposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The encoded batch.
    pub data: Bytes,
    /// Whether it enqueues messages. One that does not only declares,
    /// settles, expires, deletes or changes consumers: it lets a full disk
    /// be freed, so the local log may write it from its reserve.
    pub enqueues: bool,
}

/// An item and what to do once it is applied.
#[derive(Debug)]
pub struct Proposed<R> {
    /// The item as proposed.
    pub item: Item,
    /// What the proposer does when it is applied.
    pub reply: R,
}

/// One group's outbox.
#[derive(Debug)]
pub struct Outbox<R> {
    origin: Origin,
    next_token: u64,
    /// Proposed (or about to be) and not applied yet, oldest first.
    unapplied: VecDeque<Proposed<R>>,
    /// How many items at the back of `unapplied` were never proposed.
    fresh: usize,
    /// How many items in `unapplied` a consumer's credit may not overtake
    /// (see [`overtakable`]).
    barriers: usize,
}

impl<R> Outbox<R> {
    /// An empty outbox for a session of `origin`.
    pub fn new(origin: Origin) -> Self {
        Self {
            origin,
            next_token: 1,
            unapplied: VecDeque::new(),
            fresh: 0,
            barriers: 0,
        }
    }

    /// Queues a command; it goes out with the next [`Outbox::take_fresh`].
    pub fn push(&mut self, command: Command, guard: Option<ConsumerId>, reply: R) {
        if !overtakable(&command) {
            self.barriers += 1;
        }
        let token = self.next_token;
        self.next_token += 1;
        self.unapplied.push_back(Proposed {
            item: Item {
                token,
                guard,
                command,
            },
            reply,
        });
        self.fresh += 1;
    }

    /// Whether a consumer's credit may be applied before every item waiting
    /// without changing what they deliver (see [`overtakable`]).
    pub fn credit_may_overtake(&self) -> bool {
        self.barriers == 0
    }

    /// Whether anything is waiting to be applied.
    pub fn is_idle(&self) -> bool {
        self.unapplied.is_empty()
    }

    /// The token of the newest item pushed (0 before the first).
    pub fn newest_token(&self) -> u64 {
        self.next_token - 1
    }

    /// Whether every item up to `token` has been applied.
    pub fn applied_through(&self, token: u64) -> bool {
        self.unapplied
            .front()
            .is_none_or(|oldest| oldest.item.token > token)
    }

    /// The items never proposed, oldest first.
    pub fn fresh(&self) -> impl Iterator<Item = &Item> {
        let start = self.unapplied.len() - self.fresh;
        self.unapplied.range(start..).map(|proposed| &proposed.item)
    }

    /// The entries that carry the items never proposed.
    pub fn take_fresh(&mut self, now_ms: u64) -> Vec<Entry> {
        let start = self.unapplied.len() - self.fresh;
        self.fresh = 0;
        self.entries(start, now_ms)
    }

    /// The payloads of the entries that carry every item not yet applied,
    /// oldest first: the go-back-N retransmission.
    pub fn take_all(&mut self, now_ms: u64) -> Vec<Entry> {
        self.fresh = 0;
        self.entries(0, now_ms)
    }

    /// The group applied our item `token` (they are applied in token
    /// order): returns it, with what to do now.
    pub fn applied(&mut self, token: u64) -> Option<Proposed<R>> {
        if self.unapplied.front()?.item.token != token {
            return None;
        }
        debug_assert!(self.unapplied.len() > self.fresh, "applied before proposed");
        let proposed = self.unapplied.pop_front();
        self.taken(proposed)
    }

    /// Takes item `token`, which its commit step refused (it is not
    /// applied, or only in this node's memory).
    pub fn refused(&mut self, token: u64) -> Option<Proposed<R>> {
        let at = self
            .unapplied
            .iter()
            .position(|proposed| proposed.item.token == token)?;
        debug_assert!(
            at < self.unapplied.len() - self.fresh,
            "refused before proposed"
        );
        let proposed = self.unapplied.remove(at);
        self.taken(proposed)
    }

    /// Takes the oldest item if its token is below `next`: the group
    /// applied it, out of this node's sight (in a snapshot it installed).
    pub fn applied_before(&mut self, next: u64) -> Option<Proposed<R>> {
        if self.unapplied.front()?.item.token >= next {
            return None;
        }
        if self.unapplied.len() == self.fresh {
            self.fresh -= 1;
        }
        let proposed = self.unapplied.pop_front();
        self.taken(proposed)
    }

    /// Counts an item out.
    fn taken(&mut self, proposed: Option<Proposed<R>>) -> Option<Proposed<R>> {
        if let Some(proposed) = &proposed
            && !overtakable(&proposed.item.command)
        {
            self.barriers -= 1;
        }
        proposed
    }

    /// The items not yet applied, oldest first.
    pub fn waiting(&self) -> impl Iterator<Item = &Item> {
        self.unapplied.iter().map(|proposed| &proposed.item)
    }

    /// Whether the oldest item still waiting is older than `token`: then a
    /// later item of ours reached the group first and the group skipped it,
    /// so everything waiting must go again.
    pub fn has_gap_before(&self, token: u64) -> bool {
        self.unapplied
            .front()
            .is_some_and(|oldest| oldest.item.token < token && self.unapplied.len() > self.fresh)
    }

    fn entries(&self, start: usize, now_ms: u64) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut first = start;
        while first < self.unapplied.len() {
            let mut last = first;
            let mut bytes = 0;
            let mut enqueues = false;
            while last < self.unapplied.len()
                && last - first < ENTRY_ITEMS_MAX
                && bytes < ENTRY_BYTES_MAX
            {
                let command = &self.unapplied[last].item.command;
                bytes += command_size(command);
                enqueues |= matches!(command, Command::Enqueue { .. });
                last += 1;
            }
            let mut out = BytesMut::with_capacity(bytes + 64 * (last - first));
            let items = self
                .unapplied
                .range(first..last)
                .map(|proposed| &proposed.item);
            batch::encode(self.origin, now_ms, items, &mut out);
            entries.push(Entry {
                data: out.freeze(),
                enqueues,
            });
            first = last;
        }
        entries
    }
}

/// Whether a consumer's credit may be applied before this command without
/// changing what the credit delivers: an enqueue only adds a message after
/// every ready one (or drops the oldest from a drop-head queue, which a
/// credit that came a moment earlier could have had delivered all the
/// same), and an accepting settle only removes a held one.
pub fn overtakable(command: &Command) -> bool {
    matches!(
        command,
        Command::Enqueue { .. }
            | Command::Settle {
                outcome: Outcome::Accepted,
                ..
            }
    )
}

/// About how many bytes a command encodes to: its message body, the rest
/// being small.
fn command_size(command: &Command) -> usize {
    match command {
        Command::Enqueue { message, .. } => message.body.len() + 64,
        Command::Transaction { work } => work.iter().map(|g| command_size(&g.command)).sum(),
        _ => 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::batch::Batch;

    fn tokens(entries: Vec<Entry>) -> Vec<Vec<u64>> {
        entries
            .into_iter()
            .map(|entry| {
                let batch = Batch::decode(entry.data).expect("decodes");
                batch.items.iter().map(|item| item.token).collect()
            })
            .collect()
    }

    #[test]
    fn fresh_items_go_once_and_everything_unapplied_goes_again_on_retry() {
        let mut outbox = Outbox::new(Origin::new(1, 0));
        outbox.push(Command::Expire, None, "a");
        outbox.push(Command::Expire, None, "b");
        assert_eq!(tokens(outbox.take_fresh(0)), [[1, 2]]);
        outbox.push(Command::Expire, None, "c");
        assert_eq!(tokens(outbox.take_fresh(0)), [[3]]);
        assert!(tokens(outbox.take_fresh(0)).is_empty());
        assert_eq!(outbox.applied(1).map(|p| p.reply), Some("a"));
        assert!(outbox.applied(3).is_none(), "2 comes first");
        assert!(outbox.has_gap_before(3));
        assert_eq!(tokens(outbox.take_all(0)), [[2, 3]]);
    }

    #[test]
    fn a_large_outbox_is_split_into_bounded_entries() {
        let mut outbox = Outbox::new(Origin::new(1, 0));
        for _ in 0..ENTRY_ITEMS_MAX + 1 {
            outbox.push(Command::Expire, None, ());
        }
        let sizes: Vec<usize> = tokens(outbox.take_fresh(0)).iter().map(Vec::len).collect();
        assert_eq!(sizes, [ENTRY_ITEMS_MAX, 1]);
    }

    #[test]
    fn an_item_pushed_after_a_retry_is_still_fresh() {
        let mut outbox = Outbox::new(Origin::new(1, 0));
        outbox.push(Command::Expire, None, ());
        assert_eq!(tokens(outbox.take_all(0)), [[1]]);
        outbox.push(Command::Expire, None, ());
        assert!(!outbox.has_gap_before(1));
        assert_eq!(tokens(outbox.take_fresh(0)), [[2]]);
    }
}
