//! Decoding: strict, bounded, zero-copy for binary, and total (never panics).

use bytes::Bytes;

use super::error::{DecodeError, DecodeErrorKind as Kind};
use super::format as f;
use super::reader::Reader;
use super::value::{Array, Described, Descriptor, Symbol, Value};

/// How deeply compound and described values may nest. Bounds recursion, so a
/// hostile peer cannot exhaust the stack.
pub const MAX_DEPTH: usize = 32;

/// A type that decodes from the AMQP type system.
pub trait Decode: Sized {
    /// Reads one value, constructor included, from `r`.
    fn decode(r: &mut Reader) -> Result<Self, DecodeError>;
}

/// Decodes exactly one `T` from `bytes`; leftover bytes are an error.
pub fn from_bytes<T: Decode>(bytes: Bytes) -> Result<T, DecodeError> {
    let mut r = Reader::new(bytes);
    let value = T::decode(&mut r)?;
    r.expect_empty()?;
    Ok(value)
}

fn unexpected(expected: &'static str, found: u8) -> DecodeError {
    Kind::UnexpectedConstructor { expected, found }.into()
}

impl Decode for Value {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        decode_value(r, 0)
    }
}

fn decode_value(r: &mut Reader, depth: usize) -> Result<Value, DecodeError> {
    match r.u8()? {
        f::DESCRIBED => decode_described(r, depth),
        code => decode_body(code, r, depth),
    }
}

fn nested(depth: usize) -> Result<usize, DecodeError> {
    if depth >= MAX_DEPTH {
        Err(Kind::TooDeep.into())
    } else {
        Ok(depth + 1)
    }
}

fn decode_descriptor(r: &mut Reader, depth: usize) -> Result<Descriptor, DecodeError> {
    Ok(match decode_value(r, depth)? {
        Value::Ulong(code) => Descriptor::Code(code),
        Value::Symbol(name) => Descriptor::Name(name),
        other => Descriptor::Other(Box::new(other)),
    })
}

/// Decodes what follows a `0x00` constructor.
fn decode_described(r: &mut Reader, depth: usize) -> Result<Value, DecodeError> {
    let depth = nested(depth)?;
    let descriptor = decode_descriptor(r, depth)?;
    let value = decode_value(r, depth)?;
    Ok(Value::from(Described { descriptor, value }))
}

/// Decodes the body of a value whose constructor `code` was already read.
fn decode_body(code: u8, r: &mut Reader, depth: usize) -> Result<Value, DecodeError> {
    Ok(match code {
        f::NULL => Value::Null,
        f::TRUE => Value::Boolean(true),
        f::FALSE => Value::Boolean(false),
        f::BOOLEAN => Value::Boolean(boolean_byte(r.u8()?)?),
        f::UBYTE => Value::Ubyte(r.u8()?),
        f::USHORT => Value::Ushort(r.u16()?),
        f::UINT0 => Value::Uint(0),
        f::SMALLUINT => Value::Uint(u32::from(r.u8()?)),
        f::UINT => Value::Uint(r.u32()?),
        f::ULONG0 => Value::Ulong(0),
        f::SMALLULONG => Value::Ulong(u64::from(r.u8()?)),
        f::ULONG => Value::Ulong(r.u64()?),
        f::BYTE => Value::Byte(r.u8()? as i8),
        f::SHORT => Value::Short(r.u16()? as i16),
        f::SMALLINT => Value::Int(i32::from(r.u8()? as i8)),
        f::INT => Value::Int(r.u32()? as i32),
        f::SMALLLONG => Value::Long(i64::from(r.u8()? as i8)),
        f::LONG => Value::Long(r.u64()? as i64),
        f::FLOAT => Value::Float(f32::from_bits(r.u32()?)),
        f::DOUBLE => Value::Double(f64::from_bits(r.u64()?)),
        f::DECIMAL32 => Value::Decimal32(r.bytes()?),
        f::DECIMAL64 => Value::Decimal64(r.bytes()?),
        f::DECIMAL128 => Value::Decimal128(r.bytes()?),
        f::CHAR => {
            let c = r.u32()?;
            Value::Char(char::from_u32(c).ok_or(Kind::InvalidChar(c))?)
        }
        f::TIMESTAMP => Value::Timestamp(r.u64()? as i64),
        f::UUID => Value::Uuid(r.bytes()?),
        f::VBIN8 | f::VBIN32 => Value::Binary(variable(code, r)?),
        f::STR8 | f::STR32 => Value::String(utf8(variable(code, r)?)?),
        f::SYM8 | f::SYM32 => Value::Symbol(symbol(variable(code, r)?)?),
        f::LIST0 => Value::List(Vec::new()),
        f::LIST8 | f::LIST32 => {
            let (mut items, count) = compound(code, r)?;
            let depth = nested(depth)?;
            let list = (0..count)
                .map(|_| decode_value(&mut items, depth))
                .collect::<Result<_, _>>()?;
            end_of_compound(&items)?;
            Value::List(list)
        }
        f::MAP8 | f::MAP32 => {
            let (mut items, count) = compound(code, r)?;
            if count % 2 != 0 {
                return Err(Kind::OddMapCount.into());
            }
            let depth = nested(depth)?;
            let map = (0..count / 2)
                .map(|_| {
                    Ok((
                        decode_value(&mut items, depth)?,
                        decode_value(&mut items, depth)?,
                    ))
                })
                .collect::<Result<_, DecodeError>>()?;
            end_of_compound(&items)?;
            Value::Map(map)
        }
        f::ARRAY8 | f::ARRAY32 => Value::Array(decode_array(code, r, depth)?),
        other => return Err(Kind::UnknownConstructor(other).into()),
    })
}

