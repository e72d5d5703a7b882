//! Encoding: always the smallest constructor, and infallible.

use bytes::{BufMut, Bytes, BytesMut};

use super::format as f;
use super::value::{Array, Described, Descriptor, Symbol, Value};

/// A type with an AMQP encoding. Encoding cannot fail: every value a Rust
/// type can hold has a valid encoding.
pub trait Encode {
    /// Appends the encoding of `self` to `buf`.
    fn encode(&self, buf: &mut BytesMut);

    /// True if `self` encodes as `null`; composites trim trailing nulls.
    fn is_null(&self) -> bool {
        false
    }
}

/// Encodes `value` into a fresh buffer.
pub fn to_bytes<T: Encode + ?Sized>(value: &T) -> Bytes {
    let mut buf = BytesMut::new();
    value.encode(&mut buf);
    buf.freeze()
}

/// Writes a list, map or array: `body` appends the elements and returns their
/// count, and the header is then written in its 8-bit form if size and count
/// allow, else 32-bit.
///
/// The body is written first, after room for the 32-bit header, so that its
/// size is known without encoding it twice; a short body is then moved back
/// over the unused header bytes.
pub(super) fn put_compound(
    buf: &mut BytesMut,
    [code8, code32]: [u8; 2],
    body: impl FnOnce(&mut BytesMut) -> usize,
) {
    const HEADER32: usize = 9;
    const HEADER8: usize = 3;
    let start = buf.len();
    buf.put_bytes(0, HEADER32);
    let count = body(buf);
    let body_len = buf.len() - start - HEADER32;
    // The size field counts the one-byte count field plus the body.
    if body_len < u8::MAX as usize && count <= u8::MAX as usize {
        buf[start] = code8;
        buf[start + 1] = (body_len + 1) as u8;
        buf[start + 2] = count as u8;
        buf.copy_within(start + HEADER32.., start + HEADER8);
        buf.truncate(start + HEADER8 + body_len);
    } else {
        put_compound32_header(&mut buf[start..start + HEADER32], code32, body_len, count);
    }
}

/// Writes a list, map or array that is an array element: its 32-bit size and
/// count, then its elements. The constructor is not repeated: the array
/// writes it once for all its elements.
fn put_compound32_element(buf: &mut BytesMut, count: usize, body: impl FnOnce(&mut BytesMut)) {
    const SIZE_AND_COUNT: usize = 8;
    let start = buf.len();
    buf.put_bytes(0, SIZE_AND_COUNT);
    body(buf);
    let body_len = buf.len() - start - SIZE_AND_COUNT;
    // The size field counts the count field plus the body.
    buf[start..start + 4].copy_from_slice(&len32(body_len + 4).to_be_bytes());
    buf[start + 4..start + 8].copy_from_slice(&len32(count).to_be_bytes());
}

fn put_compound32_header(header: &mut [u8], code32: u8, body_len: usize, count: usize) {
    header[0] = code32;
    header[1..5].copy_from_slice(&len32(body_len + 4).to_be_bytes());
    header[5..9].copy_from_slice(&len32(count).to_be_bytes());
}

/// Converts a length to the wire's u32.
///
/// # Panics
/// Above 4 GiB, which no frame can carry (frames are at most 4 GiB long).
fn len32(len: usize) -> u32 {
    u32::try_from(len).expect("AMQP values are smaller than 4 GiB")
}

pub(super) fn put_null(buf: &mut BytesMut) {
    buf.put_u8(f::NULL);
}

pub(super) fn put_bool(buf: &mut BytesMut, v: bool) {
    buf.put_u8(if v { f::TRUE } else { f::FALSE });
}

pub(super) fn put_uint(buf: &mut BytesMut, v: u32) {
    match v {
        0 => buf.put_u8(f::UINT0),
        1..=255 => buf.put_slice(&[f::SMALLUINT, v as u8]),
        _ => {
            buf.put_u8(f::UINT);
            buf.put_u32(v);
        }
    }
}

pub(super) fn put_ulong(buf: &mut BytesMut, v: u64) {
    match v {
        0 => buf.put_u8(f::ULONG0),
        1..=255 => buf.put_slice(&[f::SMALLULONG, v as u8]),
        _ => {
            buf.put_u8(f::ULONG);
            buf.put_u64(v);
        }
    }
}

