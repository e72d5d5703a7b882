//! An explicit fault schedule: which fault starts when and how long it
//! lasts, on which disk, instead of drawing them from the seed.
//!
//! A drawn run records its schedule as it goes ([`Nemesis::schedule`]);
//! running that schedule again ([`Nemesis::scripted`]) injects the same
//! faults at the same instants without asking the nemesis's stream, so a
//! replay file holding it no longer depends on how the nemesis draws, and
//! the shrinker can drop and shorten faults one by one. Everything else in
//! a run (turmoil's stream, the workload's, the broker's) is seeded as
//! before, so the schedule a seed drew, run explicitly, gives the very
//! same trace.
//!
//! [`Nemesis::schedule`]: crate::nemesis::Nemesis::schedule
//! [`Nemesis::scripted`]: crate::nemesis::Nemesis::scripted

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::nemesis::{DiskModel, Fault};
use crate::toml_text;

/// A whole run's faults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The links' normal max latency, which a latency spike returns to;
    /// without it, a latency spike is never undone before the heal.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "toml_opt_duration"
    )]
    pub base_latency: Option<Duration>,
    /// The disk for the whole run.
    pub disk: DiskModel,
    /// The faults, each at its time (in a file: `[[schedule.fault]]`).
    #[serde(default, rename = "fault", skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Scheduled>,
}

/// One fault of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduled {
    /// When it starts, in simulated time: at the first step at or after it.
    #[serde(with = "toml_text::duration")]
    pub at: Duration,
    /// How long it lasts (a kill: zero, it is over at once).
    #[serde(with = "toml_text::duration")]
    pub lasts: Duration,
    /// The fault, its `kind` and fields inline.
    #[serde(flatten)]
    pub fault: Fault,
}

impl Scheduled {
    /// When it ends.
    pub fn ends(&self) -> Duration {
        self.at + self.lasts
    }
}

impl Schedule {
    /// Every host its faults name.
    pub fn hosts(&self) -> BTreeSet<&str> {
        self.faults.iter().flat_map(|s| s.fault.hosts()).collect()
    }

    /// When its last fault ends (zero with no fault).
    pub fn last_end(&self) -> Duration {
        self.faults
            .iter()
            .map(Scheduled::ends)
            .max()
            .unwrap_or_default()
    }

    /// The schedule without the faults that name a host `keep` refuses.
    #[must_use]
    pub fn only_hosts(&self, keep: impl Fn(&str) -> bool) -> Schedule {
        Schedule {
            faults: (self.faults.iter())
                .filter(|s| s.fault.hosts().into_iter().all(&keep))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }
}

/// An optional duration as text (see [`toml_text::duration`]).
mod toml_opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

    use crate::toml_text;

    /// serde's `serialize_with`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(toml_text::format_duration).serialize(s)
    }

    /// serde's `deserialize_with`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| toml_text::parse_duration(&text))
            .transpose()
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(hosts: &[&str]) -> Vec<String> {
        hosts.iter().map(|h| (*h).to_owned()).collect()
    }

    /// One fault of every kind, as a file holds them.
    fn every_kind() -> Schedule {
        let ms = Duration::from_millis;
        let faults = vec![
            Fault::Partition {
                client: "producer0".to_owned(),
                broker: "node1".to_owned(),
            },
            Fault::PartitionOneway {
                from: "node1".to_owned(),
                to: "consumer1".to_owned(),
            },
            Fault::Hold {
                client: "consumer0".to_owned(),
                broker: "node2".to_owned(),
            },
            Fault::Latency {
                client: "subscriber0".to_owned(),
                broker: "node1".to_owned(),
                max: ms(1_250),
            },
            Fault::Lossy {
                client: "producer1".to_owned(),
                broker: "node3".to_owned(),
                rate_permille: 120,
            },
            Fault::Kill {
                host: "node2".to_owned(),
            },
            Fault::Crash {
                host: "node1".to_owned(),
            },
            Fault::PowerLoss {
                hosts: names(&["node1", "node2", "node3"]),
            },
            Fault::DiskFull {
                host: "node3".to_owned(),
            },
            Fault::SyncError {
                host: "node1".to_owned(),
            },
            Fault::Corrupt {
                host: "node2".to_owned(),
                flip: 0xfedc_ba98_7654_3210,
            },
            Fault::Isolate {
                host: "node2".to_owned(),
                others: names(&["node1", "node3"]),
                leader_of: Some(3),
            },
            Fault::Bridge {
                left: names(&["node1"]),
                bridge: "node2".to_owned(),
                right: names(&["node3"]),
            },
            Fault::NodeOneway {
                from: "node3".to_owned(),
                to: "node1".to_owned(),
            },
            Fault::RollingRestart {
                hosts: names(&["node3", "node1", "node2"]),
                every: ms(700),
            },
            Fault::SlowDisk {
                host: "node1".to_owned(),
                extra: ms(120),
                leader_of: None,
            },
            Fault::ReadError {
                host: "node1".to_owned(),
                after_reads: 42,
            },
            Fault::CorruptRunning {
                host: "node2".to_owned(),
                flip: 0xdead_beef,
            },
            Fault::DamagedWrite {
                host: "node3".to_owned(),
                flip: 0x1234,
            },
            Fault::CorruptVotes {
                host: "node1".to_owned(),
                flip: 0x77,
            },
        ];
        let faults = (0_u64..)
            .zip(faults)
            .map(|(i, fault)| Scheduled {
                at: ms(500 + 450 * i),
                lasts: if matches!(fault, Fault::Kill { .. }) {
                    Duration::ZERO
                } else {
                    ms(300 + 10 * i)
                },
                fault,
            })
            .collect();
        Schedule {
            base_latency: Some(ms(5)),
            disk: DiskModel {
                block_size: Some(512),
                io_latency: Some((Duration::from_micros(50), Duration::from_micros(3_250))),
                sync_latency: ms(17),
            },
            faults,
        }
    }

    /// The file's `[schedule]` part.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct InFile {
        schedule: Schedule,
    }

    #[test]
    fn a_schedule_round_trips_through_toml() {
        let file = InFile {
            schedule: every_kind(),
        };
        let text = toml::to_string(&file).expect("a schedule serialises");
        insta::assert_snapshot!(text);
        let back: InFile = toml::from_str(&text).expect("and parses back");
        assert_eq!(back, file);
    }

    #[test]
    fn a_typo_in_a_fault_is_refused() {
        let text = "[schedule.disk]\nsync_latency = \"5ms\"\n\n[[schedule.fault]]\n\
                    at = \"1s\"\nlasts = \"1s\"\nkind = \"crash\"\nhots = \"broker\"\n";
        assert!(toml::from_str::<InFile>(text).is_err());
        let unknown_kind = text.replace("crash", "meteor").replace("hots", "host");
        assert!(toml::from_str::<InFile>(&unknown_kind).is_err());
        let fixed = text.replace("hots", "host");
        let parsed: InFile = toml::from_str(&fixed).expect("valid");
        assert_eq!(parsed.schedule.faults.len(), 1);
        assert_eq!(parsed.schedule.hosts(), BTreeSet::from(["broker"]));
    }

    #[test]
    fn dropping_a_host_drops_the_faults_that_name_it() {
        let schedule = every_kind();
        let without = schedule.only_hosts(|host| host != "producer1");
        assert_eq!(without.faults.len(), schedule.faults.len() - 1);
        assert!(!without.hosts().contains("producer1"));
        assert_eq!(
            schedule.last_end(),
            Duration::from_millis(500 + 450 * 19 + 490)
        );
    }
}
