//! The parsed selector: an expression tree whose every node knows where its
//! text starts and how deep it reaches.

use super::headers::Field;
use super::like::LikePattern;
use super::{DEPTH_MAX, SelectorError};

/// A node of the tree, with the character position where its text starts
/// and its depth (1 for a leaf).
#[derive(Debug, Clone)]
pub(super) struct Expr {
    pub(super) node: Node,
    pub(super) position: usize,
    depth: usize,
}

#[derive(Debug, Clone)]
pub(super) enum Node {
    Literal(Literal),
    Field(Field),
    Negate(Box<Expr>),
    Arithmetic(ArithmeticOp, Box<Expr>, Box<Expr>),
    Compare(CompareOp, Box<Expr>, Box<Expr>),
    Between {
        value: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    In {
        value: Box<Expr>,
        list: Vec<String>,
        negated: bool,
    },
    Like {
        value: Box<Expr>,
        pattern: LikePattern,
        negated: bool,
    },
    IsNull {
        value: Box<Expr>,
        negated: bool,
    },
    Not(Box<Expr>),
    /// Two or more conditions. Chains are flat, so that a long list of
    /// `OR`s does not count against the depth limit.
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Literal {
    Boolean(bool),
    Integer(i64),
    Float(f64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ArithmeticOp {
    Add,
    Subtract,
    Multiply,
    Divide,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// What an expression evaluates to, as far as the text alone tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Condition,
    Number,
    Text,
    /// An application property: its type is the message's business.
    Unknown,
}

impl Kind {
    /// How error messages name the kind.
    pub(super) fn described(self) -> &'static str {
        match self {
            Kind::Condition => "a condition",
            Kind::Number => "a number",
            Kind::Text => "a string",
            Kind::Unknown => "a property",
        }
    }
}

impl Expr {
    /// A node at `position`, refused if it would make the tree deeper than
    /// [`DEPTH_MAX`].
    pub(super) fn new(node: Node, position: usize) -> Result<Expr, SelectorError> {
        let depth = 1 + node.children().map(|child| child.depth).max().unwrap_or(0);
        if depth > DEPTH_MAX {
            return Err(too_deep(position));
        }
        Ok(Expr {
            node,
            position,
            depth,
        })
    }

    pub(super) fn kind(&self) -> Kind {
        match &self.node {
            Node::Literal(Literal::Boolean(_)) => Kind::Condition,
            Node::Literal(Literal::Integer(_) | Literal::Float(_)) => Kind::Number,
            Node::Literal(Literal::Text(_)) => Kind::Text,
            Node::Field(field) => field.kind(),
            Node::Negate(_) | Node::Arithmetic(..) => Kind::Number,
            Node::Compare(..)
            | Node::Between { .. }
            | Node::In { .. }
            | Node::Like { .. }
            | Node::IsNull { .. }
            | Node::Not(_)
            | Node::And(_)
            | Node::Or(_) => Kind::Condition,
        }
    }
}

impl Node {
    fn children(&self) -> impl Iterator<Item = &Expr> {
        let (boxed, listed): (Vec<&Expr>, &[Expr]) = match self {
            Node::Literal(_) | Node::Field(_) => (vec![], &[]),
            Node::Negate(e)
            | Node::Not(e)
            | Node::In { value: e, .. }
            | Node::Like { value: e, .. }
            | Node::IsNull { value: e, .. } => (vec![&**e], &[]),
            Node::Arithmetic(_, l, r) | Node::Compare(_, l, r) => (vec![&**l, &**r], &[]),
            Node::Between {
                value, low, high, ..
            } => (vec![&**value, &**low, &**high], &[]),
            Node::And(terms) | Node::Or(terms) => (vec![], terms.as_slice()),
        };
        boxed.into_iter().chain(listed)
    }
}

pub(super) fn too_deep(position: usize) -> SelectorError {
    SelectorError::new(
        position,
        format!("expression nested deeper than {DEPTH_MAX} levels"),
    )
}
