//! What the cluster world adds to the single-node one: its broker hosts
//! (`node1` … `nodeN`, each `server::run` with a cluster configuration),
//! and the nemesis's view of the Raft groups' leaders, which each host
//! keeps up to date from its node's [`NodeHandle::replica_status`].
//!
//! [`NodeHandle::replica_status`]: sluice::node::NodeHandle::replica_status

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use sluice::config::{ClusterConfig, Peer};
use sluice::node::ReplicaStatus;

use crate::history::{NodeId, broker_name};

/// Where nodes listen for each other.
const CLUSTER_PORT: u16 = 5700;
/// The cluster's shared secret (at least the transport's minimum length).
const SECRET: &str = "the simulated cluster's shared secret";

/// The largest cluster the world runs.
pub const NODES_MAX: u32 = 7;

/// The broker hosts of a world of `nodes` nodes: the one `broker`, or
/// `node1` … `nodeN`.
pub fn broker_nodes(nodes: u32) -> Vec<NodeId> {
    if nodes <= 1 {
        vec![None]
    } else {
        (1..=u64::from(nodes)).map(Some).collect()
    }
}

/// Node `id`'s membership of a cluster of `nodes`: every other node is a
/// peer, and there is one data group per node (the broker's default).
pub fn cluster_config(id: u64, nodes: u32) -> ClusterConfig {
    let peers = (1..=u64::from(nodes))
        .filter(|&peer| peer != id)
        .map(|peer| Peer {
            id: peer,
            address: format!("{}:{CLUSTER_PORT}", broker_name(Some(peer))),
        })
        .collect();
    ClusterConfig {
        node_id: id,
        listen: (Ipv4Addr::UNSPECIFIED, CLUSTER_PORT).into(),
        peers,
        secret: SECRET.to_owned(),
        groups: 0,
    }
}

/// What the nodes last said of their groups: the nemesis finds leaders
/// here. Each broker host writes its own node's statuses while it runs.
#[derive(Debug, Default)]
pub struct Replicas {
    by_node: RefCell<BTreeMap<u64, Vec<ReplicaStatus>>>,
    /// Each group's leader as [`Replicas::leader_changes`] last told it.
    told: RefCell<BTreeMap<u32, Option<u64>>>,
}

impl Replicas {
    /// Node `node` reported `statuses`.
    pub fn update(&self, node: u64, statuses: Vec<ReplicaStatus>) {
        self.by_node.borrow_mut().insert(node, statuses);
    }

    /// Node `node` (re)started: what it said before no longer holds.
    pub fn forget(&self, node: u64) {
        self.by_node.borrow_mut().remove(&node);
    }

    /// The node named `host` went down: what it said no longer holds.
    pub fn forget_host(&self, host: &str) {
        let by_node = &mut self.by_node.borrow_mut();
        by_node.retain(|&id, _| broker_name(Some(id)) != host);
    }

    /// Whether the node named `host` has reported since it last started,
    /// with no group still rejoining after damage to its log.
    pub fn rejoined(&self, host: &str) -> bool {
        self.by_node.borrow().iter().any(|(&id, statuses)| {
            broker_name(Some(id)) == host && statuses.iter().all(|status| !status.rejoining)
        })
    }

    /// Whether any node reported a group still rejoining.
    pub fn any_rejoining(&self) -> bool {
        let by_node = self.by_node.borrow();
        by_node.values().flatten().any(|status| status.rejoining)
    }

    /// The groups any node reported, in order.
    pub fn groups(&self) -> Vec<u32> {
        let mut groups: Vec<u32> = self
            .by_node
            .borrow()
            .values()
            .flatten()
            .map(|status| status.group)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    /// The leader of `group` as most nodes see it (the lowest id on a tie),
    /// if any node knows one.
    pub fn leader_of(&self, group: u32) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for statuses in self.by_node.borrow().values() {
            let leader = statuses
                .iter()
                .find(|status| status.group == group)
                .and_then(|status| status.leader);
            if let Some(leader) = leader {
                *votes.entry(leader).or_default() += 1;
            }
        }
        let most = votes.values().copied().max()?;
        votes
            .into_iter()
            .find(|&(_, count)| count == most)
            .map(|(leader, _)| leader)
    }

    /// The groups whose leader ([`Replicas::leader_of`]) changed since the
    /// last call, each with its leader now, for the history's timeline.
    pub fn leader_changes(&self) -> Vec<(u32, Option<u64>)> {
        let mut changes = Vec::new();
        for group in self.groups() {
            let leader = self.leader_of(group);
            let told = self.told.borrow_mut().insert(group, leader);
            if told != Some(leader) {
                changes.push((group, leader));
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(group: u32, leader: Option<u64>) -> ReplicaStatus {
        ReplicaStatus {
            group,
            leader,
            applied: 0,
            digest: 0,
            rejoining: false,
        }
    }

    #[test]
    fn the_leader_is_the_one_most_nodes_name() {
        let replicas = Replicas::default();
        assert_eq!(replicas.leader_of(1), None);
        replicas.update(1, vec![status(1, Some(2)), status(2, None)]);
        replicas.update(2, vec![status(1, Some(2)), status(2, Some(3))]);
        replicas.update(3, vec![status(1, Some(3)), status(2, Some(3))]);
        assert_eq!(replicas.leader_of(1), Some(2));
        assert_eq!(replicas.leader_of(2), Some(3));
        assert_eq!(replicas.groups(), [1, 2]);
        replicas.forget(2);
        // One vote each: the lowest id.
        assert_eq!(replicas.leader_of(1), Some(2));
        replicas.forget(1);
        assert_eq!(replicas.leader_of(1), Some(3));
    }

    #[test]
    fn leader_changes_are_told_once() {
        let replicas = Replicas::default();
        assert!(replicas.leader_changes().is_empty());
        replicas.update(1, vec![status(1, Some(2)), status(2, None)]);
        assert_eq!(replicas.leader_changes(), [(1, Some(2)), (2, None)]);
        assert!(replicas.leader_changes().is_empty(), "told already");
        replicas.update(1, vec![status(1, Some(3)), status(2, None)]);
        assert_eq!(replicas.leader_changes(), [(1, Some(3))]);
    }

    #[test]
    fn a_cluster_config_names_every_other_node() {
        let config = cluster_config(2, 3);
        assert_eq!(config.node_id, 2);
        let peers: Vec<(u64, &str)> = config
            .peers
            .iter()
            .map(|p| (p.id, p.address.as_str()))
            .collect();
        assert_eq!(peers, [(1, "node1:5700"), (3, "node3:5700")]);
        assert!(config.is_clustered());
        assert_eq!(broker_nodes(1), [None]);
        assert_eq!(broker_nodes(3), [Some(1), Some(2), Some(3)]);
    }
}
