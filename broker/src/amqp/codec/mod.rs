//! The AMQP 1.0 type system (spec part 1): values, their encoding, and the
//! described composites the protocol is built from.
//!
//! Modelled on rustls' codec: a bounded [`Reader`], an [`Encode`] that cannot
//! fail paired with a [`Decode`] that returns a typed, `Copy` [`DecodeError`].

mod composite;
mod decode;
mod encode;
mod error;
pub mod format;
mod reader;
mod value;

pub(crate) use composite::composite_codec;
pub use composite::{Composite, FieldDecoder, FieldEncoder, decode_list, encode_list};
pub use decode::{
    Decode, MAX_DEPTH, expect_descriptor, from_bytes, read_descriptor, read_list, read_map,
};
pub use encode::{Encode, encode_descriptor, encode_list_of, encode_map, to_bytes};
pub use error::{DecodeError, DecodeErrorKind};
pub use reader::Reader;
pub use value::{Array, Described, Descriptor, MixedArray, Symbol, Value};

#[cfg(test)]
mod tests;
