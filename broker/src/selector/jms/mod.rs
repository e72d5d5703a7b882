//! The JMS message selector (JMS 2.0 §3.8.1): a condition in a subset of
//! SQL-92 over a message's header fields and properties.
//!
//! A selector is parsed once into an expression tree ([`ast`]) whose
//! identifiers are already resolved to message fields ([`headers`]), then
//! evaluated per message with SQL's three-valued logic ([`eval`]): a
//! message matches only if the condition is true, not false or unknown.
//!
//! Parsing is bounded: the text by [`TEXT_BYTES_MAX`], the tree's depth by
//! [`DEPTH_MAX`] (so neither parsing nor evaluation recurses without limit),
//! and an IN list by [`IN_LIST_MAX`]. LIKE patterns match without
//! backtracking ([`like`]).

mod ast;
mod eval;
mod headers;
mod lexer;
mod like;
mod parser;

#[cfg(test)]
mod tests;

use super::fields::MessageFields;

/// The longest selector accepted, in bytes of UTF-8.
pub(super) const TEXT_BYTES_MAX: usize = 4096;
/// How deeply expressions may nest: parentheses, operators and NOTs.
pub(super) const DEPTH_MAX: usize = 64;
/// The most strings an IN list may hold.
pub(super) const IN_LIST_MAX: usize = 256;

/// A selector that did not parse: where, and why.
///
/// The position counts characters (not bytes) from 0, so a client can
/// point at the fault in the text it sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector: position {position}: {message}")]
pub struct SelectorError {
    /// The 0-based character position of the fault.
    pub position: usize,
    /// What is wrong there.
    pub message: String,
}

impl SelectorError {
    pub(super) fn new(position: usize, message: impl Into<String>) -> SelectorError {
        SelectorError {
            position,
            message: message.into(),
        }
    }
}

/// A parsed selector, ready to test messages.
#[derive(Debug, Clone)]
pub(super) struct Selector {
    /// `None` for a blank selector, which selects every message (JMS 2.0
    /// §3.8.1.1: an empty selector is the same as none).
    condition: Option<ast::Expr>,
}

impl Selector {
    pub(super) fn parse(text: &str) -> Result<Selector, SelectorError> {
        if text.len() > TEXT_BYTES_MAX {
            return Err(SelectorError::new(
                0,
                format!(
                    "the selector is {} bytes long, more than the {TEXT_BYTES_MAX} allowed",
                    text.len()
                ),
            ));
        }
        let tokens = lexer::tokens(text)?;
        Ok(Selector {
            condition: parser::parse(&tokens)?,
        })
    }

    /// True if the condition is true for `message`; false if it is false
    /// or unknown.
    pub(super) fn matches(&self, message: &MessageFields) -> bool {
        self.condition
            .as_ref()
            .is_none_or(|condition| eval::truth(condition, message) == eval::Truth::True)
    }
}
