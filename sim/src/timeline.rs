//! A run's timeline as a model to draw: a lane per broker host and per
//! client (and one for the run as a whole), the faults as bands over the
//! lanes they hit, each connection and each group's leadership as a span,
//! every other history event as a mark, and the checker's violations with
//! the events they involve. [`crate::html`] draws it; this module decides
//! what goes where, and nothing about how it looks.
//!
//! Times are whole microseconds of simulated time (the history's unit is
//! finer than anything a page can show, and integers keep the page small).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::checker::CheckReport;
use crate::history::{
    Answer, ClientId, ConnId, Event, History, MsgId, NodeId, Op, Outcome, broker_name,
};
use crate::nemesis::{Fault, FaultEvent, fault_spans};
use crate::world::RunReport;

/// At most this many related events are listed with a violation: a message
/// redelivered in a storm can have thousands.
const RELATED_MAX: usize = 64;

/// The lane for events that belong to no host or client.
const RUN_LANE: usize = 0;

/// What a lane stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LaneKind {
    /// The run as a whole: the nemesis's announcements, the end state.
    Run,
    /// A broker host.
    Node,
    /// A workload client.
    Client,
}

/// One horizontal lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lane {
    /// Its host or client name.
    pub name: String,
    /// What it stands for.
    pub kind: LaneKind,
}

/// What sort of fault a band is, for its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultClass {
    /// On a client–broker link.
    Net,
    /// Between cluster nodes.
    Cut,
    /// A broker's disk (corruption at rest counts here, though it crashes
    /// the host too).
    Disk,
    /// A broker's process: crash, kill, power loss, rolling restart.
    Process,
    /// A broker's wall clock stepped off the true time.
    Clock,
}

/// A fault, from injection to end or heal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Band {
    /// The lanes it covers: the hosts it acts on.
    pub lanes: Vec<usize>,
    /// Injected at.
    pub start: u64,
    /// Ended or healed at; `None` if never (the run stopped first).
    pub end: Option<u64>,
    /// What sort of fault.
    pub class: FaultClass,
    /// The fault as the trace words it.
    pub label: String,
    /// The history index of its injection.
    pub index: usize,
}

/// Something that lasts on one lane: a connection, or a group's
/// leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    /// The lane.
    pub lane: usize,
    /// From.
    pub start: u64,
    /// To; `None` if it lasted to the end of the history.
    pub end: Option<u64>,
    /// A connection's broker lane, or a leader's group number.
    pub tag: u64,
    /// How it ended: the history index of the event that ended it.
    pub ended_by: Option<usize>,
}

/// What a mark shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkKind {
    /// A broker host's software started.
    Start,
    /// A broker's server returned.
    Stop,
    /// The nemesis restarted a host (rolling kill, supervisor, restore).
    Restart,
    /// Another of the nemesis's events (announcement, heal, flip at rest).
    Nemesis,
    /// A group's leader changed (on the new leader's lane).
    Leader,
    /// A client connected.
    Connect,
    /// A connection was lost.
    Lost,
    /// A connection was closed, or a link re-attached.
    Closed,
    /// A first send.
    Send,
    /// A resend.
    Resend,
    /// A producer got `accepted`.
    Accepted,
    /// A producer got another outcome.
    Refused,
    /// A consumer got a message for the first time from its queue.
    Delivered,
    /// A consumer got a message its queue delivered before.
    Redelivered,
    /// A consumer settled a message.
    Settled,
    /// Anything else, shown with its text: the broker's end state, an
    /// abort, and any op this model does not know yet.
    Other,
}

/// One history event on a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mark {
    /// The lane.
    pub lane: usize,
    /// When.
    pub time: u64,
    /// What.
    pub kind: MarkKind,
    /// Its history index (its text, for the page).
    pub index: usize,
}

/// A broken rule where the checker found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViolationMark {
    /// The rule's short name.
    pub rule: &'static str,
    /// The history index of the event that shows it.
    pub index: usize,
    /// Its time.
    pub time: u64,
    /// The lane of that event.
    pub lane: usize,
    /// What is wrong.
    pub detail: String,
    /// The events involved: every event of the same message (at most
    /// [`RELATED_MAX`]), or the event alone.
    pub related: Vec<usize>,
}

/// The whole model of a run's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// The time of the last event.
    pub end: u64,
    /// When the fault phase ended (the nemesis healed everything).
    pub faults_end: u64,
    /// The lanes, top to bottom: the run's, the brokers', the clients'.
    pub lanes: Vec<Lane>,
    /// The faults.
    pub bands: Vec<Band>,
    /// Client connections.
    pub connections: Vec<Span>,
    /// Group leaderships, on their leader's lane.
    pub leads: Vec<Span>,
    /// Every other event.
    pub marks: Vec<Mark>,
    /// The checker's violations, in its order.
    pub violations: Vec<ViolationMark>,
}