fn put_variable(buf: &mut BytesMut, [code8, code32]: [u8; 2], bytes: &[u8]) {
    match u8::try_from(bytes.len()) {
        Ok(len) => buf.put_slice(&[code8, len]),
        Err(_) => {
            buf.put_u8(code32);
            buf.put_u32(len32(bytes.len()));
        }
    }
    buf.put_slice(bytes);
}

pub(super) fn put_binary(buf: &mut BytesMut, v: &[u8]) {
    put_variable(buf, [f::VBIN8, f::VBIN32], v);
}

pub(super) fn put_str(buf: &mut BytesMut, v: &str) {
    put_variable(buf, [f::STR8, f::STR32], v.as_bytes());
}

pub(super) fn put_symbol(buf: &mut BytesMut, v: &str) {
    put_variable(buf, [f::SYM8, f::SYM32], v.as_bytes());
}

/// Writes a described-value prefix: the descriptor constructor and the
/// descriptor itself.
pub fn encode_descriptor(buf: &mut BytesMut, descriptor: &Descriptor) {
    buf.put_u8(f::DESCRIBED);
    match descriptor {
        Descriptor::Code(code) => put_ulong(buf, *code),
        Descriptor::Name(name) => put_symbol(buf, name.as_str()),
        Descriptor::Other(value) => value.encode(buf),
    }
}

impl Encode for Value {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Value::Null => put_null(buf),
            Value::Boolean(v) => put_bool(buf, *v),
            Value::Uint(v) => put_uint(buf, *v),
            Value::Ulong(v) => put_ulong(buf, *v),
            Value::Int(v) if i8::try_from(*v).is_ok() => buf.put_slice(&[f::SMALLINT, *v as u8]),
            Value::Long(v) if i8::try_from(*v).is_ok() => buf.put_slice(&[f::SMALLLONG, *v as u8]),
            Value::Binary(v) => put_binary(buf, v),
            Value::String(v) => put_str(buf, v),
            Value::Symbol(v) => put_symbol(buf, v.as_str()),
            Value::List(items) => encode_list_of(buf, items),
            Value::Map(entries) => encode_map(buf, entries),
            Value::Array(array) => put_array(buf, array),
            Value::Described(described) => described.encode(buf),
            scalar => {
                let code = fixed_code(scalar);
                buf.put_u8(code);
                put_fixed_body(buf, scalar);
            }
        }
    }

    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
}

impl Encode for Described {
    fn encode(&self, buf: &mut BytesMut) {
        encode_descriptor(buf, &self.descriptor);
        self.value.encode(buf);
    }
}

/// Writes a list of values, in order.
pub fn encode_list_of<T: Encode>(buf: &mut BytesMut, items: &[T]) {
    if items.is_empty() {
        return buf.put_u8(f::LIST0);
    }
    put_compound(buf, [f::LIST8, f::LIST32], |buf| {
        items.iter().for_each(|item| item.encode(buf));
        items.len()
    })
}

/// Writes a map from its entries, in order.
pub fn encode_map<K: Encode, V: Encode>(buf: &mut BytesMut, entries: &[(K, V)]) {
    put_compound(buf, [f::MAP8, f::MAP32], |buf| {
        for (key, value) in entries {
            key.encode(buf);
            value.encode(buf);
        }
        entries.len() * 2
    });
}

/// The widest-needed fixed-width constructor of a scalar, as used in arrays
/// and for the scalars that have only one encoding.
fn fixed_code(v: &Value) -> u8 {
    match v {
        Value::Null => f::NULL,
        Value::Boolean(_) => f::BOOLEAN,
        Value::Ubyte(_) => f::UBYTE,
        Value::Ushort(_) => f::USHORT,
        Value::Uint(_) => f::UINT,
        Value::Ulong(_) => f::ULONG,
        Value::Byte(_) => f::BYTE,
        Value::Short(_) => f::SHORT,
        Value::Int(_) => f::INT,
        Value::Long(_) => f::LONG,
        Value::Float(_) => f::FLOAT,
        Value::Double(_) => f::DOUBLE,
        Value::Decimal32(_) => f::DECIMAL32,
        Value::Decimal64(_) => f::DECIMAL64,
        Value::Decimal128(_) => f::DECIMAL128,
        Value::Char(_) => f::CHAR,
        Value::Timestamp(_) => f::TIMESTAMP,
        Value::Uuid(_) => f::UUID,
        Value::Binary(_) => f::VBIN32,
        Value::String(_) => f::STR32,
        Value::Symbol(_) => f::SYM32,
        Value::List(_) => f::LIST32,
        Value::Map(_) => f::MAP32,
        Value::Array(_) => f::ARRAY32,
        Value::Described(_) => f::DESCRIBED,
    }
}

