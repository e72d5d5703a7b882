//! The handlers: metrics, probes, and the management API's JSON.

use http_body_util::Full;
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{Answer, Api};
use crate::io::Io;
use crate::metrics::{self, ConnectionInfo};
use crate::node::{GroupQueue, Manage, ManageError, Managed, NodeReport, ReplicaStatus};
use crate::permissions::Operation;
use crate::raft::group::Progress;

/// The address the broker-wide resources (connections, cluster status)
/// are checked against: a user needs `monitor` on it to see them.
pub const BROKER_ADDRESS: &str = "";

/// An answer with `body` of `content_type`.
pub(super) fn answer(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Answer {
    let mut answer = hyper::Response::new(Full::new(body.into()));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Every answer is a reading of now.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

/// `value` as JSON.
pub(super) fn json(status: StatusCode, value: &impl Serialize) -> Answer {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => answer(status, "application/json", body),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the answer",
        ),
    }
}

/// An error, as `{"error": message}`.
pub(super) fn error(status: StatusCode, message: &str) -> Answer {
    #[derive(Serialize)]
    struct Error<'a> {
        error: &'a str,
    }
    let body = serde_json::to_vec(&Error { error: message }).unwrap_or_default();
    answer(status, "application/json", body)
}

/// A queue, as `/api/queues` lists it.
#[derive(Debug, Serialize)]
struct QueueJson<'a> {
    name: &'a str,
    /// Messages ready for delivery.
    messages: u64,
    messages_unsettled: u64,
    bytes: u64,
    consumers: u64,
    published: u64,
    delivered: u64,
    redelivered: u64,
    acked: u64,
    dead_lettered: u64,
    expired: u64,
    oldest_message_age_seconds: Option<f64>,
    group: u32,
    leader: Option<u64>,
    replicas: &'a [u64],
}

/// A group, as `/api/cluster` lists it.
#[derive(Debug, Serialize)]
struct GroupJson {
    group: u32,
    leader: Option<u64>,
    applied_index: u64,
    rejoining: bool,
    /// Its Raft member's progress; absent on a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    raft: Option<RaftJson>,
}

impl GroupJson {
    fn new(status: &ReplicaStatus, progress: Option<&Progress>) -> Self {
        Self {
            group: status.group,
            leader: status.leader,
            applied_index: status.applied,
            rejoining: status.rejoining,
            raft: progress.map(RaftJson::from),
        }
    }
}

/// A Raft member's progress in a group.
#[derive(Debug, Serialize)]
struct RaftJson {
    term: u64,
    commit_index: u64,
    last_index: u64,
    /// While this node leads the group, how far each follower has come.
    followers: Vec<FollowerJson>,
}

#[derive(Debug, Serialize)]
struct FollowerJson {
    node: u64,
    matched_index: u64,
    lag_entries: u64,
}

impl From<&Progress> for RaftJson {
    fn from(progress: &Progress) -> Self {
        let followers = progress
            .matched
            .iter()
            .map(|(&node, &matched_index)| FollowerJson {
                node,
                matched_index,
                lag_entries: progress.last_index.saturating_sub(matched_index),
            })
            .collect();
        Self {
            term: progress.term,
            commit_index: progress.commit_index,
            last_index: progress.last_index,
            followers,
        }
    }
}

#[derive(Debug, Serialize)]
struct ClusterJson<'a> {
    node_id: u64,
    clustered: bool,
    members: &'a [u64],
    groups: Vec<GroupJson>,
    snapshots: u64,
}

#[derive(Debug, Serialize)]
struct ConnectionJson {
    id: u64,
    peer: String,
    listener: &'static str,
    opened_unix_ms: u64,
}

impl From<ConnectionInfo> for ConnectionJson {
    fn from(info: ConnectionInfo) -> Self {
        Self {
            id: info.id,
            peer: info.peer.to_string(),
            listener: info.port.label(),
            opened_unix_ms: info.opened_unix_ms,
        }
    }
}

#[derive(Debug, Serialize)]
struct Probe<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Why a node is not ready to serve, if it is not: in a cluster, a group
/// without a known leader, or whose member here is rejoining.
fn not_ready(report: &NodeReport) -> Option<String> {
    let leaderless: Vec<String> = report
        .groups
        .iter()
        .filter(|g| g.leader.is_none())
        .map(|g| g.group.to_string())
        .collect();
    if !leaderless.is_empty() {
        return Some(format!(
            "groups without a leader: {}",
            leaderless.join(", ")
        ));
    }
    let rejoining: Vec<String> = report
        .groups
        .iter()
        .filter(|g| g.rejoining)
        .map(|g| g.group.to_string())
        .collect();
    (!rejoining.is_empty()).then(|| format!("groups rejoining: {}", rejoining.join(", ")))
}

impl<I: Io> Api<I> {
    /// The node's report, or the answer saying it has stopped.
    async fn report(&self) -> Result<NodeReport, Answer> {
        self.node.report().await.map_err(|_| {
            let probe = Probe {
                status: "down",
                reason: Some("the broker node has stopped".to_owned()),
            };
            json(StatusCode::SERVICE_UNAVAILABLE, &probe)
        })
    }

