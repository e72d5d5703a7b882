//! The tables `sluice ctl` prints without `--json`: one row per item,
//! columns aligned, numbers to the right.

use serde_json::Value as Json;

use super::{ClusterCommand, CtlCommand, QueueCommand};

/// The text for `command`'s answer, or `None` if the answer is not what the
/// API gives.
pub(super) fn render(command: &CtlCommand, answer: &Json) -> Option<String> {
    match command {
        CtlCommand::Queues => queues(answer.as_array()?),
        CtlCommand::Queue {
            command: QueueCommand::Show { .. },
        } => queue(answer),
        CtlCommand::Purge { name } => Some(format!(
            "purged {} ready messages from {name}\n",
            answer["purged"].as_u64()?
        )),
        CtlCommand::Delete { name, .. } => {
            answer["deleted"].as_bool()?;
            Some(format!("deleted queue {name}\n"))
        }
        CtlCommand::Move { name, to, .. } => Some(format!(
            "moved {} messages from {name} to {to}\n",
            answer["moved"].as_u64()?
        )),
        CtlCommand::Connections => connections(answer.as_array()?),
        CtlCommand::Close { id } => {
            answer["closed"].as_bool()?;
            Some(format!("closing connection {id}\n"))
        }
        CtlCommand::Cluster {
            command: ClusterCommand::Status,
        } => cluster(answer),
        CtlCommand::Health => Some(format!("{}\n", answer["status"].as_str()?)),
    }
}

/// A field as a cell: strings bare, `null` as `-`, lists joined by commas.
fn cell(value: &Json) -> String {
    match value {
        Json::Null => "-".to_owned(),
        Json::String(text) => text.clone(),
        Json::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Rows under `headers`, each column as wide as its widest cell; numbers
/// right-aligned.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..headers.len())
        .map(|column| {
            let cells = rows.iter().map(|row| row[column].chars().count());
            cells.fold(headers[column].len(), usize::max)
        })
        .collect();
    let numeric: Vec<bool> = (0..headers.len())
        .map(|column| {
            !rows.is_empty()
                && rows
                    .iter()
                    .all(|row| row[column] == "-" || row[column].parse::<f64>().is_ok())
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(column, text)| match numeric[column] {
                true => format!("{text:>width$}", width = widths[column]),
                false => format!("{text:<width$}", width = widths[column]),
            })
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn queues(list: &[Json]) -> Option<String> {
    let fields = [
        "name",
        "messages",
        "messages_unsettled",
        "consumers",
        "published",
        "acked",
        "group",
        "leader",
    ];
    let rows = list
        .iter()
        .map(|queue| fields.iter().map(|field| cell(&queue[field])).collect())
        .collect::<Vec<_>>();
    let headers = [
        "NAME",
        "READY",
        "UNSETTLED",
        "CONSUMERS",
        "PUBLISHED",
        "ACKED",
        "GROUP",
        "LEADER",
    ];
    Some(table(&headers, &rows))
}

fn queue(answer: &Json) -> Option<String> {
    let object = answer.as_object()?;
    let rows: Vec<Vec<String>> = object
        .iter()
        .map(|(key, value)| vec![key.clone(), cell(value)])
        .collect();
    let width = rows.iter().map(|row| row[0].len()).max().unwrap_or(0);
    let lines: Vec<String> = rows
        .iter()
        .map(|row| format!("{:<width$}  {}\n", row[0], row[1]))
        .collect();
    Some(lines.concat())
}

fn connections(list: &[Json]) -> Option<String> {
    let fields = ["id", "peer", "listener", "opened_unix_ms"];
    let rows = list
        .iter()
        .map(|connection| {
            fields
                .iter()
                .map(|field| cell(&connection[field]))
                .collect()
        })
        .collect::<Vec<_>>();
    Some(table(&["ID", "PEER", "LISTENER", "OPENED_UNIX_MS"], &rows))
}

fn cluster(answer: &Json) -> Option<String> {
    let mode = match answer["clustered"].as_bool()? {
        true => "clustered",
        false => "single node",
    };
    let mut out = format!(
        "node {} ({mode}), members {}, snapshots {}\n",
        cell(&answer["node_id"]),
        cell(&answer["members"]),
        cell(&answer["snapshots"]),
    );
    let fields = ["group", "leader", "applied_index", "rejoining"];
    let rows = answer["groups"]
        .as_array()?
        .iter()
        .map(|group| {
            let raft = &group["raft"];
            let mut row: Vec<String> = fields.iter().map(|field| cell(&group[field])).collect();
            row.extend([
                cell(&raft["term"]),
                cell(&raft["commit_index"]),
                follower_lags(&raft["followers"]),
            ]);
            row
        })
        .collect::<Vec<_>>();
    let headers = [
        "GROUP",
        "LEADER",
        "APPLIED",
        "REJOINING",
        "TERM",
        "COMMIT",
        "FOLLOWER_LAG",
    ];
    out.push_str(&table(&headers, &rows));
    Some(out)
}

/// A leader's followers' lags as `node:entries`, space-separated; `-`
/// where there are none (a follower, or a single node).
fn follower_lags(followers: &Json) -> String {
    let lags: Vec<String> = followers
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| format!("{}:{}", cell(&f["node"]), cell(&f["lag_entries"])))
        .collect();
    if lags.is_empty() {
        "-".to_owned()
    } else {
        lags.join(" ")
    }
}