/// Whole microseconds.
fn micros(time: Duration) -> u64 {
    u64::try_from(time.as_micros()).unwrap_or(u64::MAX)
}

/// The client an op is about, if any.
fn client_of(op: &Op) -> Option<ClientId> {
    conn_of(op).map(|conn| conn.client)
}

/// The connection an op is about, if any.
fn conn_of(op: &Op) -> Option<ConnId> {
    match op {
        Op::Connected { conn, .. }
        | Op::ConnectionLost { conn, .. }
        | Op::Closed { conn }
        | Op::Relinked { conn }
        | Op::Send { conn, .. }
        | Op::ProducerOutcome { conn, .. }
        | Op::TxnDeclared { conn, .. }
        | Op::Discharge { conn, .. }
        | Op::Discharged { conn, .. }
        | Op::Delivered { conn, .. }
        | Op::Browsed { conn, .. }
        | Op::Settled { conn, .. }
        | Op::SettleConfirmed { conn, .. }
        | Op::SettleModeRefused { conn }
        | Op::TempQueue { conn, .. }
        | Op::TempQueueDeleted { conn, .. }
        | Op::Request { conn, .. }
        | Op::RequestOutcome { conn, .. }
        | Op::RequestDelivered { conn, .. }
        | Op::Reply { conn, .. }
        | Op::ReplyOutcome { conn, .. }
        | Op::ReplyDelivered { conn, .. }
        | Op::Intrusion { conn, .. } => Some(*conn),
        _ => None,
    }
}

/// The message an op is about, if any.
fn msg_of(op: &Op) -> Option<MsgId> {
    match op {
        Op::Send { msg, .. }
        | Op::ProducerOutcome { msg, .. }
        | Op::Delivered { msg, .. }
        | Op::Browsed { msg, .. }
        | Op::Settled { msg, .. }
        | Op::SettleConfirmed { msg, .. } => Some(*msg),
        _ => None,
    }
}

/// The hosts a fault acts on, whose lanes its band covers: those it
/// names, but for an isolated node, whose others are only what it cannot
/// reach.
fn fault_hosts(fault: &Fault) -> Vec<&str> {
    match fault {
        Fault::Isolate { host, .. } => vec![host],
        _ => fault.hosts(),
    }
}

/// The class a fault is drawn in.
fn fault_class(fault: &Fault) -> FaultClass {
    if fault.is_node_net() {
        FaultClass::Cut
    } else if fault.link().is_some() {
        FaultClass::Net
    } else if fault.is_disk() {
        FaultClass::Disk
    } else if matches!(fault, Fault::ClockJump { .. }) {
        FaultClass::Clock
    } else {
        FaultClass::Process
    }
}

/// Lanes by name, built once before the events are placed.
struct Lanes {
    lanes: Vec<Lane>,
    by_name: BTreeMap<String, usize>,
}

impl Lanes {
    /// The run's lane, a lane per broker of `nodes`, then a lane per
    /// client the history names (in client order), then any other host a
    /// fault names.
    fn new(events: &[Event], nodes: &[NodeId]) -> Self {
        let mut lanes = Lanes {
            lanes: Vec::new(),
            by_name: BTreeMap::new(),
        };
        lanes.add("run".to_owned(), LaneKind::Run);
        for &node in nodes {
            lanes.add(broker_name(node), LaneKind::Node);
        }
        let clients: BTreeSet<ClientId> = events.iter().filter_map(|e| client_of(&e.op)).collect();
        for client in clients {
            lanes.add(client.to_string(), LaneKind::Client);
        }
        let faulted = events.iter().filter_map(|event| match &event.op {
            Op::Fault(FaultEvent::Injected { fault, .. }) => Some(fault),
            _ => None,
        });
        for fault in faulted {
            for host in fault_hosts(fault) {
                lanes.add(host.to_owned(), LaneKind::Client);
            }
        }
        lanes
    }

    fn add(&mut self, name: String, kind: LaneKind) {
        if !self.by_name.contains_key(&name) {
            self.by_name.insert(name.clone(), self.lanes.len());
            self.lanes.push(Lane { name, kind });
        }
    }

    /// The lane named `name` ([`RUN_LANE`] if none is).
    fn named(&self, name: &str) -> usize {
        self.by_name.get(name).copied().unwrap_or(RUN_LANE)
    }

    fn node(&self, node: NodeId) -> usize {
        self.named(&broker_name(node))
    }

