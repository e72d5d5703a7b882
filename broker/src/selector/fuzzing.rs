//! The properties the `selector` fuzz target asserts
//! (`fuzz/fuzz_targets/selector.rs`), here so that the unit tests run the
//! same check on hand-picked and generated selectors.

use super::{Filter, FilterError, JMS_SELECTOR_NAME, MessageFields};
use crate::amqp::codec::{Described, Descriptor, Symbol, Value};

/// Parses `text` as a consumer's JMS selector, the way the broker parses a
/// source filter, and evaluates it against `message`. Panics if: parsing
/// fails with a position outside the text; what parsed evaluates
/// differently twice; or the selector and its negation both select.
pub fn check(text: &str, message: &MessageFields) {
    let filter = match selector(text) {
        Ok(Some(filter)) => filter,
        Err(FilterError::Selector(e)) => {
            assert!(e.position <= text.chars().count(), "{e} for {text:?}");
            return;
        }
        other => panic!("a string selector parses or fails to: {other:?}"),
    };
    let selected = filter.matches(message);
    assert_eq!(selected, filter.matches(message), "{text:?}");
    if let Ok(Some(negation)) = selector(&format!("NOT ({text})")) {
        assert!(
            !(selected && negation.matches(message)),
            "{text:?} and its negation both select"
        );
    }
}

fn selector(text: &str) -> Result<Option<Filter>, FilterError> {
    let name = Value::Symbol(Symbol::from_static("jms-selector"));
    let descriptor = Descriptor::Name(Symbol::from_static(JMS_SELECTOR_NAME));
    let value = Value::String(text.to_owned());
    Filter::from_source_entry(&name, &Value::from(Described { descriptor, value }))
}
