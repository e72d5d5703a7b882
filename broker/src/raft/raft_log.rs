//! raft-rs logs through `slog`; the broker logs through `tracing`. This
//! drain forwards each slog record as a `tracing` event (target
//! `sluice::raft`), with its key-value pairs appended to the message, so that
//! Raft's own account of elections and appends lands in the same log, inside
//! the replica's span.

use std::fmt::{self, Write as _};

use slog::{Drain, KV, Key, Level, OwnedKVList, Record, Serializer};

/// A `slog::Logger` whose records go to `tracing`.
pub fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

/// The drain behind [`logger`].
struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let level = match record.level() {
            Level::Critical | Level::Error => tracing::Level::ERROR,
            Level::Warning => tracing::Level::WARN,
            Level::Info => tracing::Level::INFO,
            Level::Debug => tracing::Level::DEBUG,
            Level::Trace => tracing::Level::TRACE,
        };
        // Formatting costs more than the simulation: only for enabled levels.
        if !enabled(level) {
            return Ok(());
        }
        let mut line = KeyValues(record.msg().to_string());
        // Errors here are our own `fmt::Write` into a `String`: none.
        let _ = record.kv().serialize(record, &mut line);
        let _ = values.serialize(record, &mut line);
        let line = line.0;
        match level {
            tracing::Level::ERROR => tracing::error!(target: "sluice::raft", "{line}"),
            tracing::Level::WARN => tracing::warn!(target: "sluice::raft", "{line}"),
            tracing::Level::INFO => tracing::info!(target: "sluice::raft", "{line}"),
            tracing::Level::DEBUG => tracing::debug!(target: "sluice::raft", "{line}"),
            tracing::Level::TRACE => tracing::trace!(target: "sluice::raft", "{line}"),
        }
        Ok(())
    }
}

/// Whether `tracing` would record an event of `level` from raft-rs.
fn enabled(level: tracing::Level) -> bool {
    match level {
        tracing::Level::ERROR => tracing::enabled!(target: "sluice::raft", tracing::Level::ERROR),
        tracing::Level::WARN => tracing::enabled!(target: "sluice::raft", tracing::Level::WARN),
        tracing::Level::INFO => tracing::enabled!(target: "sluice::raft", tracing::Level::INFO),
        tracing::Level::DEBUG => tracing::enabled!(target: "sluice::raft", tracing::Level::DEBUG),
        tracing::Level::TRACE => tracing::enabled!(target: "sluice::raft", tracing::Level::TRACE),
    }
}

/// A message with `key=value` pairs appended.
struct KeyValues(String);

impl Serializer for KeyValues {
    fn emit_arguments(&mut self, key: Key, value: &fmt::Arguments<'_>) -> slog::Result {
        // Writing into a `String` cannot fail.
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}