/// Writes the body of a fixed-width scalar for its [`fixed_code`].
fn put_fixed_body(buf: &mut BytesMut, v: &Value) {
    match v {
        Value::Null => {}
        Value::Boolean(v) => buf.put_u8(u8::from(*v)),
        Value::Ubyte(v) => buf.put_u8(*v),
        Value::Ushort(v) => buf.put_u16(*v),
        Value::Uint(v) => buf.put_u32(*v),
        Value::Ulong(v) => buf.put_u64(*v),
        Value::Byte(v) => buf.put_i8(*v),
        Value::Short(v) => buf.put_i16(*v),
        Value::Int(v) => buf.put_i32(*v),
        Value::Long(v) => buf.put_i64(*v),
        Value::Float(v) => buf.put_f32(*v),
        Value::Double(v) => buf.put_f64(*v),
        Value::Decimal32(v) => buf.put_slice(v),
        Value::Decimal64(v) => buf.put_slice(v),
        Value::Decimal128(v) => buf.put_slice(v),
        Value::Char(v) => buf.put_u32(u32::from(*v)),
        Value::Timestamp(v) => buf.put_i64(*v),
        Value::Uuid(v) => buf.put_slice(v),
        Value::Binary(_)
        | Value::String(_)
        | Value::Symbol(_)
        | Value::List(_)
        | Value::Map(_)
        | Value::Array(_)
        | Value::Described(_) => unreachable!("{v:?} is not a fixed-width scalar"),
    }
}

/// The single constructor every element of an array is written with.
enum ElementCode<'a> {
    Plain(u8),
    Described(&'a Descriptor, Box<ElementCode<'a>>),
}