fn boolean_byte(b: u8) -> Result<bool, DecodeError> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Kind::InvalidValue.into()),
    }
}

/// Reads the length prefix of a binary, string or symbol, then its bytes.
fn variable(code: u8, r: &mut Reader) -> Result<Bytes, DecodeError> {
    let len = if code & 0xf0 == 0xa0 {
        usize::from(r.u8()?)
    } else {
        r.u32()? as usize
    };
    r.take_bytes(len)
}

fn utf8(bytes: Bytes) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Kind::InvalidUtf8.into())
}

fn symbol(bytes: Bytes) -> Result<Symbol, DecodeError> {
    let text = std::str::from_utf8(&bytes).map_err(|_| Kind::InvalidSymbol)?;
    Symbol::new(text).ok_or(Kind::InvalidSymbol.into())
}

/// Reads a list, map or array header and returns a reader bounded to its
/// elements plus the element count.
///
/// The count is checked against the bytes that remain: every element takes at
/// least one byte, so a count larger than that is malformed, and nothing is
/// ever allocated for elements the input cannot hold.
fn compound(code: u8, r: &mut Reader) -> Result<(Reader, usize), DecodeError> {
    let small = matches!(code, f::LIST8 | f::MAP8 | f::ARRAY8);
    let (body, count) = if small {
        let size = usize::from(r.u8()?);
        let mut body = r.sub(size)?;
        let count = usize::from(body.u8()?);
        (body, count)
    } else {
        let size = r.u32()? as usize;
        let mut body = r.sub(size)?;
        let count = body.u32()? as usize;
        (body, count)
    };
    if count > body.remaining() {
        return Err(Kind::CountExceedsSize.into());
    }
    Ok((body, count))
}

fn end_of_compound(items: &Reader) -> Result<(), DecodeError> {
    if items.is_empty() {
        Ok(())
    } else {
        Err(Kind::SizeMismatch.into())
    }
}

/// The constructor shared by an array's elements.
enum ElementCode {
    Plain(u8),
    Described(Descriptor, Box<ElementCode>),
}

fn decode_element_code(r: &mut Reader, depth: usize) -> Result<ElementCode, DecodeError> {
    match r.u8()? {
        f::DESCRIBED => {
            let depth = nested(depth)?;
            let descriptor = decode_descriptor(r, depth)?;
            let inner = decode_element_code(r, depth)?;
            Ok(ElementCode::Described(descriptor, Box::new(inner)))
        }
        // Checked here, not only per element: an empty array has none.
        code if f::is_defined(code) => Ok(ElementCode::Plain(code)),
        code => Err(Kind::UnknownConstructor(code).into()),
    }
}

fn decode_element(code: &ElementCode, r: &mut Reader, depth: usize) -> Result<Value, DecodeError> {
    match code {
        ElementCode::Plain(code) => decode_body(*code, r, depth),
        ElementCode::Described(descriptor, inner) => Ok(Value::from(Described {
            descriptor: descriptor.clone(),
            value: decode_element(inner, r, depth)?,
        })),
    }
}

fn decode_array(code: u8, r: &mut Reader, depth: usize) -> Result<Array, DecodeError> {
    let (mut items, count) = compound(code, r)?;
    let depth = nested(depth)?;
    let element = decode_element_code(&mut items, depth)?;
    if count > items.remaining() {
        return Err(Kind::CountExceedsSize.into());
    }
    let values = (0..count)
        .map(|_| decode_element(&element, &mut items, depth))
        .collect::<Result<_, _>>()?;
    end_of_compound(&items)?;
    Ok(Array::from_decoded(values))
}

