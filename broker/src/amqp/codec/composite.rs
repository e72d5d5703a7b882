//! Composite types (spec part 1 §1.4): described lists of named fields, such
//! as performatives and message sections.

use bytes::{BufMut, BytesMut};

use super::decode::{self, Decode};
use super::encode::{self, Encode, put_compound};
use super::error::{DecodeError, DecodeErrorKind};
use super::format as f;
use super::reader::Reader;
use super::value::{Descriptor, Value};

/// A described list whose fields are written and read in order.
pub trait Composite: Sized {
    /// The symbolic descriptor, e.g. `amqp:open:list`.
    const NAME: &'static str;
    /// The numeric descriptor, e.g. `0x10`.
    const CODE: u64;

    /// Writes every field, in order.
    fn encode_fields(&self, fields: &mut FieldEncoder<'_>);

    /// Reads every field, in order.
    fn decode_fields(fields: &mut FieldDecoder) -> Result<Self, DecodeError>;

    /// Encodes the composite, descriptor included.
    fn encode_composite(&self, buf: &mut BytesMut) {
        encode::encode_descriptor(buf, &Descriptor::Code(Self::CODE));
        encode_list(buf, |fields| self.encode_fields(fields));
    }

    /// Decodes the composite once its descriptor has been read and matched.
    fn decode_after_descriptor(r: &mut Reader) -> Result<Self, DecodeError> {
        decode_list(r, Self::decode_fields)
    }

    /// Decodes the composite, descriptor included.
    fn decode_composite(r: &mut Reader) -> Result<Self, DecodeError> {
        decode::expect_descriptor(r, Self::NAME, Self::CODE)?;
        Self::decode_after_descriptor(r)
    }
}

/// Writes a list of fields, trimming trailing nulls (the spec lets them be
/// omitted, and peers such as Proton do so).
pub fn encode_list(buf: &mut BytesMut, write: impl FnOnce(&mut FieldEncoder<'_>)) {
    let start = buf.len();
    let mut kept_count = 0;
    put_compound(buf, [f::LIST8, f::LIST32], |buf| {
        let kept_len = buf.len();
        let mut fields = FieldEncoder {
            buf: &mut *buf,
            count: 0,
            kept_len,
            kept_count: 0,
        };
        write(&mut fields);
        let kept_len = fields.kept_len;
        kept_count = fields.kept_count;
        buf.truncate(kept_len);
        kept_count
    });
    if kept_count == 0 {
        buf.truncate(start);
        buf.put_u8(f::LIST0);
    }
}

/// Reads a list of fields with `read`, in order, after a descriptor that
/// was already read and matched; fields beyond those `read` takes must be
/// null.
pub fn decode_list<T>(
    r: &mut Reader,
    read: impl FnOnce(&mut FieldDecoder) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let (items, count) = decode::read_list(r)?;
    let mut fields = FieldDecoder {
        items,
        remaining: count,
    };
    let value = read(&mut fields)?;
    fields.finish()?;
    Ok(value)
}

/// Appends a composite's fields in order.
pub struct FieldEncoder<'a> {
    buf: &'a mut BytesMut,
    count: usize,
    /// Length and count up to the last non-null field.
    kept_len: usize,
    kept_count: usize,
}

impl FieldEncoder<'_> {
    /// Writes the next field.
    pub fn field<T: Encode + ?Sized>(&mut self, value: &T) -> &mut Self {
        value.encode(self.buf);
        self.count += 1;
        if !value.is_null() {
            self.kept_len = self.buf.len();
            self.kept_count = self.count;
        }
        self
    }
}

/// Reads a composite's fields in order. A field beyond the encoded count is
/// absent, which the spec treats as null.
pub struct FieldDecoder {
    items: Reader,
    remaining: usize,
}

impl FieldDecoder {
    /// The next field, `None` when null or absent.
    pub fn optional<T: Decode>(&mut self, name: &'static str) -> Result<Option<T>, DecodeError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        Option::<T>::decode(&mut self.items).map_err(|e| e.in_field(name))
    }

    /// The next field, which must be present and not null.
    pub fn required<T: Decode>(&mut self, name: &'static str) -> Result<T, DecodeError> {
        self.optional(name)?
            .ok_or(DecodeError::new(DecodeErrorKind::MissingField).in_field(name))
    }

    /// The next field, or `default` when null or absent.
    pub fn or<T: Decode>(&mut self, name: &'static str, default: T) -> Result<T, DecodeError> {
        Ok(self.optional(name)?.unwrap_or(default))
    }

    /// The next field, or `T::default()` when null or absent.
    pub fn or_default<T: Decode + Default>(
        &mut self,
        name: &'static str,
    ) -> Result<T, DecodeError> {
        Ok(self.optional(name)?.unwrap_or_default())
    }

    /// Rejects fields beyond those the type defines, unless they are null:
    /// a non-null extra field carries meaning this version cannot honour.
    fn finish(mut self) -> Result<(), DecodeError> {
        while self.remaining > 0 {
            self.remaining -= 1;
            if !Value::decode(&mut self.items)?.is_null() {
                return Err(DecodeErrorKind::TrailingBytes.into());
            }
        }
        self.items
            .expect_empty()
            .map_err(|_| DecodeErrorKind::SizeMismatch.into())
    }
}

/// Implements [`Encode`] and [`Decode`] for composite types.
macro_rules! composite_codec {
    ($($t:ty),* $(,)?) => {
        $(
            impl $crate::amqp::codec::Encode for $t {
                fn encode(&self, buf: &mut ::bytes::BytesMut) {
                    $crate::amqp::codec::Composite::encode_composite(self, buf)
                }
            }

            impl $crate::amqp::codec::Decode for $t {
                fn decode(
                    r: &mut $crate::amqp::codec::Reader,
                ) -> Result<Self, $crate::amqp::codec::DecodeError> {
                    <$t as $crate::amqp::codec::Composite>::decode_composite(r)
                }
            }
        )*
    };
}
pub(crate) use composite_codec;
