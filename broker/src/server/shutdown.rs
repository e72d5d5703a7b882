//! Graceful shutdown: one trigger, any number of listeners.
//!
//! A value passed into [`super::run`] rather than a global or a signal
//! handler, so that every turmoil host (and every restart of one) has its
//! own.

use tokio::sync::watch;

/// Starts the shutdown of everything holding the paired [`Shutdown`]s.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Resolves once shutdown starts. Clone it for every task that must notice.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and listener.
#[must_use]
pub fn shutdown_channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger(sender), Shutdown(receiver))
}

impl ShutdownTrigger {
    /// Starts shutdown. Idempotent.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Waits until shutdown has started; returns at once if it already has.
    /// Cancel-safe. Dropping the trigger without triggering does not count
    /// as a shutdown: such a server runs until its runtime stops.
    pub async fn wait(&mut self) {
        if self.0.wait_for(|started| *started).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Waker};

    use super::*;

    fn is_ready(future: impl Future<Output = ()>) -> bool {
        let mut future = pin!(future);
        let mut context = Context::from_waker(Waker::noop());
        future.as_mut().poll(&mut context).is_ready()
    }

    #[test]
    fn waits_until_triggered_then_stays_triggered() {
        let (trigger, mut shutdown) = shutdown_channel();
        let mut late_clone = shutdown.clone();
        assert!(!is_ready(shutdown.wait()));
        trigger.trigger();
        assert!(is_ready(shutdown.wait()));
        assert!(is_ready(shutdown.wait()));
        assert!(is_ready(late_clone.wait()));
    }

    #[test]
    fn dropped_trigger_is_not_a_shutdown() {
        let (trigger, mut shutdown) = shutdown_channel();
        drop(trigger);
        assert!(!is_ready(shutdown.wait()));
    }

    #[test]
    fn trigger_then_drop_is_still_a_shutdown() {
        let (trigger, mut shutdown) = shutdown_channel();
        trigger.trigger();
        drop(trigger);
        assert!(is_ready(shutdown.wait()));
    }
}