impl Decode for bool {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.u8()? {
            f::TRUE => Ok(true),
            f::FALSE => Ok(false),
            f::BOOLEAN => boolean_byte(r.u8()?),
            found => Err(unexpected("boolean", found)),
        }
    }
}

impl Decode for u8 {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.u8()? {
            f::UBYTE => r.u8(),
            found => Err(unexpected("ubyte", found)),
        }
    }
}

impl Decode for u16 {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.u8()? {
            f::USHORT => r.u16(),
            found => Err(unexpected("ushort", found)),
        }
    }
}

impl Decode for u32 {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.u8()? {
            f::UINT0 => Ok(0),
            f::SMALLUINT => r.u8().map(u32::from),
            f::UINT => r.u32(),
            found => Err(unexpected("uint", found)),
        }
    }
}

impl Decode for u64 {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.u8()? {
            f::ULONG0 => Ok(0),
            f::SMALLULONG => r.u8().map(u64::from),
            f::ULONG => r.u64(),
            found => Err(unexpected("ulong", found)),
        }
    }
}

impl Decode for String {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.u8()? {
            code @ (f::STR8 | f::STR32) => utf8(variable(code, r)?),
            found => Err(unexpected("string", found)),
        }
    }
}

impl Decode for Symbol {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.u8()? {
            code @ (f::SYM8 | f::SYM32) => symbol(variable(code, r)?),
            found => Err(unexpected("symbol", found)),
        }
    }
}

impl Decode for Bytes {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.u8()? {
            code @ (f::VBIN8 | f::VBIN32) => variable(code, r),
            found => Err(unexpected("binary", found)),
        }
    }
}

/// `null` decodes as `None`.
impl<T: Decode> Decode for Option<T> {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        if r.peek_u8()? == f::NULL {
            r.u8()?;
            Ok(None)
        } else {
            T::decode(r).map(Some)
        }
    }
}

/// A "multiple" field of symbols: null, one symbol, or an array of symbols.
impl Decode for Vec<Symbol> {
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.peek_u8()? {
            f::NULL => r.u8().map(|_| Vec::new()),
            f::SYM8 | f::SYM32 => Symbol::decode(r).map(|s| vec![s]),
            code @ (f::ARRAY8 | f::ARRAY32) => {
                r.u8()?;
                decode_array(code, r, 0)?
                    .into_items()
                    .into_iter()
                    .map(|v| match v {
                        Value::Symbol(s) => Ok(s),
                        _ => Err(Kind::InvalidValue.into()),
                    })
                    .collect()
            }
            found => Err(unexpected("symbol or symbol array", found)),
        }
    }
}

/// Reads the header of a described value and checks that its descriptor
/// names `(name, code)`.
pub fn expect_descriptor(r: &mut Reader, name: &'static str, code: u64) -> Result<(), DecodeError> {
    match r.u8()? {
        f::DESCRIBED => {}
        found => return Err(unexpected(name, found)),
    }
    if decode_descriptor(r, 0)?.is(name, code) {
        Ok(())
    } else {
        Err(Kind::UnexpectedDescriptor.into())
    }
}

/// Reads the descriptor of a described value, leaving its value to be read.
pub fn read_descriptor(r: &mut Reader) -> Result<Descriptor, DecodeError> {
    match r.u8()? {
        f::DESCRIBED => decode_descriptor(r, 0),
        found => Err(unexpected("described type", found)),
    }
}

/// Reads a list header (list0, list8 or list32) and returns a reader bounded
/// to its elements plus the element count.
pub fn read_list(r: &mut Reader) -> Result<(Reader, usize), DecodeError> {
    match r.u8()? {
        f::LIST0 => Ok((Reader::new(Bytes::new()), 0)),
        code @ (f::LIST8 | f::LIST32) => compound(code, r),
        found => Err(unexpected("list", found)),
    }
}

/// Reads a map header and returns a reader bounded to its entries plus the
/// number of entries (half the element count).
pub fn read_map(r: &mut Reader) -> Result<(Reader, usize), DecodeError> {
    match r.u8()? {
        code @ (f::MAP8 | f::MAP32) => {
            let (items, count) = compound(code, r)?;
            if count % 2 != 0 {
                return Err(Kind::OddMapCount.into());
            }
            Ok((items, count / 2))
        }
        found => Err(unexpected("map", found)),
    }
}
