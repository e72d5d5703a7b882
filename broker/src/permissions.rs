//! Permissions: what each user may do on which addresses, from the
//! configuration's `[[permissions]]` entries.
//!
//! An entry grants one user operations on the addresses its glob
//! [`Pattern`] matches; entries add up, and nothing denies. Which rule
//! applies depends on what is configured, so that a broker configured
//! before permissions existed behaves as it did:
//!
//! - no `[[users]]`: the broker is open, and everything is allowed;
//! - users but no `[[permissions]]` at all: every user may do everything
//!   (the broker warns at start that this is so);
//! - any `[[permissions]]` entry: what no entry grants is denied.
//!
//! This module only answers questions ([`Permissions::allows`]); the node
//! core asks them at attach and for each message of the anonymous relay,
//! and the management API for its own operations.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::config::Config;

/// What a user asks to do on an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Send to it: attach a sender, or relay a message to it.
    Send,
    /// Consume from it (a queue) or subscribe to it (a topic).
    Receive,
    /// Read a queue's messages without consuming them (distribution-mode
    /// `copy`). Granted by `receive` too, which may take strictly more.
    Browse,
    /// Create it, delete it or purge it.
    Manage,
    /// View it through the management API.
    Monitor,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Send => "send",
            Operation::Receive => "receive",
            Operation::Browse => "browse",
            Operation::Manage => "manage",
            Operation::Monitor => "monitor",
        })
    }
}

/// What every user may do, as configured. Cheap to clone: the rules are
/// shared.
#[derive(Debug, Clone)]
pub struct Permissions {
    /// `None`: everything is allowed (no users, or no `[[permissions]]`).
    grants: Option<Arc<BTreeMap<String, Vec<Grant>>>>,
}

/// One `[[permissions]]` entry, its pattern parsed.
#[derive(Debug)]
struct Grant {
    pattern: Pattern,
    send: bool,
    receive: bool,
    browse: bool,
    manage: bool,
    monitor: bool,
}

impl Grant {
    fn grants(&self, op: Operation) -> bool {
        match op {
            Operation::Send => self.send,
            Operation::Receive => self.receive,
            Operation::Browse => self.browse || self.receive,
            Operation::Manage => self.manage,
            Operation::Monitor => self.monitor,
        }
    }
}

impl Permissions {
    /// The permissions `config` sets. Its patterns were checked when it was
    /// validated ([`Config::validate`]); an entry whose pattern does not
    /// parse all the same grants nothing.
    pub fn from_config(config: &Config) -> Self {
        if config.users.is_empty() || config.permissions.is_empty() {
            return Self { grants: None };
        }
        let mut grants: BTreeMap<String, Vec<Grant>> = BTreeMap::new();
        for entry in &config.permissions {
            let Ok(pattern) = Pattern::parse(&entry.pattern) else {
                continue;
            };
            grants.entry(entry.user.clone()).or_default().push(Grant {
                pattern,
                send: entry.send,
                receive: entry.receive,
                browse: entry.browse,
                manage: entry.manage,
                monitor: entry.monitor,
            });
        }
        Self {
            grants: Some(Arc::new(grants)),
        }
    }

    /// Everything allowed to everyone: an open broker.
    pub fn open() -> Self {
        Self { grants: None }
    }

    /// Whether permissions are enforced at all (any `[[permissions]]`
    /// entry with users configured).
    pub fn is_enforced(&self) -> bool {
        self.grants.is_some()
    }

    /// Whether `user` may do `op` on `address`: some entry of the user's
    /// whose pattern matches the address grants it.
    pub fn allows(&self, user: &str, address: &str, op: Operation) -> bool {
        let Some(grants) = &self.grants else {
            return true;
        };
        grants.get(user).is_some_and(|grants| {
            grants
                .iter()
                .any(|grant| grant.grants(op) && grant.pattern.matches(address))
        })
    }
}

/// The prefix of a pattern written as a regular expression.
const REGEX_PREFIX: &str = "re:";

/// The most memory one compiled regular expression may take: patterns
/// come from the operator's file, but one should not be able to make the
/// broker hold megabytes per pattern by accident.
const REGEX_SIZE_MAX: usize = 1 << 20;

/// A pattern over addresses, matched against the whole address: a glob,
/// or, after `re:`, a regular expression (the `regex` crate's syntax,
/// anchored at both ends; matching takes time linear in the address,
/// whatever the expression). A glob:
///
/// - `*` matches any run of characters without a `.`, empty included
///   (`orders.*` matches `orders.eu` but not `orders.eu.paris`);
/// - `**` matches any run of characters, dots included (`orders.**`
///   matches both, and `**` every address);
/// - `?` matches one character that is not a `.`;
/// - every other character matches itself; there is no escape, so `*` and
///   `?` cannot be matched literally.
///
/// A topic's address is `topic://NAME` whichever way the client named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Matcher);

