//! The queue type a link asks for when its attach creates the queue: the
//! `dynamic-node-properties` of its terminus (AMQP 1.0 §3.5.9), for a
//! dynamic node or an address the broker creates on first use.
//!
//! The keys are the configuration's (`type`, `last-value-key`,
//! `priority-levels`, `message-groups`, `single-active-consumer`), spelled
//! as AMQP spells field names, and two of qpidd's queue arguments, which
//! clients moving from qpidd send: `qpid.last_value_queue_key` and
//! `qpid.priorities`. Other keys (`lifetime-policy`,
//! `supported-dist-modes`, …) are not about the queue's type and are left
//! alone. A queue that exists already keeps its type: what a later attach
//! asks for does not change it, as with qpidd.

use crate::amqp::codec::Value;
use crate::amqp::types::{Fields, condition};
use crate::config::QueueKind;
use crate::queue::QueueConfig;

use super::Refusal;

/// What a link asks of the queue it creates; `None` leaves the
/// configuration's choice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueOptions {
    pub kind: Option<QueueKind>,
    pub message_groups: Option<bool>,
    pub single_active_consumer: Option<bool>,
}

impl QueueOptions {
    /// The options `properties` hold; `None` if they hold none.
    pub fn of(properties: &Fields) -> Result<Option<Box<Self>>, Refusal> {
        let mut options = Self::default();
        let mut queue_type = None;
        let mut last_value_key = None;
        let mut priority_levels = None;
        for (key, value) in properties {
            match key.as_str() {
                "type" => queue_type = Some(string(key.as_str(), value)?),
                "last-value-key" => last_value_key = Some(string(key.as_str(), value)?),
                "priority-levels" => priority_levels = Some(levels(key.as_str(), value)?),
                "message-groups" => options.message_groups = Some(boolean(key.as_str(), value)?),
                "single-active-consumer" => {
                    options.single_active_consumer = Some(boolean(key.as_str(), value)?);
                }
                "qpid.last_value_queue_key" => {
                    queue_type = Some("last-value".to_owned());
                    last_value_key = Some(string(key.as_str(), value)?);
                }
                "qpid.priorities" => {
                    queue_type = Some("priority".to_owned());
                    priority_levels = Some(levels(key.as_str(), value)?);
                }
                _ => {}
            }
        }
        options.kind = match queue_type.as_deref() {
            None => None,
            Some("standard") => Some(QueueKind::Standard),
            Some("last-value") => {
                let key = last_value_key
                    .filter(|key| !key.is_empty())
                    .ok_or_else(|| {
                        invalid("a last-value queue needs a non-empty last-value-key".to_owned())
                    })?;
                Some(QueueKind::LastValue(key))
            }
            Some("priority") => Some(QueueKind::Priority(
                priority_levels.unwrap_or(crate::config::PRIORITY_LEVELS_DEFAULT),
            )),
            Some(other) => {
                return Err(invalid(format!(
                    "type {other:?}: the types are \"standard\", \"last-value\" and \"priority\""
                )));
            }
        };
        Ok((options != Self::default()).then(|| Box::new(options)))
    }

    /// `config` with these options in place of the configuration's.
    pub fn apply(&self, config: &mut QueueConfig) {
        if let Some(kind) = &self.kind {
            (config.priority_levels, config.last_value_key) = match kind {
                QueueKind::Standard => (None, None),
                QueueKind::LastValue(key) => (None, Some(key.clone())),
                QueueKind::Priority(levels) => (Some(*levels), None),
            };
        }
        config.message_groups = self.message_groups.unwrap_or(config.message_groups);
        config.single_active_consumer = self
            .single_active_consumer
            .unwrap_or(config.single_active_consumer);
    }
}

fn invalid(description: String) -> Refusal {
    Refusal {
        condition: condition::INVALID_FIELD,
        description: format!("dynamic-node-properties: {description}"),
    }
}

fn string(key: &str, value: &Value) -> Result<String, Refusal> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Symbol(s) => Ok(s.as_str().to_owned()),
        _ => Err(invalid(format!("{key} takes a string, not {value:?}"))),
    }
}

