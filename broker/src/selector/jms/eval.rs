//! Evaluates a parsed selector against one message, with SQL's
//! three-valued logic and JMS 2.0's type rules (§3.8.1.2):
//! - a NULL operand makes a comparison, arithmetic or LIKE/IN unknown;
//! - integers and floats compare and combine by numeric promotion, as
//!   Java's long and double do;
//! - strings and booleans compare only with `=` and `<>`, and only with
//!   their own type: any other comparison is false (not unknown, so that
//!   `NOT` of it is true, as the spec and ActiveMQ have it);
//! - LIKE and IN on a value that is not a string are unknown, so neither
//!   the test nor its `NOT` selects the message;
//! - integer division by zero is unknown; integer overflow wraps, as a Java
//!   long does.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::ast::{ArithmeticOp, CompareOp, Expr, Literal, Node};
use crate::amqp::codec::Value;
use crate::selector::fields::MessageFields;

/// A value while evaluating: the types a JMS selector knows.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val<'m> {
    Null,
    Boolean(bool),
    Integer(i64),
    Float(f64),
    /// Borrowed from the message or the selector where it can be.
    Text(Cow<'m, str>),
}

impl<'m> Val<'m> {
    /// An application property's value. JMS properties are booleans,
    /// numbers and strings; symbols read as strings, and other AMQP types
    /// (binary, uuid, timestamp, lists, …) as NULL, which no test selects.
    pub(super) fn of_property(value: &'m Value) -> Val<'m> {
        match *value {
            Value::Boolean(b) => Val::Boolean(b),
            Value::Ubyte(n) => Val::Integer(n.into()),
            Value::Ushort(n) => Val::Integer(n.into()),
            Value::Uint(n) => Val::Integer(n.into()),
            // A ulong beyond a long's range keeps its magnitude as a double.
            Value::Ulong(n) => i64::try_from(n).map_or(Val::Float(n as f64), Val::Integer),
            Value::Byte(n) => Val::Integer(n.into()),
            Value::Short(n) => Val::Integer(n.into()),
            Value::Int(n) => Val::Integer(n.into()),
            Value::Long(n) => Val::Integer(n),
            Value::Float(n) => Val::Float(n.into()),
            Value::Double(n) => Val::Float(n),
            Value::String(ref s) => Val::Text(Cow::Borrowed(s)),
            Value::Symbol(ref s) => Val::Text(Cow::Borrowed(s.as_str())),
            _ => Val::Null,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match *self {
            Val::Integer(n) => Some(n as f64),
            Val::Float(n) => Some(n),
            _ => None,
        }
    }
}

/// SQL's three truth values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Truth {
    True,
    False,
    Unknown,
}

impl Truth {
    fn not(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }
}

impl From<bool> for Truth {
    fn from(b: bool) -> Truth {
        if b { Truth::True } else { Truth::False }
    }
}

/// The truth of a condition for `message`. A value that is not a boolean
/// (a property holding a number, say) is unknown.
pub(super) fn truth<'m>(expr: &'m Expr, message: &'m MessageFields) -> Truth {
    let eval = |e: &'m Expr| value(e, message);
    match &expr.node {
        Node::Compare(op, l, r) => compare(*op, &eval(l), &eval(r)),
        Node::Between {
            value: v,
            low,
            high,
            negated,
        } => {
            let (v, low, high) = (eval(v), eval(low), eval(high));
            // As JMS defines them, not as NOT of each other: a string is
            // neither between two numbers nor outside them.
            if *negated {
                or(compare(CompareOp::Lt, &v, &low), || {
                    compare(CompareOp::Gt, &v, &high)
                })
            } else {
                and(compare(CompareOp::Ge, &v, &low), || {
                    compare(CompareOp::Le, &v, &high)
                })
            }
        }
        Node::In {
            value: v,
            list,
            negated,
        } => match eval(v) {
            Val::Text(s) => Truth::from(list.iter().any(|item| *item == *s) != *negated),
            _ => Truth::Unknown,
        },
        Node::Like {
            value: v,
            pattern,
            negated,
        } => match eval(v) {
            Val::Text(s) => Truth::from(pattern.matches(&s) != *negated),
            _ => Truth::Unknown,
        },
        Node::IsNull { value: v, negated } => Truth::from((eval(v) == Val::Null) != *negated),
        Node::Not(e) => truth(e, message).not(),
        Node::And(terms) => all(terms, message),
        Node::Or(terms) => any(terms, message),
        Node::Literal(_) | Node::Field(_) | Node::Negate(_) | Node::Arithmetic(..) => {
            match eval(expr) {
                Val::Boolean(b) => Truth::from(b),
                _ => Truth::Unknown,
            }
        }
    }
}

