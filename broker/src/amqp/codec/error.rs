//! Decoding errors: small, `Copy`, and naming what was being decoded.

use std::fmt;

/// Why a value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ended inside a value (or inside a declared size).
    Truncated,
    /// A format code that AMQP 1.0 does not define.
    UnknownConstructor(u8),
    /// A valid format code, but not one the expected type may use.
    UnexpectedConstructor {
        /// The AMQP type that was expected.
        expected: &'static str,
        /// The format code found.
        found: u8,
    },
    /// A string that is not UTF-8.
    InvalidUtf8,
    /// A symbol with a non-ASCII byte.
    InvalidSymbol,
    /// A char that is not a Unicode scalar value.
    InvalidChar(u32),
    /// A compound's element count cannot fit in its declared size.
    CountExceedsSize,
    /// A compound's elements did not fill exactly its declared size.
    SizeMismatch,
    /// A map with an odd number of elements.
    OddMapCount,
    /// Compound values nested deeper than [`super::MAX_DEPTH`].
    TooDeep,
    /// A descriptor that does not name the expected described type.
    UnexpectedDescriptor,
    /// A mandatory field was null or absent.
    MissingField,
    /// A value outside the range its restricted type allows.
    InvalidValue,
    /// Bytes left over after a complete value.
    TrailingBytes,
}

/// A typed decoding error, naming the field being decoded where known.
///
/// `Copy` so that engines can keep it, log it and turn it into an AMQP error
/// condition without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    /// What went wrong.
    pub kind: DecodeErrorKind,
    /// The composite field (e.g. `"max-frame-size"`) being decoded, if any.
    pub field: Option<&'static str>,
}

impl DecodeError {
    /// An error not (yet) attributed to a field.
    pub const fn new(kind: DecodeErrorKind) -> Self {
        Self { kind, field: None }
    }

    /// Attributes the error to `field`, keeping the innermost field name.
    pub fn in_field(mut self, field: &'static str) -> Self {
        self.field.get_or_insert(field);
        self
    }
}

impl From<DecodeErrorKind> for DecodeError {
    fn from(kind: DecodeErrorKind) -> Self {
        Self::new(kind)
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("input ends inside a value"),
            Self::UnknownConstructor(code) => write!(f, "unknown format code {code:#04x}"),
            Self::UnexpectedConstructor { expected, found } => {
                write!(f, "expected {expected}, found format code {found:#04x}")
            }
            Self::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            Self::InvalidSymbol => f.write_str("symbol is not ASCII"),
            Self::InvalidChar(c) => write!(f, "{c:#x} is not a Unicode scalar value"),
            Self::CountExceedsSize => f.write_str("element count cannot fit in the declared size"),
            Self::SizeMismatch => f.write_str("elements do not fill the declared size"),
            Self::OddMapCount => f.write_str("map has an odd element count"),
            Self::TooDeep => f.write_str("values nested too deeply"),
            Self::UnexpectedDescriptor => f.write_str("unexpected descriptor"),
            Self::MissingField => f.write_str("mandatory field is absent"),
            Self::InvalidValue => f.write_str("value out of range"),
            Self::TrailingBytes => f.write_str("trailing bytes after value"),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{field}: {}", self.kind),
            None => self.kind.fmt(f),
        }
    }
}

impl std::error::Error for DecodeError {}