    /// `GET /metrics`.
    pub(super) async fn metrics(&self) -> Answer {
        match self.report().await {
            Ok(report) => {
                let progress = self.node.raft_progress().await;
                let text = self
                    .metrics
                    .encode(&report, &progress, self.io.unix_time_ms());
                answer(StatusCode::OK, metrics::CONTENT_TYPE, text)
            }
            Err(answer) => answer,
        }
    }

    /// `GET /health`: the node answers.
    pub(super) async fn health(&self) -> Answer {
        match self.report().await {
            Ok(_) => json(
                StatusCode::OK,
                &Probe {
                    status: "up",
                    reason: None,
                },
            ),
            Err(answer) => answer,
        }
    }

    /// `GET /ready`: the node has recovered its state (it answers only once
    /// it has) and, in a cluster, knows a leader for each of its groups.
    pub(super) async fn ready(&self) -> Answer {
        let report = match self.report().await {
            Ok(report) => report,
            Err(answer) => return answer,
        };
        match not_ready(&report) {
            None => json(
                StatusCode::OK,
                &Probe {
                    status: "ready",
                    reason: None,
                },
            ),
            Some(reason) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &Probe {
                    status: "not ready",
                    reason: Some(reason),
                },
            ),
        }
    }

    /// The JSON of `queue`, with its group's leader.
    fn queue_json<'a>(&'a self, queue: &'a GroupQueue, report: &NodeReport) -> QueueJson<'a> {
        let (info, stats) = (&queue.report.info, &queue.report.stats);
        let leader = report
            .groups
            .iter()
            .find(|g| g.group == queue.group)
            .and_then(|g| g.leader);
        let now_ms = self.io.unix_time_ms();
        // Milliseconds to seconds: exact for any age a queue can have.
        #[allow(clippy::cast_precision_loss)]
        let age = |arrival_ms: u64| now_ms.saturating_sub(arrival_ms) as f64 / 1_000.0;
        QueueJson {
            name: &queue.report.name,
            messages: info.depth,
            messages_unsettled: info.unsettled,
            bytes: info.bytes,
            consumers: info.consumers,
            published: stats.published,
            delivered: stats.delivered,
            redelivered: stats.redelivered,
            acked: stats.acked,
            dead_lettered: stats.dead_lettered,
            expired: stats.expired,
            oldest_message_age_seconds: queue.report.oldest_arrival_ms.map(age),
            group: queue.group,
            leader,
            replicas: &self.members,
        }
    }

    /// `GET /api/queues`: the queues `user` may monitor.
    pub(super) async fn queues(&self, user: &str) -> Answer {
        let report = match self.report().await {
            Ok(report) => report,
            Err(answer) => return answer,
        };
        let queues: Vec<QueueJson<'_>> = report
            .queues
            .iter()
            .filter(|q| {
                self.permissions
                    .allows(user, &q.report.name, Operation::Monitor)
            })
            .map(|q| self.queue_json(q, &report))
            .collect();
        json(StatusCode::OK, &queues)
    }

    /// `GET /api/queues/{name}`. A user who may not monitor the name is
    /// refused whether or not the queue exists, so that the answer does
    /// not tell.
    pub(super) async fn queue(&self, user: &str, name: &str) -> Answer {
        if !self.permissions.allows(user, name, Operation::Monitor) {
            return error(StatusCode::FORBIDDEN, "not permitted to monitor this queue");
        }
        let report = match self.report().await {
            Ok(report) => report,
            Err(answer) => return answer,
        };
        match report.queues.iter().find(|q| q.report.name == name) {
            Some(queue) => json(StatusCode::OK, &self.queue_json(queue, &report)),
            None => error(StatusCode::NOT_FOUND, "no such queue"),
        }
    }

    /// `GET /api/connections`.
    pub(super) fn connections(&self, user: &str) -> Answer {
        if !self
            .permissions
            .allows(user, BROKER_ADDRESS, Operation::Monitor)
        {
            return error(StatusCode::FORBIDDEN, "not permitted to monitor the broker");
        }
        let connections: Vec<ConnectionJson> = self
            .metrics
            .open_connections()
            .into_iter()
            .map(ConnectionJson::from)
            .collect();
        json(StatusCode::OK, &connections)
    }

    /// `GET /api/cluster`.
    pub(super) async fn cluster(&self, user: &str) -> Answer {
        if !self
            .permissions
            .allows(user, BROKER_ADDRESS, Operation::Monitor)
        {
            return error(StatusCode::FORBIDDEN, "not permitted to monitor the broker");
        }
        let report = match self.report().await {
            Ok(report) => report,
            Err(answer) => return answer,
        };
        let progress = self.node.raft_progress().await;
        let groups = report.groups.iter().map(|status| {
            let progress = progress.iter().find(|p| p.group == status.group);
            GroupJson::new(status, progress)
        });
        let cluster = ClusterJson {
            node_id: report.node_id,
            clustered: report.clustered,
            members: &self.members,
            groups: groups.collect(),
            snapshots: report.snapshots,
        };
        json(StatusCode::OK, &cluster)
    }
}

