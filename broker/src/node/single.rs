//! The single node's task: a thin driver around its sans-IO core
//! ([`Core`]). It owns what the core must not: the channel from
//! connections and theirs, the log's completions, the clock, the timer, and
//! the tasks that write snapshots.

use std::future::Future;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::core::{Core, decode_record};
use super::{Inboxes, NodeError, NodeHandle, NodeSettings, Now, Request};
use crate::io::{self as seam, Io};
use crate::log::{self, Log};
use crate::queue::Queues;

/// The log's directory inside the data directory.
const LOG_DIR: &str = "log";

/// The most requests the node handles per wake-up before it applies what
/// became durable, so that a flood of requests cannot hold back outcomes.
const REQUESTS_PER_WAKE: usize = 256;

/// Opens the log, recovers the queues from it, and returns a handle to the
/// node plus the task to run it (spawn it; it ends when every handle is
/// dropped, or with an error if the log fails).
pub async fn start<I: Io>(
    io: I,
    settings: NodeSettings,
) -> Result<
    (
        NodeHandle,
        impl Future<Output = Result<(), NodeError>> + Send,
    ),
    NodeError,
> {
    let log_dir = settings.config.data_dir.join(LOG_DIR);
    let (log, recovered) = log::open(io.clone(), &log_dir, settings.log_options()).await?;
    for report in &recovered.repair {
        warn!(
            ?report,
            "log repaired: what followed the damage was dropped"
        );
    }
    let mut queues = match recovered.snapshot {
        Some((lsn, state)) => {
            Queues::restore(state).map_err(|error| NodeError::Record { lsn, error })?
        }
        None => Queues::new(),
    };
    let mut effects = Vec::new();
    let records = recovered.records.len();
    for (lsn, record) in recovered.records {
        let (now_ms, command) =
            decode_record(record).map_err(|error| NodeError::Record { lsn, error })?;
        queues.apply(now_ms, command, &mut effects);
        effects.clear();
    }
    info!(records, "recovered the queues from the log");
    let (requests, inbox) = mpsc::unbounded_channel();
    let core = Core::new(settings, log, queues, Now::read(&io));
    let driver = Driver {
        io,
        core,
        inboxes: Inboxes::default(),
    };
    Ok((NodeHandle { requests }, driver.run(inbox)))
}

/// The task's state.
struct Driver<I: Io> {
    io: I,
    core: Core<Log>,
    inboxes: Inboxes,
}

impl<I: Io> Driver<I> {
    /// Runs until every handle is gone and what was submitted is applied,
    /// or the log fails.
    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
    ) -> Result<(), NodeError> {
        let mut open = true;
        let mut burst = Vec::with_capacity(REQUESTS_PER_WAKE);
        while open || !self.core.is_idle() {
            let timeout = self.core.poll_timeout();
            let outstanding = self.core.log().outstanding() > 0;
            tokio::select! {
                request = requests.recv(), if open => match request {
                    Some(request) => {
                        // One reading of the clocks, and one batch of the
                        // log, for the whole burst.
                        let now = Now::read(&self.io);
                        self.take(request, &mut burst);
                        for _ in 1..REQUESTS_PER_WAKE {
                            // Empty, or closed: `recv` sees the close next.
                            let Ok(request) = requests.try_recv() else { break };
                            self.take(request, &mut burst);
                        }
                        self.core.handle_requests(now, burst.drain(..))?;
                    }
                    // Every handle is gone: finish what is in the pipeline.
                    None => {
                        open = false;
                        self.core.handle_close()?;
                    }
                },
                completion = self.core.log().completion(), if outstanding => {
                    self.core.handle_completion(completion)?;
                }
                () = sleep_until(timeout) => self.core.handle_timeout(Now::read(&self.io))?,
            }
            self.carry_out();
        }
        Ok(())
    }

    /// Queues a request for the core, but for what it cannot take: a
    /// connection's channel, and the queries, answered here.
    fn take(&mut self, request: Request, burst: &mut Vec<Request>) {
        match request {
            Request::Register { conn, inbox } => self.inboxes.register(conn, inbox),
            // The asker may have given up waiting: nothing to do then.
            Request::QueueInfo { reply } => {
                let _ = reply.send(self.core.queue_info());
            }
            // A single node replicates nothing.
            Request::ReplicaStatuses { reply } => {
                let _ = reply.send(Vec::new());
            }
            // What the core tells a connection that has gone is dropped.
            Request::Disconnect { conn } => {
                self.inboxes.forget(conn);
                burst.push(Request::Disconnect { conn });
            }
            request => burst.push(request),
        }
    }

    /// Sends what the core has for connections, and writes the snapshots it
    /// asks for.
    fn carry_out(&mut self) {
        while let Some((conn, message)) = self.core.poll_to_connection() {
            self.inboxes.send(conn, message);
        }
        while let Some((upto, state)) = self.core.poll_snapshot() {
            let snapshot = self.core.log().snapshot(upto, state);
            self.io.spawn(async move {
                if let Err(error) = snapshot.await {
                    error!(%error, "snapshot failed; the log keeps growing until the next one");
                }
            });
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => seam::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