    fn client(&self, client: ClientId) -> usize {
        self.named(&client.to_string())
    }
}

/// The lane and kind of an event drawn as a mark; `None` for a fault's
/// injection or end (drawn as its band).
fn mark_of(
    op: &Op,
    lanes: &Lanes,
    delivered: &mut BTreeSet<(String, MsgId)>,
) -> Option<(usize, MarkKind)> {
    let on_client = |conn: &ConnId, kind| Some((lanes.client(conn.client), kind));
    match op {
        Op::BrokerStart { node } => Some((lanes.node(*node), MarkKind::Start)),
        Op::BrokerStopped { node, .. } => Some((lanes.node(*node), MarkKind::Stop)),
        Op::Fault(event) => fault_mark(event, lanes),
        Op::LeaderObserved { leader, .. } => {
            let lane = leader.map_or(RUN_LANE, |id| lanes.node(Some(id)));
            Some((lane, MarkKind::Leader))
        }
        Op::Connected { conn, .. } => on_client(conn, MarkKind::Connect),
        Op::ConnectionLost { conn, .. } => on_client(conn, MarkKind::Lost),
        Op::Closed { conn } | Op::Relinked { conn } => on_client(conn, MarkKind::Closed),
        Op::Send { conn, resend, .. } => on_client(
            conn,
            if *resend {
                MarkKind::Resend
            } else {
                MarkKind::Send
            },
        ),
        // A transaction's declare and discharge are sends to its
        // coordinator, and the discharge's answer an outcome.
        Op::TxnDeclared { conn, .. } | Op::Discharge { conn, .. } => {
            on_client(conn, MarkKind::Send)
        }
        Op::ProducerOutcome { conn, outcome, .. } | Op::Discharged { conn, outcome, .. } => {
            let kind = if *outcome == Outcome::Accepted {
                MarkKind::Accepted
            } else {
                MarkKind::Refused
            };
            on_client(conn, kind)
        }
        Op::Delivered {
            conn, queue, msg, ..
        } => {
            let first = delivered.insert((queue.clone(), *msg));
            let kind = if first {
                MarkKind::Delivered
            } else {
                MarkKind::Redelivered
            };
            on_client(conn, kind)
        }
        Op::Settled { conn, .. } | Op::SettleConfirmed { conn, .. } => {
            on_client(conn, MarkKind::Settled)
        }
        Op::SettleModeRefused { conn } => on_client(conn, MarkKind::Refused),
        Op::Request { conn, .. } | Op::Reply { conn, .. } => on_client(conn, MarkKind::Send),
        Op::RequestOutcome { conn, outcome, .. } | Op::ReplyOutcome { conn, outcome, .. } => {
            let kind = if *outcome == Outcome::Accepted {
                MarkKind::Accepted
            } else {
                MarkKind::Refused
            };
            on_client(conn, kind)
        }
        Op::RequestDelivered { conn, .. } | Op::ReplyDelivered { conn, .. } => {
            on_client(conn, MarkKind::Delivered)
        }
        Op::TempQueue { conn, .. } | Op::TempQueueDeleted { conn, .. } => {
            on_client(conn, MarkKind::Other)
        }
        Op::Browsed { conn, .. } => on_client(conn, MarkKind::Other),
        Op::Intrusion { conn, answer, .. } => {
            let kind = match answer {
                Answer::Served(_) => MarkKind::Accepted,
                Answer::Refused(_) | Answer::Failed(_) => MarkKind::Refused,
            };
            on_client(conn, kind)
        }
        // The end state, an abort, and ops added after this model: their
        // text says what they are.
        _ => Some((RUN_LANE, MarkKind::Other)),
    }
}

/// A nemesis event that is not a band's edge, as a mark.
fn fault_mark(event: &FaultEvent, lanes: &Lanes) -> Option<(usize, MarkKind)> {
    match event {
        FaultEvent::Injected { .. } | FaultEvent::Ended(_) | FaultEvent::Healed(_) => None,
        FaultEvent::RollingKill(host)
        | FaultEvent::SupervisorRestart(host)
        | FaultEvent::Restored(host) => Some((lanes.named(host), MarkKind::Restart)),
        _ => Some((RUN_LANE, MarkKind::Nemesis)),
    }
}

impl Timeline {
    /// The timeline of `report`.
    pub fn of(report: &RunReport) -> Self {
        let nodes = crate::cluster::broker_nodes(report.options.nodes);
        Self::build(
            &report.history,
            &report.check,
            &nodes,
            report.options.duration,
        )
    }