fn boolean(key: &str, value: &Value) -> Result<bool, Refusal> {
    match value {
        Value::Boolean(b) => Ok(*b),
        _ => Err(invalid(format!("{key} takes a boolean, not {value:?}"))),
    }
}

/// A number of priority levels: 1 to 255, of any integer type.
fn levels(key: &str, value: &Value) -> Result<u8, Refusal> {
    let number = match value {
        Value::Ubyte(n) => Some(i64::from(*n)),
        Value::Ushort(n) => Some(i64::from(*n)),
        Value::Uint(n) => Some(i64::from(*n)),
        Value::Ulong(n) => i64::try_from(*n).ok(),
        Value::Byte(n) => Some(i64::from(*n)),
        Value::Short(n) => Some(i64::from(*n)),
        Value::Int(n) => Some(i64::from(*n)),
        Value::Long(n) => Some(*n),
        _ => None,
    };
    number
        .and_then(|n| u8::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| invalid(format!("{key} takes a number from 1 to 255, not {value:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::codec::Symbol;

    fn options(entries: &[(&'static str, Value)]) -> Result<Option<Box<QueueOptions>>, Refusal> {
        let fields: Fields = entries
            .iter()
            .map(|(key, value)| (Symbol::from_static(key), value.clone()))
            .collect();
        QueueOptions::of(&fields)
    }

    fn kind(entries: &[(&'static str, Value)]) -> Option<QueueKind> {
        options(entries).unwrap().and_then(|options| options.kind)
    }

    #[test]
    fn the_configuration_keys_and_qpidds_arguments_name_a_type() {
        assert_eq!(
            kind(&[
                ("type", Value::from("last-value")),
                ("last-value-key", Value::from("instrument"))
            ]),
            Some(QueueKind::LastValue("instrument".into()))
        );
        assert_eq!(
            kind(&[("qpid.last_value_queue_key", Value::from("instrument"))]),
            Some(QueueKind::LastValue("instrument".into()))
        );
        assert_eq!(
            kind(&[("type", Value::from("priority"))]),
            Some(QueueKind::Priority(crate::config::PRIORITY_LEVELS_DEFAULT))
        );
        assert_eq!(
            kind(&[("qpid.priorities", Value::Int(5))]),
            Some(QueueKind::Priority(5))
        );
        let groups = options(&[
            ("message-groups", Value::Boolean(true)),
            ("single-active-consumer", Value::Boolean(true)),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(groups.message_groups, Some(true));
        assert_eq!(groups.single_active_consumer, Some(true));
    }

    #[test]
    fn other_keys_ask_nothing() {
        let lifetime = Value::Symbol(Symbol::from_static("delete-on-close"));
        assert_eq!(options(&[("lifetime-policy", lifetime)]), Ok(None));
        assert_eq!(options(&[]), Ok(None));
    }

    #[test]
    fn what_cannot_be_honoured_refuses_the_link() {
        for bad in [
            vec![("type", Value::from("fanout"))],
            vec![("type", Value::from("last-value"))],
            vec![
                ("priority-levels", Value::Int(0)),
                ("type", Value::from("priority")),
            ],
            vec![("qpid.priorities", Value::Long(256))],
            vec![("message-groups", Value::from("yes"))],
        ] {
            let refusal = options(&bad).unwrap_err();
            assert_eq!(refusal.condition, condition::INVALID_FIELD, "{bad:?}");
        }
    }

    #[test]
    fn options_replace_the_configurations_choice() {
        let mut config = QueueConfig {
            priority_levels: Some(10),
            ..QueueConfig::default()
        };
        let last_value = options(&[("qpid.last_value_queue_key", Value::from("k"))])
            .unwrap()
            .unwrap();
        last_value.apply(&mut config);
        assert_eq!(config.priority_levels, None);
        assert_eq!(config.last_value_key.as_deref(), Some("k"));
        assert!(!config.message_groups);
    }
}