/// The value of an expression for `message`; a condition's is a boolean,
/// or NULL when unknown.
pub(super) fn value<'m>(expr: &'m Expr, message: &'m MessageFields) -> Val<'m> {
    match &expr.node {
        Node::Literal(Literal::Boolean(b)) => Val::Boolean(*b),
        Node::Literal(Literal::Integer(n)) => Val::Integer(*n),
        Node::Literal(Literal::Float(n)) => Val::Float(*n),
        Node::Literal(Literal::Text(s)) => Val::Text(Cow::Borrowed(s)),
        Node::Field(field) => field.read(message),
        Node::Negate(e) => match value(e, message) {
            Val::Integer(n) => Val::Integer(n.wrapping_neg()),
            Val::Float(n) => Val::Float(-n),
            _ => Val::Null,
        },
        Node::Arithmetic(op, l, r) => arithmetic(*op, &value(l, message), &value(r, message)),
        _ => match truth(expr, message) {
            Truth::True => Val::Boolean(true),
            Truth::False => Val::Boolean(false),
            Truth::Unknown => Val::Null,
        },
    }
}

/// AND over `terms`, stopping at the first false one.
fn all(terms: &[Expr], message: &MessageFields) -> Truth {
    let mut result = Truth::True;
    for term in terms {
        match truth(term, message) {
            Truth::False => return Truth::False,
            Truth::Unknown => result = Truth::Unknown,
            Truth::True => {}
        }
    }
    result
}

/// OR over `terms`, stopping at the first true one.
fn any(terms: &[Expr], message: &MessageFields) -> Truth {
    let mut result = Truth::False;
    for term in terms {
        match truth(term, message) {
            Truth::True => return Truth::True,
            Truth::Unknown => result = Truth::Unknown,
            Truth::False => {}
        }
    }
    result
}

fn and(left: Truth, right: impl FnOnce() -> Truth) -> Truth {
    match left {
        Truth::False => Truth::False,
        Truth::True => right(),
        Truth::Unknown => match right() {
            Truth::False => Truth::False,
            _ => Truth::Unknown,
        },
    }
}

/// By De Morgan's law, which holds in three-valued logic too.
fn or(left: Truth, right: impl FnOnce() -> Truth) -> Truth {
    and(left.not(), || right().not()).not()
}

fn compare(op: CompareOp, l: &Val<'_>, r: &Val<'_>) -> Truth {
    match (l, r) {
        (Val::Null, _) | (_, Val::Null) => Truth::Unknown,
        (Val::Text(a), Val::Text(b)) => equality(op, a == b),
        (Val::Boolean(a), Val::Boolean(b)) => equality(op, a == b),
        (Val::Integer(a), Val::Integer(b)) => ordered(op, Some(a.cmp(b))),
        _ => match (l.as_f64(), r.as_f64()) {
            (Some(a), Some(b)) => ordered(op, a.partial_cmp(&b)),
            // Values of different types.
            _ => Truth::False,
        },
    }
}

/// Strings and booleans are equal or not; they have no order.
fn equality(op: CompareOp, equal: bool) -> Truth {
    match op {
        CompareOp::Eq => Truth::from(equal),
        CompareOp::Ne => Truth::from(!equal),
        CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge => Truth::False,
    }
}

/// Numbers; `None` is a NaN, unequal to everything, itself included.
fn ordered(op: CompareOp, ordering: Option<Ordering>) -> Truth {
    let Some(ordering) = ordering else {
        return Truth::from(op == CompareOp::Ne);
    };
    Truth::from(match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
    })
}

fn arithmetic(op: ArithmeticOp, l: &Val<'_>, r: &Val<'_>) -> Val<'static> {
    if let (Val::Integer(a), Val::Integer(b)) = (l, r) {
        return match op {
            ArithmeticOp::Add => Val::Integer(a.wrapping_add(*b)),
            ArithmeticOp::Subtract => Val::Integer(a.wrapping_sub(*b)),
            ArithmeticOp::Multiply => Val::Integer(a.wrapping_mul(*b)),
            ArithmeticOp::Divide if *b == 0 => Val::Null,
            ArithmeticOp::Divide => Val::Integer(a.wrapping_div(*b)),
        };
    }
    let (Some(a), Some(b)) = (l.as_f64(), r.as_f64()) else {
        return Val::Null;
    };
    Val::Float(match op {
        ArithmeticOp::Add => a + b,
        ArithmeticOp::Subtract => a - b,
        ArithmeticOp::Multiply => a * b,
        ArithmeticOp::Divide => a / b,
    })
}
