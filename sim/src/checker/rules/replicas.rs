//! Rule 6.

use std::collections::BTreeMap;

use crate::checker::facts::Facts;
use crate::checker::{CheckReport, Rule, Violation};
use crate::history::{Event, NodeReplicas, Op};

use super::Check;

/// Rule 6, **replica convergence** (a cluster): once every client has
/// gone, every node must have applied every group to the same index
/// within a bound of simulated time, no member may still be rejoining
/// after damage to its log, and then every group's state digest must be
/// the same on every node. Checked once the nodes reported their replicas
/// (their last report counts).
#[derive(Default)]
pub(super) struct Replicas<'h> {
    /// The nodes' last report, with its history index.
    reported: Option<(usize, &'h [NodeReplicas])>,
}

impl<'h> Check<'h> for Replicas<'h> {
    fn observe(
        &mut self,
        index: usize,
        event: &'h Event,
        _facts: &Facts<'h>,
        _report: &mut CheckReport,
    ) {
        if let Op::Replicas { nodes } = &event.op {
            self.reported = Some((index, nodes));
        }
    }

    fn finish(self: Box<Self>, facts: &Facts<'h>, report: &mut CheckReport) {
        let Some((index, nodes)) = self.reported else {
            return;
        };
        report.stats.checked.insert(Rule::ReplicaConvergence);
        for detail in divergences(nodes) {
            report.violations.push(Violation {
                rule: Rule::ReplicaConvergence,
                index,
                time: facts.events[index].time,
                detail,
            });
        }
    }
}

/// How the nodes' replicas fail to converge, one line per group (or per
/// node that did not answer).
pub(in crate::checker) fn divergences(nodes: &[NodeReplicas]) -> Vec<String> {
    let mut found = Vec::new();
    // Per group, each node's (applied, digest).
    let mut groups: BTreeMap<u32, Vec<(u64, u64, u32)>> = BTreeMap::new();
    let reported = nodes.iter().filter(|node| node.groups.is_some()).count();
    for node in nodes {
        let Some(statuses) = &node.groups else {
            found.push(format!("node{} did not report its replicas", node.node));
            continue;
        };
        for status in statuses {
            if status.rejoining {
                found.push(format!(
                    "group {}: node{} is still rejoining after damage to its log",
                    status.group, node.node
                ));
            }
            let of_group = groups.entry(status.group).or_default();
            of_group.push((node.node, status.applied, status.digest));
        }
    }
    for (group, replicas) in groups {
        let list = |show: &dyn Fn(&(u64, u64, u32)) -> String| {
            replicas.iter().map(show).collect::<Vec<_>>().join(", ")
        };
        if replicas.len() != reported {
            found.push(format!(
                "group {group}: only some nodes have it: {}",
                list(&|(node, _, _)| format!("node{node}"))
            ));
        } else if replicas.iter().any(|r| r.1 != replicas[0].1) {
            found.push(format!(
                "group {group}: the nodes did not apply it to the same index in time: {}",
                list(&|(node, applied, _)| format!("node{node} applied {applied}"))
            ));
        } else if replicas.iter().any(|r| r.2 != replicas[0].2) {
            found.push(format!(
                "group {group}: every node applied it to index {}, yet their states differ: {}",
                replicas[0].1,
                list(&|(node, _, digest)| format!("node{node} digest {digest:#010x}"))
            ));
        }
    }
    found
}
