//! What the integration tests share: a broker on a loopback port.

// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use sluice::config::Config;
use sluice::io::{Io, TokioIo};
use sluice::server::{self, ShutdownTrigger, shutdown_channel};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Bounds every wait on the real network; never slept out.
pub const WAIT: Duration = Duration::from_secs(30);

/// A broker running `server::run` on `TokioIo`, on a free loopback port.
pub struct Broker {
    pub addr: SocketAddr,
    trigger: ShutdownTrigger,
    server: JoinHandle<Result<(), server::ServerError>>,
}

impl Broker {
    pub async fn start() -> Self {
        let (trigger, shutdown) = shutdown_channel();
        let (ready, bound) = oneshot::channel();
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("a socket address"),
            ..Config::default()
        };
        let server = TokioIo.spawn(server::run(config, TokioIo, shutdown, move |addr| {
            let _ = ready.send(addr);
        }));
        let addr = timeout(WAIT, bound)
            .await
            .expect("the broker binds in time")
            .expect("the broker reports its address");
        Self {
            addr,
            trigger,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("amqp://{}", self.addr)
    }

    /// Shuts the broker down and checks that it stopped cleanly.
    pub async fn stop(self) {
        self.trigger.trigger();
        timeout(WAIT, self.server)
            .await
            .expect("the broker stops in time")
            .expect("the server task does not panic")
            .expect("the server ends without error");
    }
}
