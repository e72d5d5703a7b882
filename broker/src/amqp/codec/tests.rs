use bytes::Bytes;

use super::*;

fn encode(v: &Value) -> Vec<u8> {
    to_bytes(v).to_vec()
}

fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    from_bytes(Bytes::copy_from_slice(bytes))
}

#[test]
fn integers_take_the_smallest_constructor() {
    assert_eq!(encode(&Value::Uint(0)), [0x43]);
    assert_eq!(encode(&Value::Uint(255)), [0x52, 0xff]);
    assert_eq!(encode(&Value::Uint(256)), [0x70, 0, 0, 1, 0]);
    assert_eq!(encode(&Value::Ulong(0)), [0x44]);
    assert_eq!(encode(&Value::Ulong(7)), [0x53, 7]);
    assert_eq!(encode(&Value::Int(-1)), [0x54, 0xff]);
    assert_eq!(encode(&Value::Int(128)), [0x71, 0, 0, 0, 128]);
    assert_eq!(encode(&Value::Long(-128)), [0x55, 0x80]);
    assert_eq!(encode(&Value::Boolean(true)), [0x41]);
    assert_eq!(encode(&Value::List(vec![])), [0x45]);
}

#[test]
fn strings_switch_to_32_bit_lengths_past_255_bytes() {
    assert_eq!(encode(&Value::from("hi")), [0xa1, 2, b'h', b'i']);
    let long = "x".repeat(256);
    let bytes = encode(&Value::from(long.as_str()));
    assert_eq!(&bytes[..5], [0xb1, 0, 0, 1, 0]);
    assert_eq!(decode(&bytes), Ok(Value::String(long)));
}

#[test]
fn compounds_switch_to_32_bit_form_when_large() {
    let small = Value::List(vec![Value::Uint(1); 3]);
    assert_eq!(encode(&small), [0xc0, 7, 3, 0x52, 1, 0x52, 1, 0x52, 1]);
    let large = Value::List(vec![Value::Ulong(u64::MAX); 40]);
    let bytes = encode(&large);
    assert_eq!(bytes[0], 0xd0);
    assert_eq!(decode(&bytes), Ok(large));
}

#[test]
fn arrays_share_the_widest_constructor() {
    let array = Array::try_from(vec![Value::Uint(1), Value::Uint(300)]).unwrap();
    let bytes = encode(&Value::Array(array.clone()));
    assert_eq!(bytes, [0xe0, 10, 2, 0x70, 0, 0, 0, 1, 0, 0, 1, 44]);
    assert_eq!(decode(&bytes), Ok(Value::Array(array)));
}

#[test]
fn described_arrays_write_the_descriptor_once() {
    let item = |v| {
        Value::from(Described {
            descriptor: Descriptor::Code(0x70),
            value: Value::Uint(v),
        })
    };
    let array = Array::try_from(vec![item(1), item(2)]).unwrap();
    let bytes = encode(&Value::Array(array.clone()));
    assert_eq!(bytes, [0xe0, 7, 2, 0x00, 0x53, 0x70, 0x52, 1, 2]);
    assert_eq!(decode(&bytes), Ok(Value::Array(array)));
}

#[test]
fn decoding_rejects_malformed_input_with_typed_errors() {
    let kind = |bytes: &[u8]| decode(bytes).unwrap_err().kind;
    assert_eq!(kind(&[]), DecodeErrorKind::Truncated);
    assert_eq!(kind(&[0x70, 0, 0]), DecodeErrorKind::Truncated);
    assert_eq!(kind(&[0xff]), DecodeErrorKind::UnknownConstructor(0xff));
    assert_eq!(kind(&[0xa1, 1, 0xff]), DecodeErrorKind::InvalidUtf8);
    assert_eq!(kind(&[0xa3, 1, 0x80]), DecodeErrorKind::InvalidSymbol);
    assert_eq!(kind(&[0x73, 0, 0, 0xd8, 0]), DecodeErrorKind::InvalidChar(0xd800));
    assert_eq!(kind(&[0x56, 2]), DecodeErrorKind::InvalidValue);
    // A list claiming 200 elements in 2 bytes of size.
    assert_eq!(kind(&[0xc0, 2, 200, 0x40]), DecodeErrorKind::CountExceedsSize);
    // A list whose elements do not fill its size.
    assert_eq!(kind(&[0xc0, 3, 1, 0x40, 0x40]), DecodeErrorKind::SizeMismatch);
    assert_eq!(kind(&[0xc1, 2, 1, 0x40]), DecodeErrorKind::OddMapCount);
    assert_eq!(kind(&[0x40, 0x40]), DecodeErrorKind::TrailingBytes);
    // A 4 GiB binary in a 9-byte input allocates nothing and fails cleanly.
    assert_eq!(kind(&[0xb0, 0xff, 0xff, 0xff, 0xff, 1]), DecodeErrorKind::Truncated);
}

#[test]
fn nesting_is_bounded() {
    let mut bytes = Vec::new();
    for _ in 0..=MAX_DEPTH {
        bytes.extend_from_slice(&[0x00, 0x53, 0x01]);
    }
    bytes.push(0x40);
    assert_eq!(decode(&bytes).unwrap_err().kind, DecodeErrorKind::TooDeep);

    let mut ok = Vec::new();
    for _ in 0..MAX_DEPTH {
        ok.extend_from_slice(&[0x00, 0x53, 0x01]);
    }
    ok.push(0x40);
    assert!(decode(&ok).is_ok());
}

#[test]
fn binary_decodes_without_copying() {
    let input = Bytes::from_static(&[0xa0, 3, 1, 2, 3]);
    let Value::Binary(b) = from_bytes::<Value>(input.clone()).unwrap() else {
        panic!("not binary");
    };
    assert_eq!(b.as_ptr(), input[2..].as_ptr());
}
