//! The AMQP 1.0 type system as a Rust value (spec part 1, "Types").

use std::fmt;

use bytes::Bytes;

/// Any AMQP 1.0 value.
///
/// Used where the protocol carries values of arbitrary type: application
/// properties, annotations, filters, and AMQP sequence/value bodies. Typed
/// structures (performatives, sections) decode straight into Rust types.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `boolean`.
    Boolean(bool),
    /// `ubyte`.
    Ubyte(u8),
    /// `ushort`.
    Ushort(u16),
    /// `uint`.
    Uint(u32),
    /// `ulong`.
    Ulong(u64),
    /// `byte`.
    Byte(i8),
    /// `short`.
    Short(i16),
    /// `int`.
    Int(i32),
    /// `long`.
    Long(i64),
    /// `float` (IEEE 754 binary32).
    Float(f32),
    /// `double` (IEEE 754 binary64).
    Double(f64),
    /// `decimal32`, kept as its raw IEEE 754 decimal bytes.
    Decimal32([u8; 4]),
    /// `decimal64`, kept as its raw IEEE 754 decimal bytes.
    Decimal64([u8; 8]),
    /// `decimal128`, kept as its raw IEEE 754 decimal bytes.
    Decimal128([u8; 16]),
    /// `char` (a UTF-32 code point).
    Char(char),
    /// `timestamp`: milliseconds since the Unix epoch.
    Timestamp(i64),
    /// `uuid`.
    Uuid([u8; 16]),
    /// `binary`; shares the received buffer.
    Binary(Bytes),
    /// `string`.
    String(String),
    /// `symbol`.
    Symbol(Symbol),
    /// `list`.
    List(Vec<Value>),
    /// `map`, in wire order.
    Map(Vec<(Value, Value)>),
    /// `array`: elements all of one type.
    Array(Array),
    /// A described value.
    Described(Box<Described>),
}

impl Value {
    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The symbol this value holds, if it is one.
    pub fn as_symbol(&self) -> Option<&Symbol> {
        match self {
            Value::Symbol(s) => Some(s),
            _ => None,
        }
    }
}

/// A symbolic value: ASCII only, as the spec requires.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Symbol(String);

impl Symbol {
    /// A symbol from `s`, or `None` if `s` is not ASCII.
    pub fn new(s: impl Into<String>) -> Option<Self> {
        let s = s.into();
        s.is_ascii().then_some(Self(s))
    }

    /// A symbol from a string known at compile time to be ASCII.
    ///
    /// # Panics
    /// If `s` is not ASCII: a programming error, not an input error.
    pub fn from_static(s: &'static str) -> Self {
        assert!(s.is_ascii(), "symbol {s:?} is not ASCII");
        Self(s.to_owned())
    }

    /// The symbol's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ":{}", self.0)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Symbol {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Symbol {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// What identifies a described type: a numeric code or a symbolic name.
#[derive(Debug, Clone, PartialEq)]
pub enum Descriptor {
    /// A numeric descriptor (`domain-id << 32 | descriptor-id`).
    Code(u64),
    /// A symbolic descriptor such as `amqp:open:list`.
    Name(Symbol),
    /// Any other value; the spec reserves this but decoders must accept it.
    Other(Box<Value>),
}

impl Descriptor {
    /// True if this descriptor names the described type `(name, code)`.
    pub fn is(&self, name: &str, code: u64) -> bool {
        match self {
            Descriptor::Code(c) => *c == code,
            Descriptor::Name(n) => n == name,
            Descriptor::Other(_) => false,
        }
    }
}

/// A value with a descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// What the value means.
    pub descriptor: Descriptor,
    /// The underlying value.
    pub value: Value,
}

/// An AMQP array: a sequence of values that all share one constructor.
///
/// The invariant that every element has the same AMQP type is checked when
/// the array is built, so encoding never has to fail.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Array(Vec<Value>);

/// Returned when building an [`Array`] from elements of different types, or
/// from nulls (which an array cannot carry: see [`Array::try_from`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("array elements must all have the same type, and not be null")]
pub struct MixedArray;

impl Array {
    /// The elements.
    pub fn items(&self) -> &[Value] {
        &self.0
    }

    /// The elements, by value.
    pub fn into_items(self) -> Vec<Value> {
        self.0
    }

    /// Wraps elements that the decoder read with one constructor.
    pub(super) fn from_decoded(items: Vec<Value>) -> Self {
        Self(items)
    }
}

impl TryFrom<Vec<Value>> for Array {
    type Error = MixedArray;

    /// Checks that every element shares one type. Null elements (described
    /// or not) are refused: they would encode in zero bytes each, and the
    /// decoder bounds an array's count by the bytes that hold its elements,
    /// so such an array could never be read back.
    fn try_from(items: Vec<Value>) -> Result<Self, MixedArray> {
        let homogeneous = items.windows(2).all(|w| same_type(&w[0], &w[1]));
        let zero_width = items.first().is_some_and(is_null_element);
        if homogeneous && !zero_width {
            Ok(Self(items))
        } else {
            Err(MixedArray)
        }
    }
}

/// True for a null, or a described value whose innermost value is null.
fn is_null_element(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Described(d) => is_null_element(&d.value),
        _ => false,
    }
}

/// True if `a` and `b` can share an array constructor.
///
/// Described elements must also share their descriptor, because an array
/// writes the descriptor once.
fn same_type(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Described(a), Value::Described(b)) => {
            a.descriptor == b.descriptor && same_type(&a.value, &b.value)
        }
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(v)
            }
        })*
    };
}

value_from! {
    bool => Boolean, u8 => Ubyte, u16 => Ushort, u32 => Uint, u64 => Ulong,
    i8 => Byte, i16 => Short, i32 => Int, i64 => Long, f32 => Float, f64 => Double,
    char => Char, Bytes => Binary, String => String, Symbol => Symbol,
    Vec<Value> => List, Array => Array,
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}

impl From<Described> for Value {
    fn from(v: Described) -> Self {
        Value::Described(Box::new(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_ascii_only() {
        assert!(Symbol::new("amqp:accepted:list").is_some());
        assert!(Symbol::new("héllo").is_none());
    }

    #[test]
    fn arrays_reject_mixed_types() {
        assert!(Array::try_from(vec![Value::Uint(1), Value::Uint(70_000)]).is_ok());
        assert_eq!(
            Array::try_from(vec![Value::Uint(1), Value::Ulong(1)]),
            Err(MixedArray)
        );
        let described = |code, v| {
            Value::from(Described {
                descriptor: Descriptor::Code(code),
                value: v,
            })
        };
        assert!(
            Array::try_from(vec![
                described(1, Value::Uint(0)),
                described(1, Value::Uint(9))
            ])
            .is_ok()
        );
        assert_eq!(
            Array::try_from(vec![
                described(1, Value::Uint(0)),
                described(2, Value::Uint(0))
            ]),
            Err(MixedArray)
        );
    }
}