    /// The timeline of `history`, checked as `check`, in a world of the
    /// brokers `nodes` whose fault phase lasted `fault_phase`.
    pub fn build(
        history: &History,
        check: &CheckReport,
        nodes: &[NodeId],
        fault_phase: Duration,
    ) -> Self {
        let events = history.events();
        let lanes = Lanes::new(events, nodes);
        let mut marks = Vec::new();
        // Every event's lane, for the violations.
        let mut event_lanes = Vec::with_capacity(events.len());
        let mut delivered = BTreeSet::new();
        for (index, event) in events.iter().enumerate() {
            let placed = mark_of(&event.op, &lanes, &mut delivered);
            if let Some((lane, kind)) = placed {
                marks.push(Mark {
                    lane,
                    time: micros(event.time),
                    kind,
                    index,
                });
            }
            event_lanes.push(placed.map_or(RUN_LANE, |(lane, _)| lane));
        }
        Timeline {
            end: events.iter().map(|e| micros(e.time)).max().unwrap_or(0),
            faults_end: micros(fault_phase),
            bands: bands(events, &lanes),
            connections: connections(events, &lanes),
            leads: leads(events, &lanes),
            violations: violations(events, check, &event_lanes),
            lanes: lanes.lanes,
            marks,
        }
    }
}

/// Every fault's band.
fn bands(events: &[Event], lanes: &Lanes) -> Vec<Band> {
    let faults = events.iter().filter_map(|event| match &event.op {
        Op::Fault(fault) => Some((event.time, fault)),
        _ => None,
    });
    fault_spans(faults)
        .into_iter()
        .map(|span| {
            let mut covered: Vec<usize> = fault_hosts(span.fault)
                .into_iter()
                .map(|host| lanes.named(host))
                .collect();
            covered.sort_unstable();
            covered.dedup();
            let injection = events.iter().position(|event| {
                event.time == span.start
                    && matches!(&event.op, Op::Fault(FaultEvent::Injected { fault, .. }) if fault == span.fault)
            });
            Band {
                lanes: covered,
                start: micros(span.start),
                end: span.end.map(micros),
                class: fault_class(span.fault),
                label: span.fault.to_string(),
                index: injection.unwrap_or_default(),
            }
        })
        .collect()
}

/// Every connection, from connected to lost or closed.
fn connections(events: &[Event], lanes: &Lanes) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut open: BTreeMap<ConnId, usize> = BTreeMap::new();
    for (index, event) in events.iter().enumerate() {
        match &event.op {
            Op::Connected { conn, node, .. } => {
                open.insert(*conn, spans.len());
                spans.push(Span {
                    lane: lanes.client(conn.client),
                    start: micros(event.time),
                    end: None,
                    tag: lanes.node(*node) as u64,
                    ended_by: None,
                });
            }
            Op::ConnectionLost { conn, .. } | Op::Closed { conn } => {
                if let Some(at) = open.remove(conn) {
                    spans[at].end = Some(micros(event.time));
                    spans[at].ended_by = Some(index);
                }
            }
            _ => {}
        }
    }
    spans
}

/// Every group's leaderships, from one observed change to the next.
fn leads(events: &[Event], lanes: &Lanes) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut open: BTreeMap<u32, usize> = BTreeMap::new();
    for (index, event) in events.iter().enumerate() {
        let Op::LeaderObserved { group, leader } = &event.op else {
            continue;
        };
        if let Some(at) = open.remove(group) {
            spans[at].end = Some(micros(event.time));
            spans[at].ended_by = Some(index);
        }
        if let Some(id) = leader {
            open.insert(*group, spans.len());
            spans.push(Span {
                lane: lanes.node(Some(*id)),
                start: micros(event.time),
                end: None,
                tag: u64::from(*group),
                ended_by: None,
            });
        }
    }
    spans
}