impl<'a> ElementCode<'a> {
    /// The narrowest constructor that fits every element of `items`, which
    /// [`Array`] guarantees to share one type.
    fn for_items(items: &[&'a Value]) -> Self {
        let Some(first) = items.first() else {
            return ElementCode::Plain(f::NULL);
        };
        let all = |fits: fn(&Value) -> bool| items.iter().all(|v| fits(v));
        match first {
            Value::Described(d) => {
                let inner: Vec<&'a Value> = items.iter().map(|v| described_value(v)).collect();
                ElementCode::Described(&d.descriptor, Box::new(Self::for_items(&inner)))
            }
            Value::Uint(_) if all(|v| matches!(v, Value::Uint(0..=255))) => {
                ElementCode::Plain(f::SMALLUINT)
            }
            Value::Ulong(_) if all(|v| matches!(v, Value::Ulong(0..=255))) => {
                ElementCode::Plain(f::SMALLULONG)
            }
            Value::Int(_) if all(|v| matches!(v, Value::Int(-128..=127))) => {
                ElementCode::Plain(f::SMALLINT)
            }
            Value::Long(_) if all(|v| matches!(v, Value::Long(-128..=127))) => {
                ElementCode::Plain(f::SMALLLONG)
            }
            Value::Binary(_) | Value::String(_) | Value::Symbol(_)
                if all(|v| variable_bytes(v).len() <= u8::MAX as usize) =>
            {
                // The 8-bit length forms sit 0x10 below the 32-bit ones.
                ElementCode::Plain(fixed_code(first) - 0x10)
            }
            other => ElementCode::Plain(fixed_code(other)),
        }
    }

    fn put(&self, buf: &mut BytesMut) {
        match self {
            ElementCode::Plain(code) => buf.put_u8(*code),
            ElementCode::Described(descriptor, inner) => {
                encode_descriptor(buf, descriptor);
                inner.put(buf);
            }
        }
    }
}

fn described_value(v: &Value) -> &Value {
    match v {
        Value::Described(d) => &d.value,
        other => other,
    }
}

fn put_array(buf: &mut BytesMut, array: &Array) {
    let items = array.items();
    let refs: Vec<&Value> = items.iter().collect();
    let code = ElementCode::for_items(&refs);
    put_compound(buf, [f::ARRAY8, f::ARRAY32], |buf| {
        code.put(buf);
        for item in items {
            put_element(buf, item, &code);
        }
        items.len()
    });
}

/// Writes one array element's body (no constructor) for the array's `code`.
fn put_element(buf: &mut BytesMut, v: &Value, code: &ElementCode<'_>) {
    match (code, v) {
        (ElementCode::Described(_, inner), Value::Described(d)) => {
            put_element(buf, &d.value, inner)
        }
        (ElementCode::Plain(f::SMALLUINT), Value::Uint(v)) => buf.put_u8(*v as u8),
        (ElementCode::Plain(f::SMALLULONG), Value::Ulong(v)) => buf.put_u8(*v as u8),
        (ElementCode::Plain(f::SMALLINT), Value::Int(v)) => buf.put_i8(*v as i8),
        (ElementCode::Plain(f::SMALLLONG), Value::Long(v)) => buf.put_i8(*v as i8),
        (ElementCode::Plain(f::VBIN8 | f::STR8 | f::SYM8), v) => {
            let bytes = variable_bytes(v);
            buf.put_u8(bytes.len() as u8);
            buf.put_slice(bytes);
        }
        (ElementCode::Plain(f::VBIN32 | f::STR32 | f::SYM32), v) => {
            let bytes = variable_bytes(v);
            buf.put_u32(len32(bytes.len()));
            buf.put_slice(bytes);
        }
        (_, Value::List(items)) => put_compound32_element(buf, items.len(), |buf| {
            items.iter().for_each(|item| item.encode(buf))
        }),
        (_, Value::Map(entries)) => put_compound32_element(buf, entries.len() * 2, |buf| {
            for (key, value) in entries {
                key.encode(buf);
                value.encode(buf);
            }
        }),
        (_, Value::Array(array)) => {
            let refs: Vec<&Value> = array.items().iter().collect();
            let inner = ElementCode::for_items(&refs);
            put_compound32_element(buf, array.items().len(), |buf| {
                inner.put(buf);
                array
                    .items()
                    .iter()
                    .for_each(|item| put_element(buf, item, &inner));
            })
        }
        (_, scalar) => put_fixed_body(buf, scalar),
    }
}

fn variable_bytes(v: &Value) -> &[u8] {
    match v {
        Value::Binary(b) => b,
        Value::String(s) => s.as_bytes(),
        Value::Symbol(s) => s.as_str().as_bytes(),
        other => unreachable!("{other:?} is not variable-width"),
    }
}

macro_rules! encode_via {
    ($($t:ty => |$buf:ident, $v:ident| $body:expr),* $(,)?) => {
        $(impl Encode for $t {
            fn encode(&self, $buf: &mut BytesMut) {
                let $v = self;
                $body
            }
        })*
    };
}

encode_via! {
    bool => |buf, v| put_bool(buf, *v),
    u8 => |buf, v| buf.put_slice(&[f::UBYTE, *v]),
    u16 => |buf, v| { buf.put_u8(f::USHORT); buf.put_u16(*v) },
    u32 => |buf, v| put_uint(buf, *v),
    u64 => |buf, v| put_ulong(buf, *v),
    str => |buf, v| put_str(buf, v),
    String => |buf, v| put_str(buf, v),
    Symbol => |buf, v| put_symbol(buf, v.as_str()),
    Bytes => |buf, v| put_binary(buf, v),
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Some(v) => v.encode(buf),
            None => put_null(buf),
        }
    }

    fn is_null(&self) -> bool {
        self.as_ref().is_none_or(Encode::is_null)
    }
}

impl<T: Encode + ?Sized> Encode for &T {
    fn encode(&self, buf: &mut BytesMut) {
        (**self).encode(buf)
    }

    fn is_null(&self) -> bool {
        (**self).is_null()
    }
}

/// A "multiple" field of symbols (spec part 1 §1.3): encoded as null when
/// empty, else as an array.
impl Encode for [Symbol] {
    fn encode(&self, buf: &mut BytesMut) {
        if self.is_empty() {
            return put_null(buf);
        }
        let wide = self.iter().any(|s| s.as_str().len() > u8::MAX as usize);
        let code = if wide { f::SYM32 } else { f::SYM8 };
        put_compound(buf, [f::ARRAY8, f::ARRAY32], |buf| {
            buf.put_u8(code);
            for symbol in self {
                let bytes = symbol.as_str().as_bytes();
                if wide {
                    buf.put_u32(len32(bytes.len()));
                } else {
                    buf.put_u8(bytes.len() as u8);
                }
                buf.put_slice(bytes);
            }
            self.len()
        });
    }

    fn is_null(&self) -> bool {
        self.is_empty()
    }
}

impl Encode for Vec<Symbol> {
    fn encode(&self, buf: &mut BytesMut) {
        self.as_slice().encode(buf)
    }

    fn is_null(&self) -> bool {
        self.is_empty()
    }
}
