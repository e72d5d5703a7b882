//! The queue's planted bugs (feature `planted-bugs`) change what the
//! machine does, and only when planted.

use super::*;
use crate::planted::Plant;

/// A queue holding `a` and `b`; consumer 1 holds `a` unsettled and has no
/// credit left. Returns the bench and `a`'s seq.
fn one_held(plant: Option<Plant>) -> (Bench, Seq) {
    let mut bench = Bench::new();
    bench.queues.plant(crate::planted::Plants::new(plant));
    bench.declare("q", durable_queue());
    let first = bench.send("q", "a");
    bench.send("q", "b");
    bench.attach(1, "q");
    assert_eq!(delivered(&bench.credit(1, 1)), [(1, first)]);
    (bench, first)
}

/// What consumer 1 receives, once `a` is settled with `outcome`, when it
/// grants plenty of credit.
fn delivered_after(plant: Option<Plant>, outcome: Outcome) -> Vec<(ConsumerId, Seq)> {
    let (mut bench, first) = one_held(plant);
    bench.settle("q", first, outcome);
    delivered(&bench.credit(1, 10))
}

#[test]
fn lose_redelivery_drops_a_released_message() {
    let first = 1;
    assert_eq!(
        delivered_after(None, Outcome::Released),
        [(1, first), (1, first + 1)],
        "without the plant a released message comes back"
    );
    assert_eq!(
        delivered_after(Some(Plant::LoseRedelivery), Outcome::Released),
        [(1, first + 1)],
        "the plant loses it"
    );
    // Accepting is unaffected.
    assert_eq!(
        delivered_after(Some(Plant::LoseRedelivery), Outcome::Accepted),
        [(1, first + 1)]
    );
}

#[test]
fn double_deliver_requeues_an_accepted_message() {
    let first = 1;
    assert_eq!(
        delivered_after(None, Outcome::Accepted),
        [(1, first + 1)],
        "without the plant an accepted message is gone"
    );
    assert_eq!(
        delivered_after(Some(Plant::DoubleDeliver), Outcome::Accepted),
        [(1, first), (1, first + 1)],
        "the plant delivers it again"
    );
    // Releasing is unaffected.
    assert_eq!(
        delivered_after(Some(Plant::DoubleDeliver), Outcome::Released),
        [(1, first), (1, first + 1)]
    );
}

#[test]
fn other_plants_leave_the_queue_alone() {
    for plant in [None, Some(Plant::AckBeforeFsync), Some(Plant::SkipDirFsync)] {
        assert_eq!(
            delivered_after(plant, Outcome::Released),
            [(1, 1), (1, 2)],
            "{plant:?}"
        );
        assert_eq!(
            delivered_after(plant, Outcome::Accepted),
            [(1, 2)],
            "{plant:?}"
        );
    }
}