/// The checker's violations, each with the events of its message.
fn violations(events: &[Event], check: &CheckReport, event_lanes: &[usize]) -> Vec<ViolationMark> {
    check
        .violations
        .iter()
        .map(|violation| {
            let msg = events.get(violation.index).and_then(|e| msg_of(&e.op));
            let related = match msg {
                Some(msg) => events
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| msg_of(&e.op) == Some(msg))
                    .map(|(index, _)| index)
                    .take(RELATED_MAX)
                    .collect(),
                None => vec![violation.index],
            };
            ViolationMark {
                rule: violation.rule.name(),
                index: violation.index,
                time: micros(violation.time),
                lane: event_lanes
                    .get(violation.index)
                    .copied()
                    .unwrap_or(RUN_LANE),
                detail: violation.detail.clone(),
                related,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{Rule, Violation};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A small cluster history: a producer sends through a partition, a
    /// consumer gets the message twice, a node crashes, leadership moves.
    fn scripted() -> (History, CheckReport) {
        let producer = ConnId {
            client: ClientId::Producer(0),
            n: 1,
        };
        let consumer = ConnId {
            client: ClientId::Consumer(0),
            n: 1,
        };
        let msg = MsgId {
            producer: 0,
            seq: 0,
        };
        let partition = Fault::Partition {
            client: "producer0".to_owned(),
            broker: "node1".to_owned(),
        };
        let crash = Fault::Crash {
            host: "node2".to_owned(),
        };
        let delivered = |n| Op::Delivered {
            conn: consumer,
            queue: "q0".to_owned(),
            msg,
            delivery_count: n,
            first_acquirer: n == 0,
        };
        let mut history = History::default();
        let ops = [
            (0, Op::BrokerStart { node: Some(1) }),
            (0, Op::BrokerStart { node: Some(2) }),
            (
                1,
                Op::LeaderObserved {
                    group: 1,
                    leader: Some(2),
                },
            ),
            (
                2,
                Op::Connected {
                    conn: producer,
                    address: "q0".to_owned(),
                    node: Some(1),
                },
            ),
            (
                3,
                Op::Connected {
                    conn: consumer,
                    address: "q0".to_owned(),
                    node: Some(2),
                },
            ),
            (
                4,
                Op::Send {
                    conn: producer,
                    msg,
                    resend: false,
                    kind: crate::history::MessageKind::PLAIN,
                },
            ),
            (
                5,
                Op::Fault(FaultEvent::Injected {
                    fault: partition.clone(),
                    lasts: ms(10),
                }),
            ),
            (
                6,
                Op::ProducerOutcome {
                    conn: producer,
                    msg,
                    outcome: Outcome::Accepted,
                },
            ),
            (7, delivered(0)),
            (
                8,
                Op::Settled {
                    conn: consumer,
                    queue: "q0".to_owned(),
                    msg,
                    outcome: Outcome::Accepted,
                },
            ),
            (
                9,
                Op::Fault(FaultEvent::Injected {
                    fault: crash,
                    lasts: ms(100),
                }),
            ),
            (12, delivered(1)),
            (15, Op::Fault(FaultEvent::Ended(partition))),
            (
                16,
                Op::LeaderObserved {
                    group: 1,
                    leader: Some(1),
                },
            ),
            (
                17,
                Op::ConnectionLost {
                    conn: producer,
                    why: "reset".to_owned(),
                },
            ),
            (20, Op::Fault(FaultEvent::HealedAll)),
            (
                21,
                Op::Aborted {
                    why: "test".to_owned(),
                },
            ),
        ];
        for (at, op) in ops {
            history.push(ms(at), op);
        }
        let check = CheckReport {
            violations: vec![Violation {
                rule: Rule::ConsumedRedelivered,
                index: 11,
                time: ms(12),
                detail: "delivered again".to_owned(),
            }],
            ..CheckReport::default()
        };
        (history, check)
    }

    #[test]
    fn a_scripted_history_lays_out_as_expected() {
        let (history, check) = scripted();
        let timeline = Timeline::build(&history, &check, &[Some(1), Some(2)], ms(20));
        insta::assert_debug_snapshot!(timeline);
    }

    #[test]
    fn every_fault_is_a_band_and_every_violation_a_mark() {
        let (history, check) = scripted();
        let timeline = Timeline::build(&history, &check, &[Some(1), Some(2)], ms(20));
        let injected = history
            .events()
            .iter()
            .filter(|e| matches!(e.op, Op::Fault(FaultEvent::Injected { .. })))
            .count();
        assert_eq!(timeline.bands.len(), injected);
        // The crash never ended: it lasts to the end of the run.
        assert_eq!(timeline.bands[1].end, None);
        assert_eq!(timeline.violations.len(), 1);
        // The send, the outcome, both deliveries and the settle.
        assert_eq!(timeline.violations[0].related, [5, 7, 8, 9, 11]);
        // Neither a band's edge nor a span's is lost: every event not drawn
        // as a band has a mark.
        let edges = history.events().len() - timeline.marks.len();
        assert_eq!(edges, 3, "two injections and an end");
    }

    #[test]
    fn ops_it_does_not_know_go_to_the_run_lane_with_their_text() {
        let mut history = History::default();
        history.push(ms(1), Op::BrokerState { queues: Vec::new() });
        let timeline = Timeline::build(&history, &CheckReport::default(), &[None], ms(1));
        assert_eq!(timeline.marks[0].lane, RUN_LANE);
        assert_eq!(timeline.marks[0].kind, MarkKind::Other);
    }
}
