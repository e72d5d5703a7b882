//! Engine tests: a client-role and a server-role [`Connection`] wired back
//! to back in memory with virtual time (the `Pair` harness in [`util`], after
//! quinn-proto's), checked by exact event sequences and by decoding what each
//! side put on the wire.
//!
//! [`Connection`]: super::Connection

/// Asserts that `$events` (a `Vec<Event>`) holds exactly one event per
/// pattern, in order, each matching its pattern (and guard).
macro_rules! assert_events {
    ($events:expr, [$($pat:pat $(if $guard:expr)?),* $(,)?]) => {{
        let events: Vec<$crate::amqp::engine::Event> = $events;
        let patterns: &[&str] = &[$(stringify!($pat)),*];
        assert_eq!(events.len(), patterns.len(), "expected events {patterns:#?}, got {events:#?}");
        #[allow(unused_mut, unused_variables)]
        let mut iter = events.iter();
        $(
            let event = iter.next().expect("the length was checked above");
            assert!(
                matches!(event, $pat $(if $guard)?),
                "expected an event matching `{}`, got {event:#?}\nall events: {events:#?}",
                stringify!($pat $(if $guard)?),
            );
        )*
    }};
}

mod flow;
mod handshake;
mod links;
mod settlement;
mod timers;
mod transfer;
mod util;
mod violations;
