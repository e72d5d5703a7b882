//! The planted bug `skip-dir-fsync` (feature `planted-bugs`): under
//! turmoil, whose disk keeps a new file only once its directory is fsynced,
//! a crash takes away a segment whose creation was not followed by a
//! directory fsync, with every acknowledged record in it.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::super::{LogOptions, open};
use crate::io::TurmoilIo;
use crate::planted::Plant;

const RECORDS: u64 = 5;

/// Appends `RECORDS` records on the first boot (each acknowledged), crashes
/// the host, and returns how many records the second boot recovers.
fn recovered_after_crash(plant: Option<Plant>) -> u64 {
    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .simulation_duration(Duration::from_secs(60))
        .build();
    let boots = Rc::new(Cell::new(0_u32));
    let acknowledged = Rc::new(Cell::new(0_u64));
    let recovered = Rc::new(Cell::new(None::<u64>));
    {
        let (acknowledged, recovered) = (Rc::clone(&acknowledged), Rc::clone(&recovered));
        sim.host("node", move || {
            let boot = boots.replace(boots.get() + 1);
            let (acknowledged, recovered) = (Rc::clone(&acknowledged), Rc::clone(&recovered));
            async move {
                let options = LogOptions {
                    plants: crate::planted::Plants::new(plant),
                    ..LogOptions::default()
                };
                let (mut log, found) = open(TurmoilIo, Path::new("/data/log"), options).await?;
                if boot == 0 {
                    for i in 0..RECORDS {
                        log.append(Bytes::from(i.to_be_bytes().to_vec())).await?;
                        acknowledged.set(i + 1);
                    }
                } else {
                    recovered.set(Some(found.records.len() as u64));
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }
    while acknowledged.get() < RECORDS {
        sim.step().expect("the first boot runs");
    }
    sim.crash("node");
    sim.bounce("node");
    while recovered.get().is_none() {
        sim.step().expect("the second boot recovers");
    }
    recovered.get().expect("set above")
}

#[test]
fn skip_dir_fsync_loses_a_new_segment_on_crash() {
    assert_eq!(recovered_after_crash(None), RECORDS, "without the plant");
    assert_eq!(
        recovered_after_crash(Some(Plant::SkipDirFsync)),
        0,
        "the new segment's name was never durable"
    );
    // The other plants do not touch the log.
    for plant in [
        Plant::AckBeforeFsync,
        Plant::LoseRedelivery,
        Plant::DoubleDeliver,
    ] {
        assert_eq!(recovered_after_crash(Some(plant)), RECORDS, "{plant}");
    }
}