/// The body of `POST /api/queues/{name}/move`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    to: String,
    /// At most this many; all the ready messages if absent.
    max: Option<u64>,
}

/// The answer to a queue's purge, move or deletion, or a connection's
/// close.
#[derive(Debug, Default, Serialize)]
struct ManagedJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purged: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    moved: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    closed: Option<bool>,
}

impl<I: Io> Api<I> {
    /// Refuses `user` who may not manage `address`, before anything is
    /// looked up: so that the answer does not tell whether it exists.
    fn may_manage(&self, user: &str, address: &str) -> Result<(), Answer> {
        if self.permissions.allows(user, address, Operation::Manage) {
            return Ok(());
        }
        let what = if address == BROKER_ADDRESS {
            "not permitted to manage the broker"
        } else {
            "not permitted to manage this queue"
        };
        Err(error(StatusCode::FORBIDDEN, what))
    }

    /// Has the node carry out `command` as `user`, answering with what it
    /// did.
    async fn manage(&self, command: Manage) -> Result<Managed, Answer> {
        let answered = self.node.manage(command).await.map_err(|_| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the broker node has stopped",
            )
        })?;
        answered.map_err(|refused| {
            let status = match refused {
                ManageError::NotFound(_) => StatusCode::NOT_FOUND,
                ManageError::SameQueue => StatusCode::BAD_REQUEST,
                ManageError::DifferentGroups { .. } => StatusCode::CONFLICT,
                ManageError::Unknown => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(status, &refused.to_string())
        })
    }

    /// `POST /api/queues/{name}/purge`.
    pub(super) async fn purge(&self, user: &str, name: String) -> Answer {
        if let Err(answer) = self.may_manage(user, &name) {
            return answer;
        }
        info!(user, queue = name, "purge asked for");
        let command = Manage::Purge {
            queue: name.clone(),
        };
        match self.manage(command).await {
            Ok(Managed::Purged(count)) => json(
                StatusCode::OK,
                &ManagedJson {
                    queue: Some(&name),
                    purged: Some(count),
                    ..ManagedJson::default()
                },
            ),
            Ok(_) => unexpected(),
            Err(answer) => answer,
        }
    }

    /// `DELETE /api/queues/{name}`.
    pub(super) async fn delete(&self, user: &str, name: String) -> Answer {
        if let Err(answer) = self.may_manage(user, &name) {
            return answer;
        }
        info!(user, queue = name, "deletion asked for");
        let command = Manage::Delete {
            queue: name.clone(),
        };
        match self.manage(command).await {
            Ok(Managed::Deleted) => json(
                StatusCode::OK,
                &ManagedJson {
                    queue: Some(&name),
                    deleted: Some(true),
                    ..ManagedJson::default()
                },
            ),
            Ok(_) => unexpected(),
            Err(answer) => answer,
        }
    }

    /// `POST /api/queues/{name}/move` with `{"to": …, "max": …}`: `manage`
    /// on both queues.
    pub(super) async fn move_messages(&self, user: &str, name: String, body: &[u8]) -> Answer {
        let Ok(MoveBody { to, max }) = serde_json::from_slice(body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "the body must be {\"to\": QUEUE, \"max\": COUNT}, max optional",
            );
        };
        for queue in [&name, &to] {
            if let Err(answer) = self.may_manage(user, queue) {
                return answer;
            }
        }
        info!(user, from = name, to, max, "move asked for");
        let command = Manage::Move {
            from: name.clone(),
            to: to.clone(),
            max: max.unwrap_or(u64::MAX),
        };
        match self.manage(command).await {
            Ok(Managed::Moved(count)) => json(
                StatusCode::OK,
                &ManagedJson {
                    queue: Some(&name),
                    to: Some(&to),
                    moved: Some(count),
                    ..ManagedJson::default()
                },
            ),
            Ok(_) => unexpected(),
            Err(answer) => answer,
        }
    }

    /// `DELETE /api/connections/{id}`: `manage` on the broker.
    pub(super) async fn close(&self, user: &str, id: u64) -> Answer {
        if let Err(answer) = self.may_manage(user, BROKER_ADDRESS) {
            return answer;
        }
        let command = Manage::Close {
            conn: id,
            operator: user.to_owned(),
        };
        match self.manage(command).await {
            Ok(Managed::Closed) => json(
                StatusCode::OK,
                &ManagedJson {
                    connection: Some(id),
                    closed: Some(true),
                    ..ManagedJson::default()
                },
            ),
            Ok(_) => unexpected(),
            Err(answer) => answer,
        }
    }
}

/// The node answered a command with what another does: a bug.
fn unexpected() -> Answer {
    debug_assert!(false, "the node answered another command");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the broker answered another command",
    )
}
