//! Rule 20.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule, Violation};
use crate::history::{ConnId, Event, MsgId, Op, Outcome};
use crate::request_reply::{NOWHERE, REQUESTS};

use super::{Check, violation};

/// A request, as sent.
#[derive(Debug)]
struct Request {
    to: String,
    reply_to: String,
    /// Where its acceptance is in the history, if the broker accepted it.
    accepted: Option<(usize, Duration)>,
    replies_sent: u64,
    replies_delivered: u64,
}

/// A temporary queue.
#[derive(Debug)]
struct TempQueue {
    conn: ConnId,
    /// Deleted (its link's close answered).
    deleted: bool,
    /// Deleted, or its connection lost.
    dead: bool,
}

/// Rule 20, **every accepted request is answered, by its own reply queue**:
/// request and reply over temporary queues and the anonymous relay
/// (`crate::request_reply`), and the deletion of a temporary queue.
///
/// A requester's temporary queue is the broker's to name, and lives as
/// long as the link that made it: it is *deleted* once the requester's
/// close of that link is answered ([`Op::TempQueueDeleted`]), and it
/// *dies* with its connection (lost: the broker deletes it once it notices,
/// or after a restart). The rule flags
/// - a request the anonymous relay accepted for [`NOWHERE`], an address
///   that does not exist (the relay never makes a queue);
/// - a request delivered from [`REQUESTS`] that was never sent there, or
///   whose `reply-to` is not the one it was sent with;
/// - a reply delivered to a requester whose link does not read the queue
///   the reply was routed to, or the queue of the request's `reply-to`
///   (a reply that reached the wrong requester, or a delivery from a
///   queue deleted before it);
/// - a reply delivered more often than the responder sent it (each send
///   may make one copy: at least once, never more);
/// - a broker name given to two temporary queues;
/// - once the run had its liveness phase, a request the broker accepted
///   for [`REQUESTS`] that no reply answered, unless its reply queue was
///   deleted or died before a reply came: what a deleted queue held is
///   gone with it (counted in `requests_excused`). A connection closed at
///   the end of the run excuses nothing: requesters wait for their
///   replies through the drain.
#[derive(Debug, Default)]
pub(super) struct RequestReply {
    requests: BTreeMap<MsgId, Request>,
    temp_queues: BTreeMap<String, TempQueue>,
    /// Accepted requests left unanswered because their reply queue was
    /// deleted or died first.
    excused: u64,
    /// Accepted requests answered.
    answered: u64,
}

impl<'h> Check<'h> for RequestReply {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        _facts: &Facts<'h>,
        report: &mut CheckReport,
    ) {
        let flag = |detail: String| violation(Rule::RequestReply, index, event, detail);
        let found = match &event.op {
            Op::TempQueue { conn, address } => {
                let queue = TempQueue {
                    conn: *conn,
                    deleted: false,
                    dead: false,
                };
                self.temp_queues
                    .insert(address.clone(), queue)
                    .map(|earlier| flag(format!("{address} was {}'s already", earlier.conn)))
            }
            Op::TempQueueDeleted { address, .. } => {
                if let Some(queue) = self.temp_queues.get_mut(address) {
                    queue.deleted = true;
                    queue.dead = true;
                }
                None
            }
            Op::ConnectionLost { conn, .. } => {
                for queue in self.temp_queues.values_mut() {
                    queue.dead |= queue.conn == *conn;
                }
                None
            }
            Op::Request {
                msg, to, reply_to, ..
            } => {
                let request = Request {
                    to: to.clone(),
                    reply_to: reply_to.clone(),
                    accepted: None,
                    replies_sent: 0,
                    replies_delivered: 0,
                };
                self.requests.insert(*msg, request);
                None
            }
            Op::RequestOutcome { msg, outcome, .. } => {
                let request = self.requests.get_mut(msg);
                match request {
                    Some(request) if *outcome == Outcome::Accepted => {
                        request.accepted = Some((index, event.time));
                        (request.to == NOWHERE).then(|| {
                            flag(format!(
                                "the anonymous relay accepted {msg} for {NOWHERE}, which does not exist"
                            ))
                        })
                    }
                    _ => None,
                }
            }
            Op::RequestDelivered { msg, reply_to, .. } => match self.requests.get(msg) {
                Some(request) if request.to != REQUESTS => Some(flag(format!(
                    "{msg} was sent to {}, not {REQUESTS}",
                    request.to
                ))),
                Some(request) if request.reply_to != *reply_to => Some(flag(format!(
                    "{msg} was sent with reply-to {}",
                    request.reply_to
                ))),
                Some(_) => None,
                None => Some(flag(format!("{msg} was never sent"))),
            },
            Op::Reply { msg, .. } => {
                if let Some(request) = self.requests.get_mut(msg) {
                    request.replies_sent += 1;
                }
                None
            }
            Op::ReplyDelivered {
                conn,
                msg,
                to,
                queue,
            } => self.reply_delivered(*conn, *msg, to, queue).map(flag),
            _ => None,
        };
        report.violations.extend(found);
    }

    fn finish(mut self: Box<Self>, facts: &Facts<'h>, report: &mut CheckReport) {
        let found = self.unanswered(facts.ended(), facts.events);
        report.violations.extend(found);
        report.stats.requests_answered = self.answered;
        report.stats.requests_excused = self.excused;
        if facts.ended() {
            report.stats.checked.insert(Rule::RequestReply);
        }
    }
}

impl RequestReply {
    /// Why the delivery of a reply to `msg` routed to `to`, on `conn`'s
    /// link from `queue`, breaks the rule, if it does.
    fn reply_delivered(
        &mut self,
        conn: ConnId,
        msg: MsgId,
        to: &str,
        queue: &str,
    ) -> Option<String> {
        let Some(request) = self.requests.get_mut(&msg) else {
            return Some(format!("{msg} is no request"));
        };
        request.replies_delivered += 1;
        if to != queue {
            let gone = self.temp_queues.get(to).is_some_and(|q| q.deleted);
            let deleted = if gone { ", deleted before" } else { "" };
            return Some(format!(
                "a reply routed to {to}{deleted} arrived from {queue}"
            ));
        }
        if request.reply_to != queue {
            return Some(format!(
                "the reply reached the wrong requester: {msg} asked for replies to {}",
                request.reply_to
            ));
        }
        let owner = self.temp_queues.get(queue).map(|q| q.conn);
        if owner != Some(conn) {
            return Some(format!("{queue} is not {conn}'s temporary queue"));
        }
        if request.replies_delivered > request.replies_sent {
            return Some(format!(
                "reply {} of {msg}, which the responder sent {} time(s)",
                request.replies_delivered, request.replies_sent
            ));
        }
        None
    }

    /// Counts the accepted requests answered; with `ended` (the run had
    /// its liveness phase), each one left unanswered that nothing excuses.
    fn unanswered(&mut self, ended: bool, events: &[Event]) -> Vec<Violation> {
        let mut found = Vec::new();
        for (msg, request) in &self.requests {
            let Some((index, time)) = request.accepted else {
                continue;
            };
            if request.to != REQUESTS {
                continue;
            }
            if request.replies_delivered > 0 {
                self.answered += 1;
                continue;
            }
            if !ended {
                continue;
            }
            let died = self
                .temp_queues
                .get(&request.reply_to)
                .is_some_and(|queue| queue.dead);
            if died {
                self.excused += 1;
                continue;
            }
            found.push(Violation {
                rule: Rule::RequestReply,
                index,
                time,
                detail: format!(
                    "{}: {msg} was never answered, and {} lived to the end",
                    events[index], request.reply_to
                ),
            });
        }
        found
    }
}