#[derive(Debug, Clone)]
enum Matcher {
    /// A glob's tokens.
    Glob(Vec<Token>),
    /// A regular expression, anchored.
    Regex(regex::Regex),
}

/// Patterns are equal if they were written alike.
impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Glob(a), Self::Glob(b)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for Matcher {}

/// One element of a glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Segment,
    /// `**`
    Any,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// The pattern is empty, and would match no address.
    #[error("the pattern is empty")]
    Empty,
    /// Three or more `*` in a row mean nothing more than `**`, and are
    /// probably a mistake.
    #[error("`***` at character {0}: use `*` (within a segment) or `**` (across dots)")]
    TooManyStars(usize),
    /// The regular expression after `re:` does not compile.
    #[error("the regular expression is not valid: {0}")]
    Regex(String),
}

impl Pattern {
    /// Parses a glob, or a regular expression after `re:` (see
    /// [`Pattern`]).
    ///
    /// # Errors
    ///
    /// [`PatternError`] for an empty pattern, a run of three `*` or more,
    /// or a regular expression that does not compile.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if let Some(expression) = text.strip_prefix(REGEX_PREFIX) {
            return regex::RegexBuilder::new(&format!("^(?:{expression})$"))
                .size_limit(REGEX_SIZE_MAX)
                .build()
                .map(|regex| Self(Matcher::Regex(regex)))
                .map_err(|error| PatternError::Regex(error.to_string()));
        }
        let mut tokens = Vec::new();
        let mut chars = text.chars().enumerate().peekable();
        while let Some((at, c)) = chars.next() {
            tokens.push(match c {
                '?' => Token::One,
                '*' => {
                    if chars.next_if(|(_, c)| *c == '*').is_none() {
                        Token::Segment
                    } else if chars.peek().is_some_and(|(_, c)| *c == '*') {
                        return Err(PatternError::TooManyStars(at));
                    } else {
                        Token::Any
                    }
                }
                c => Token::Literal(c),
            });
        }
        Ok(Self(Matcher::Glob(tokens)))
    }

    /// Whether the pattern matches the whole of `address`. Dynamic
    /// programming over (token, character), so that no pattern can make a
    /// match take more than their product in steps.
    pub fn matches(&self, address: &str) -> bool {
        let tokens = match &self.0 {
            Matcher::Glob(tokens) => tokens,
            Matcher::Regex(regex) => return regex.is_match(address),
        };
        let address: Vec<char> = address.chars().collect();
        // `ends[i]`: the tokens so far can match the first `i` characters.
        let mut ends = vec![false; address.len() + 1];
        ends[0] = true;
        for token in tokens {
            let mut next = vec![false; address.len() + 1];
            for i in 0..=address.len() {
                match token {
                    Token::Literal(c) => {
                        next[i] = i > 0 && ends[i - 1] && address[i - 1] == *c;
                    }
                    Token::One => next[i] = i > 0 && ends[i - 1] && address[i - 1] != '.',
                    // A star extends a match already made, or starts one.
                    Token::Segment => {
                        next[i] = ends[i] || (i > 0 && next[i - 1] && address[i - 1] != '.');
                    }
                    Token::Any => next[i] = ends[i] || (i > 0 && next[i - 1]),
                }
            }
            ends = next;
        }
        ends[address.len()]
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::config::{Permission, User, UserLimits};

    fn matches(pattern: &str, address: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(address)
    }

    #[test]
    fn a_star_matches_within_one_segment() {
        assert!(matches("orders.*", "orders.eu"));
        assert!(matches("orders.*", "orders."));
        assert!(!matches("orders.*", "orders.eu.paris"));
        assert!(!matches("orders.*", "orders"));
        assert!(!matches("orders.*", "ordersXeu"));
        assert!(matches("*.eu", "orders.eu"));
        assert!(!matches("*.eu", "a.orders.eu"));
        assert!(matches("or*rs", "orders"));
        assert!(matches("*", "orders"));
        assert!(!matches("*", "orders.eu"));
    }

    #[test]
    fn a_double_star_matches_across_dots() {
        assert!(matches("orders.**", "orders.eu.paris"));
        assert!(matches("orders.**", "orders.eu"));
        assert!(!matches("orders.**", "orders"));
        assert!(matches("**", "anything.at.all"));
        assert!(matches("**", ""));
        assert!(matches("a.**.z", "a.b.c.z"));
        assert!(!matches("a.**.z", "a.z"));
    }

    #[test]
    fn a_question_mark_matches_one_character_but_a_dot() {
        assert!(matches("q?", "q1"));
        assert!(!matches("q?", "q"));
        assert!(!matches("q?", "q12"));
        assert!(!matches("q?", "q."));
    }

    #[test]
    fn other_characters_match_themselves_only() {
        assert!(matches("orders", "orders"));
        assert!(!matches("orders", "Orders"));
        assert!(!matches("orders", "orders2"));
        assert!(!matches("orders", "order"));
        assert!(matches("topic://prices.*", "topic://prices.eu"));
        assert!(!matches("topic://prices.*", "prices.eu"));
        assert!(matches("naïve-*", "naïve-é"));
    }

    #[test]
    fn bad_patterns_are_refused_naming_why() {
        assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
        assert_eq!(Pattern::parse("a.***"), Err(PatternError::TooManyStars(2)));
        let unclosed = Pattern::parse("re:orders.(eu");
        assert!(
            matches!(&unclosed, Err(PatternError::Regex(why)) if why.contains("unclosed")),
            "{unclosed:?}"
        );
    }

    /// After `re:`, a regular expression over the whole address.
    #[test]
    fn a_regular_expression_matches_the_whole_address() {
        assert!(matches(r"re:orders\.(eu|us)", "orders.eu"));
        assert!(matches(r"re:orders\.(eu|us)", "orders.us"));
        // Anchored at both ends.
        assert!(!matches(r"re:orders\.(eu|us)", "orders.eu.paris"));
        assert!(!matches(r"re:orders\.(eu|us)", "old-orders.eu"));
        // An alternation at the top still needs the whole address.
        assert!(!matches("re:a|orders", "orders.eu"));
        assert!(matches("re:topic://prices\\..*", "topic://prices.eu"));
        assert_eq!(
            Pattern::parse(r"re:orders\..*"),
            Pattern::parse(r"re:orders\..*")
        );
        assert_ne!(Pattern::parse("re:orders"), Pattern::parse("orders"));
    }

    /// Many stars against a long address that almost matches: the table
    /// bounds the work where naive backtracking would take exponential
    /// time.
    #[test]
    fn matching_is_bounded_by_the_table() {
        let pattern = Pattern::parse(&"**a".repeat(20)).unwrap();
        assert!(!pattern.matches(&"a".repeat(19)));
        assert!(pattern.matches(&"a".repeat(40)));
    }

    /// An account; its credentials do not matter to permissions.
    fn user(name: &str) -> User {
        User {
            name: name.to_owned(),
            password_hash: None,
            scram_sha256: None,
            limits: UserLimits::default(),
        }
    }

    fn grant(user: &str, pattern: &str) -> Permission {
        Permission {
            user: user.to_owned(),
            pattern: pattern.to_owned(),
            ..Permission::default()
        }
    }

    #[test]
    fn without_users_everything_is_allowed() {
        let permissions = Permissions::from_config(&Config::default());
        assert!(!permissions.is_enforced());
        assert!(permissions.allows("anonymous", "orders", Operation::Manage));
    }

    #[test]
    fn users_without_permissions_may_do_everything() {
        let config = Config {
            users: vec![user("alice")],
            ..Config::default()
        };
        let permissions = Permissions::from_config(&config);
        assert!(!permissions.is_enforced());
        assert!(permissions.allows("alice", "orders", Operation::Receive));
    }

    #[test]
    fn with_permissions_only_what_is_granted_is_allowed() {
        let config = Config {
            users: vec![user("alice"), user("bob")],
            permissions: vec![
                Permission {
                    send: true,
                    receive: true,
                    ..grant("alice", "orders.*")
                },
                Permission {
                    browse: true,
                    monitor: true,
                    ..grant("bob", "orders.**")
                },
                Permission {
                    manage: true,
                    ..grant("alice", "orders.eu")
                },
            ],
            ..Config::default()
        };
        let permissions = Permissions::from_config(&config);
        assert!(permissions.is_enforced());
        let alice = |address, op| permissions.allows("alice", address, op);
        assert!(alice("orders.eu", Operation::Send));
        assert!(alice("orders.eu", Operation::Receive));
        assert!(
            alice("orders.eu", Operation::Browse),
            "receive grants browse"
        );
        assert!(alice("orders.eu", Operation::Manage), "entries add up");
        assert!(!alice("orders.us", Operation::Manage));
        assert!(!alice("orders.eu", Operation::Monitor));
        assert!(!alice("orders.eu.paris", Operation::Send));
        assert!(!alice("invoices", Operation::Send));
        let bob = |address, op| permissions.allows("bob", address, op);
        assert!(bob("orders.eu.paris", Operation::Browse));
        assert!(bob("orders.eu", Operation::Monitor));
        assert!(
            !bob("orders.eu", Operation::Receive),
            "browse grants no receive"
        );
        assert!(!bob("orders.eu", Operation::Send));
        for op in [
            Operation::Send,
            Operation::Receive,
            Operation::Browse,
            Operation::Manage,
            Operation::Monitor,
        ] {
            assert!(!permissions.allows("carol", "orders.eu", op), "{op}");
        }
    }
}
