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
    assert_eq!(
        kind(&[0x73, 0, 0, 0xd8, 0]),
        DecodeErrorKind::InvalidChar(0xd800)
    );
    assert_eq!(kind(&[0x56, 2]), DecodeErrorKind::InvalidValue);
    // A list claiming 200 elements in 2 bytes of size.
    assert_eq!(
        kind(&[0xc0, 2, 200, 0x40]),
        DecodeErrorKind::CountExceedsSize
    );
    // A list whose elements do not fill its size.
    assert_eq!(
        kind(&[0xc0, 3, 1, 0x40, 0x40]),
        DecodeErrorKind::SizeMismatch
    );
    assert_eq!(kind(&[0xc1, 2, 1, 0x40]), DecodeErrorKind::OddMapCount);
    assert_eq!(kind(&[0x40, 0x40]), DecodeErrorKind::TrailingBytes);
    // A 4 GiB binary in a 9-byte input allocates nothing and fails cleanly.
    assert_eq!(
        kind(&[0xb0, 0xff, 0xff, 0xff, 0xff, 1]),
        DecodeErrorKind::Truncated
    );
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

// ---------------------------------------------------------------------------
// Every constructor of spec part 1 §1.6, decoded from hand-written bytes.
// ---------------------------------------------------------------------------

fn described(descriptor: Descriptor, value: Value) -> Value {
    Value::from(Described { descriptor, value })
}

fn symbol(s: &'static str) -> Value {
    Value::Symbol(Symbol::from_static(s))
}

fn array(items: Vec<Value>) -> Value {
    Value::Array(Array::try_from(items).unwrap())
}

/// `(constructor name, bytes as the spec lays them out, value)` for every
/// format code the decoder accepts.
fn every_constructor() -> Vec<(&'static str, Vec<u8>, Value)> {
    let uuid: Vec<u8> = (0..16).collect();
    let mut uuid_bytes = vec![0x98];
    uuid_bytes.extend(&uuid);
    let mut decimal128 = vec![0x94];
    decimal128.extend([0x22; 16]);
    vec![
        ("null", vec![0x40], Value::Null),
        ("true", vec![0x41], Value::Boolean(true)),
        ("false", vec![0x42], Value::Boolean(false)),
        ("boolean 0x01", vec![0x56, 0x01], Value::Boolean(true)),
        ("boolean 0x00", vec![0x56, 0x00], Value::Boolean(false)),
        ("ubyte", vec![0x50, 0xff], Value::Ubyte(255)),
        ("ushort", vec![0x60, 0x12, 0x34], Value::Ushort(0x1234)),
        ("uint0", vec![0x43], Value::Uint(0)),
        ("smalluint", vec![0x52, 0xff], Value::Uint(255)),
        (
            "uint",
            vec![0x70, 0xde, 0xad, 0xbe, 0xef],
            Value::Uint(0xdead_beef),
        ),
        ("ulong0", vec![0x44], Value::Ulong(0)),
        ("smallulong", vec![0x53, 0x10], Value::Ulong(0x10)),
        (
            "ulong",
            vec![0x80, 1, 2, 3, 4, 5, 6, 7, 8],
            Value::Ulong(0x0102_0304_0506_0708),
        ),
        ("byte", vec![0x51, 0x80], Value::Byte(-128)),
        ("short", vec![0x61, 0x80, 0x00], Value::Short(i16::MIN)),
        ("smallint", vec![0x54, 0xff], Value::Int(-1)),
        ("int", vec![0x71, 0x80, 0, 0, 0], Value::Int(i32::MIN)),
        ("smalllong", vec![0x55, 0x80], Value::Long(-128)),
        (
            "long",
            vec![0x81, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            Value::Long(i64::MAX),
        ),
        ("float", vec![0x72, 0x3f, 0xc0, 0, 0], Value::Float(1.5)),
        (
            "double",
            vec![0x82, 0xc0, 0x02, 0, 0, 0, 0, 0, 0],
            Value::Double(-2.25),
        ),
        (
            "decimal32",
            vec![0x74, 0x22, 0x50, 0, 1],
            Value::Decimal32([0x22, 0x50, 0, 1]),
        ),
        (
            "decimal64",
            vec![0x84, 1, 2, 3, 4, 5, 6, 7, 8],
            Value::Decimal64([1, 2, 3, 4, 5, 6, 7, 8]),
        ),
        ("decimal128", decimal128, Value::Decimal128([0x22; 16])),
        (
            "char",
            vec![0x73, 0, 0x01, 0xf6, 0x00],
            Value::Char('\u{1f600}'),
        ),
        (
            "timestamp",
            vec![0x83, 0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0],
            Value::Timestamp(1_700_000_000_000),
        ),
        ("uuid", uuid_bytes, Value::Uuid(uuid.try_into().unwrap())),
        (
            "vbin8",
            vec![0xa0, 2, 0xca, 0xfe],
            Value::Binary(Bytes::from_static(&[0xca, 0xfe])),
        ),
        (
            "vbin32",
            vec![0xb0, 0, 0, 0, 2, 0xca, 0xfe],
            Value::Binary(Bytes::from_static(&[0xca, 0xfe])),
        ),
        (
            "str8-utf8",
            vec![0xa1, 3, b'h', 0xc3, 0xa9],
            Value::from("hé"),
        ),
        (
            "str32-utf8",
            vec![0xb1, 0, 0, 0, 3, b'h', 0xc3, 0xa9],
            Value::from("hé"),
        ),
        ("sym8", vec![0xa3, 3, b'a', b':', b'b'], symbol("a:b")),
        (
            "sym32",
            vec![0xb3, 0, 0, 0, 3, b'a', b':', b'b'],
            symbol("a:b"),
        ),
        ("list0", vec![0x45], Value::List(vec![])),
        // size counts the count byte and the elements.
        (
            "list8",
            vec![0xc0, 3, 2, 0x41, 0x40],
            Value::List(vec![Value::Boolean(true), Value::Null]),
        ),
        (
            "list32",
            vec![0xd0, 0, 0, 0, 6, 0, 0, 0, 2, 0x41, 0x40],
            Value::List(vec![Value::Boolean(true), Value::Null]),
        ),
        (
            "map8",
            vec![0xc1, 5, 2, 0xa3, 1, b'k', 0x41],
            Value::Map(vec![(symbol("k"), Value::Boolean(true))]),
        ),
        (
            "map32",
            vec![0xd1, 0, 0, 0, 8, 0, 0, 0, 2, 0xa3, 1, b'k', 0x41],
            Value::Map(vec![(symbol("k"), Value::Boolean(true))]),
        ),
        (
            "array8",
            vec![0xe0, 4, 2, 0x50, 7, 9],
            array(vec![Value::Ubyte(7), Value::Ubyte(9)]),
        ),
        (
            "array32",
            vec![0xf0, 0, 0, 0, 7, 0, 0, 0, 2, 0x50, 7, 9],
            array(vec![Value::Ubyte(7), Value::Ubyte(9)]),
        ),
        (
            "described, numeric descriptor",
            vec![0x00, 0x53, 0x24, 0x45],
            described(Descriptor::Code(0x24), Value::List(vec![])),
        ),
        (
            "described, symbolic descriptor",
            [&[0x00, 0xa3, 18][..], b"amqp:accepted:list", &[0x45]].concat(),
            described(
                Descriptor::Name(Symbol::from_static("amqp:accepted:list")),
                Value::List(vec![]),
            ),
        ),
        (
            "described, other descriptor",
            vec![0x00, 0xa1, 1, b'x', 0x40],
            described(Descriptor::Other(Box::new(Value::from("x"))), Value::Null),
        ),
    ]
}

#[test]
fn decodes_every_constructor_the_spec_defines() {
    for (name, bytes, value) in every_constructor() {
        assert_eq!(decode(&bytes), Ok(value), "{name}");
    }
}

#[test]
fn every_decoded_constructor_round_trips_through_the_encoder() {
    for (name, bytes, value) in every_constructor() {
        let encoded = encode(&value);
        assert_eq!(
            decode(&encoded),
            Ok(value),
            "{name}: {bytes:02x?} re-encoded as {encoded:02x?}"
        );
    }
}

#[test]
fn every_strict_prefix_of_a_value_is_truncated() {
    for (name, bytes, _) in every_constructor() {
        for len in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..len]).map_err(|e| e.kind),
                Err(DecodeErrorKind::Truncated),
                "{name}, first {len} bytes"
            );
        }
    }
}

#[test]
fn a_byte_after_a_whole_value_is_trailing() {
    for (name, mut bytes, _) in every_constructor() {
        bytes.push(0x40);
        assert_eq!(
            decode(&bytes).map_err(|e| e.kind),
            Err(DecodeErrorKind::TrailingBytes),
            "{name}"
        );
    }
}

#[test]
fn format_codes_outside_the_spec_are_unknown_constructors() {
    let defined: Vec<u8> = every_constructor()
        .iter()
        .map(|(_, bytes, _)| bytes[0])
        .collect();
    for code in 0..=u8::MAX {
        let result = decode(&[code]);
        if defined.contains(&code) {
            assert_ne!(
                result.map_err(|e| e.kind),
                Err(DecodeErrorKind::UnknownConstructor(code)),
                "{code:#04x} is defined by the spec"
            );
        } else {
            assert_eq!(
                result.map_err(|e| e.kind),
                Err(DecodeErrorKind::UnknownConstructor(code)),
                "{code:#04x} is not defined by the spec"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The encoder picks the smallest constructor of each type.
// ---------------------------------------------------------------------------

#[test]
fn fixed_width_scalars_have_one_encoding() {
    assert_eq!(encode(&Value::Null), [0x40]);
    assert_eq!(encode(&Value::Boolean(false)), [0x42]);
    assert_eq!(encode(&Value::Ubyte(0)), [0x50, 0]);
    assert_eq!(encode(&Value::Ushort(0x0102)), [0x60, 1, 2]);
    assert_eq!(encode(&Value::Byte(-2)), [0x51, 0xfe]);
    assert_eq!(encode(&Value::Short(-2)), [0x61, 0xff, 0xfe]);
    assert_eq!(encode(&Value::Float(1.5)), [0x72, 0x3f, 0xc0, 0, 0]);
    assert_eq!(
        encode(&Value::Double(-2.25)),
        [0x82, 0xc0, 0x02, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(encode(&Value::Decimal32([1, 2, 3, 4])), [0x74, 1, 2, 3, 4]);
    assert_eq!(encode(&Value::Decimal64([9; 8]))[..2], [0x84, 9]);
    assert_eq!(encode(&Value::Decimal128([9; 16])).len(), 17);
    assert_eq!(encode(&Value::Char('A')), [0x73, 0, 0, 0, 0x41]);
    assert_eq!(
        encode(&Value::Timestamp(-1)),
        [0x83, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
    );
    assert_eq!(encode(&Value::Uuid([7; 16]))[..2], [0x98, 7]);
}

#[test]
fn signed_integers_use_the_one_byte_form_only_in_range() {
    assert_eq!(encode(&Value::Int(127)), [0x54, 0x7f]);
    assert_eq!(encode(&Value::Int(-128)), [0x54, 0x80]);
    assert_eq!(encode(&Value::Int(-129)), [0x71, 0xff, 0xff, 0xff, 0x7f]);
    assert_eq!(encode(&Value::Long(127)), [0x55, 0x7f]);
    assert_eq!(encode(&Value::Long(128)), [0x81, 0, 0, 0, 0, 0, 0, 0, 0x80]);
}

#[test]
fn unsigned_longs_use_zero_and_one_byte_forms() {
    assert_eq!(encode(&Value::Ulong(255)), [0x53, 0xff]);
    assert_eq!(encode(&Value::Ulong(256)), [0x80, 0, 0, 0, 0, 0, 0, 1, 0]);
}

#[test]
fn binary_and_symbols_switch_to_32_bit_lengths_past_255_bytes() {
    assert_eq!(
        encode(&Value::Binary(Bytes::from_static(b"ab"))),
        [0xa0, 2, b'a', b'b']
    );
    let bin = Value::Binary(Bytes::from(vec![0; 256]));
    assert_eq!(encode(&bin)[..5], [0xb0, 0, 0, 1, 0]);
    assert_eq!(encode(&symbol("ab")), [0xa3, 2, b'a', b'b']);
    let long = Value::Symbol(Symbol::new("s".repeat(256)).unwrap());
    let bytes = encode(&long);
    assert_eq!(bytes[..5], [0xb3, 0, 0, 1, 0]);
    assert_eq!(decode(&bytes), Ok(long));
}

#[test]
fn an_empty_string_uses_str8() {
    assert_eq!(encode(&Value::from("")), [0xa1, 0]);
}

#[test]
fn maps_switch_to_32_bit_form_when_large() {
    let small = Value::Map(vec![(symbol("k"), Value::Boolean(true))]);
    assert_eq!(encode(&small), [0xc1, 5, 2, 0xa3, 1, b'k', 0x41]);
    let large = Value::Map((0..200).map(|i| (Value::Uint(i), Value::Null)).collect());
    let bytes = encode(&large);
    assert_eq!(bytes[0], 0xd1);
    assert_eq!(bytes[5..9], [0, 0, 1, 144], "count is 400 keys and values");
    assert_eq!(decode(&bytes), Ok(large));
}

#[test]
fn an_empty_map_still_writes_its_count() {
    assert_eq!(encode(&Value::Map(vec![])), [0xc1, 1, 0]);
}

#[test]
fn a_list_of_exactly_254_body_bytes_fits_list8() {
    // 127 two-byte smalluints: size = 1 (count) + 254 = 255.
    let list = Value::List(vec![Value::Uint(1); 127]);
    assert_eq!(encode(&list)[..3], [0xc0, 255, 127]);
    let one_more = Value::List(vec![Value::Uint(1); 128]);
    assert_eq!(encode(&one_more)[..9], [0xd0, 0, 0, 1, 4, 0, 0, 0, 128]);
    assert_eq!(decode(&encode(&one_more)), Ok(one_more));
}

#[test]
fn described_values_write_descriptor_then_value() {
    let v = described(Descriptor::Code(0x77), Value::from("hi"));
    assert_eq!(encode(&v), [0x00, 0x53, 0x77, 0xa1, 2, b'h', b'i']);
    let named = described(Descriptor::Name(Symbol::from_static("x:y")), Value::Null);
    assert_eq!(encode(&named), [0x00, 0xa3, 3, b'x', b':', b'y', 0x40]);
}

// ---------------------------------------------------------------------------
// Arrays.
// ---------------------------------------------------------------------------

#[test]
fn an_empty_array_still_writes_an_element_constructor() {
    let bytes = encode(&Value::Array(Array::default()));
    assert_eq!(bytes, [0xe0, 2, 0, 0x40]);
    assert_eq!(decode(&bytes), Ok(Value::Array(Array::default())));
}

#[test]
fn arrays_of_small_ints_use_the_one_byte_element_forms() {
    let ints = array(vec![Value::Int(-1), Value::Int(5)]);
    assert_eq!(encode(&ints), [0xe0, 4, 2, 0x54, 0xff, 5]);
    let longs = array(vec![Value::Long(1), Value::Long(300)]);
    assert_eq!(encode(&longs)[..4], [0xe0, 18, 2, 0x81]);
    let ulongs = array(vec![Value::Ulong(0), Value::Ulong(255)]);
    assert_eq!(encode(&ulongs), [0xe0, 4, 2, 0x53, 0, 255]);
    for v in [ints, longs, ulongs] {
        assert_eq!(decode(&encode(&v)), Ok(v));
    }
}

#[test]
fn arrays_of_booleans_use_the_one_byte_boolean_form() {
    let bools = array(vec![Value::Boolean(true), Value::Boolean(false)]);
    assert_eq!(encode(&bools), [0xe0, 4, 2, 0x56, 1, 0]);
    assert_eq!(decode(&encode(&bools)), Ok(bools));
}

#[test]
fn arrays_of_strings_widen_every_element_when_one_is_long() {
    let short = array(vec![Value::from("a"), Value::from("bc")]);
    assert_eq!(encode(&short), [0xe0, 7, 2, 0xa1, 1, b'a', 2, b'b', b'c']);
    let long = array(vec![
        Value::from("a"),
        Value::from("x".repeat(256).as_str()),
    ]);
    let bytes = encode(&long);
    assert_eq!(bytes[..10], [0xf0, 0, 0, 1, 14, 0, 0, 0, 2, 0xb1]);
    assert_eq!(bytes[10..15], [0, 0, 0, 1, b'a']);
    assert_eq!(decode(&bytes), Ok(long));
}

#[test]
fn arrays_of_more_than_255_elements_use_array32() {
    let many = array(vec![Value::Ubyte(1); 256]);
    let bytes = encode(&many);
    assert_eq!(bytes[..10], [0xf0, 0, 0, 1, 5, 0, 0, 1, 0, 0x50]);
    assert_eq!(decode(&bytes), Ok(many));
}

/// Regression (fuzz crash `seed-crash-array-of-arrays`): list, map and array
/// elements repeated their constructor inside the array, which the decoder
/// (rightly) read as the element's size.
#[test]
fn arrays_of_compound_elements_write_their_constructor_once() {
    let lists = array(vec![Value::List(vec![Value::Uint(1)])]);
    let bytes = encode(&lists);
    assert_eq!(bytes, [0xe0, 12, 1, 0xd0, 0, 0, 0, 6, 0, 0, 0, 1, 0x52, 1]);
    assert_eq!(decode(&bytes), Ok(lists));

    let maps = array(vec![Value::Map(vec![(Value::Null, Value::Null)])]);
    let bytes = encode(&maps);
    assert_eq!(
        bytes,
        [0xe0, 12, 1, 0xd1, 0, 0, 0, 6, 0, 0, 0, 2, 0x40, 0x40]
    );
    assert_eq!(decode(&bytes), Ok(maps));

    let arrays = array(vec![array(vec![Value::Ubyte(7)])]);
    let bytes = encode(&arrays);
    assert_eq!(bytes, [0xe0, 12, 1, 0xf0, 0, 0, 0, 6, 0, 0, 0, 1, 0x50, 7]);
    assert_eq!(decode(&bytes), Ok(arrays));
}

#[test]
fn the_fuzz_crash_that_found_nested_arrays_round_trips() {
    let input = include_bytes!("../../../../fuzz/corpus/decode_value/seed-crash-array-of-arrays");
    let value = decode(input).unwrap();
    let encoded = encode(&value);
    assert_eq!(decode(&encoded), Ok(value));
}

#[test]
fn arrays_of_empty_compounds_round_trip() {
    let v = array(vec![Value::List(vec![]), Value::List(vec![])]);
    assert_eq!(decode(&encode(&v)), Ok(v));
    let v = array(vec![Value::Map(vec![])]);
    assert_eq!(decode(&encode(&v)), Ok(v));
    let v = array(vec![Value::Array(Array::default())]);
    assert_eq!(decode(&encode(&v)), Ok(v));
}

#[test]
fn arrays_of_arrays_may_differ_in_their_inner_element_type() {
    let v = array(vec![
        array(vec![Value::Uint(1)]),
        array(vec![Value::from("s")]),
    ]);
    assert_eq!(decode(&encode(&v)), Ok(v));
}

#[test]
fn arrays_decode_elements_written_with_wider_constructors() {
    // uints that fit a byte, sent as full-width uint by another peer.
    let bytes = [0xe0, 10, 2, 0x70, 0, 0, 0, 1, 0, 0, 0, 2];
    let v = array(vec![Value::Uint(1), Value::Uint(2)]);
    assert_eq!(decode(&bytes), Ok(v.clone()));
    assert_eq!(encode(&v), [0xe0, 4, 2, 0x52, 1, 2], "re-encoded narrowly");
}

#[test]
fn arrays_of_8_bit_compound_elements_from_other_peers_decode() {
    // fe2o3-amqp writes arrays of lists and maps with list8 / map8 element
    // constructors: each element is then `size8 count8 items`.
    let lists = [0xe0, 6, 1, 0xc0, 3, 1, 0x52, 1];
    assert_eq!(
        decode(&lists),
        Ok(array(vec![Value::List(vec![Value::Uint(1)])]))
    );
    let maps = [0xe0, 4, 1, 0xc1, 1, 0];
    assert_eq!(decode(&maps), Ok(array(vec![Value::Map(vec![])])));
}

#[test]
fn arrays_of_nulls_cannot_be_built() {
    // Null elements would take no bytes, and the decoder bounds every count
    // by the bytes that hold the elements, so such an array could not be
    // read back.
    assert_eq!(
        Array::try_from(vec![Value::Null, Value::Null]),
        Err(MixedArray)
    );
    let null_described = described(Descriptor::Code(1), Value::Null);
    assert_eq!(Array::try_from(vec![null_described]), Err(MixedArray));
}

#[test]
fn array_decoding_rejects_malformed_layouts() {
    let kind = |bytes: &[u8]| decode(bytes).unwrap_err().kind;
    // Three ubytes declared, two present.
    assert_eq!(
        kind(&[0xe0, 4, 3, 0x50, 7, 9]),
        DecodeErrorKind::CountExceedsSize
    );
    // One ubyte declared, two present.
    assert_eq!(
        kind(&[0xe0, 4, 1, 0x50, 7, 9]),
        DecodeErrorKind::SizeMismatch
    );
    // Zero-width elements cannot claim a count the bytes cannot hold.
    assert_eq!(
        kind(&[0xe0, 2, 200, 0x40]),
        DecodeErrorKind::CountExceedsSize
    );
    assert_eq!(
        kind(&[0xe0, 3, 1, 0xff, 0]),
        DecodeErrorKind::UnknownConstructor(0xff)
    );
    assert_eq!(
        kind(&[0xe0, 2, 0, 0xff]),
        DecodeErrorKind::UnknownConstructor(0xff)
    );
    // The element constructor itself is missing.
    assert_eq!(kind(&[0xe0, 1, 0]), DecodeErrorKind::Truncated);
}

// ---------------------------------------------------------------------------
// Malformed compounds and values.
// ---------------------------------------------------------------------------

#[test]
fn compound_sizes_must_cover_their_count() {
    let kind = |bytes: &[u8]| decode(bytes).unwrap_err().kind;
    // size 0 leaves no room for the count itself.
    assert_eq!(kind(&[0xc0, 0]), DecodeErrorKind::Truncated);
    assert_eq!(kind(&[0xd0, 0, 0, 0, 2, 0, 0]), DecodeErrorKind::Truncated);
    // A size beyond the input.
    assert_eq!(kind(&[0xc0, 9, 1, 0x40]), DecodeErrorKind::Truncated);
    assert_eq!(
        kind(&[0xd1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
        DecodeErrorKind::Truncated
    );
    // A list32 claiming four billion elements in four bytes of body.
    assert_eq!(
        kind(&[0xd0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x40]),
        DecodeErrorKind::CountExceedsSize
    );
    // An element that runs past the list's declared size.
    assert_eq!(kind(&[0xc0, 2, 1, 0x52, 7]), DecodeErrorKind::Truncated);
}

#[test]
fn maps_must_hold_whole_pairs() {
    let kind = |bytes: &[u8]| decode(bytes).unwrap_err().kind;
    assert_eq!(
        kind(&[0xd1, 0, 0, 0, 7, 0, 0, 0, 3, 0x40, 0x40, 0x40]),
        DecodeErrorKind::OddMapCount
    );
    assert_eq!(
        kind(&[0xc1, 4, 2, 0x40, 0x40, 0x40]),
        DecodeErrorKind::SizeMismatch
    );
}

#[test]
fn wide_strings_and_symbols_are_checked_like_narrow_ones() {
    let kind = |bytes: &[u8]| decode(bytes).unwrap_err().kind;
    assert_eq!(
        kind(&[0xb1, 0, 0, 0, 2, 0xc3, 0x28]),
        DecodeErrorKind::InvalidUtf8
    );
    assert_eq!(
        kind(&[0xb3, 0, 0, 0, 2, 0xc3, 0xa9]),
        DecodeErrorKind::InvalidSymbol
    );
    assert_eq!(kind(&[0xb1, 0, 0, 0, 3, b'a']), DecodeErrorKind::Truncated);
}

#[test]
fn chars_beyond_unicode_are_rejected() {
    assert_eq!(
        decode(&[0x73, 0, 0x11, 0, 0]).unwrap_err().kind,
        DecodeErrorKind::InvalidChar(0x11_0000)
    );
    assert_eq!(
        decode(&[0x73, 0, 0x10, 0xff, 0xff]),
        Ok(Value::Char('\u{10ffff}'))
    );
}

#[test]
fn nesting_through_lists_and_arrays_is_bounded_too() {
    let mut lists = vec![0x45];
    for _ in 0..=MAX_DEPTH {
        let len = lists.len() as u32 + 4;
        let mut outer = vec![0xd0];
        outer.extend(len.to_be_bytes());
        outer.extend(1u32.to_be_bytes());
        outer.extend(lists);
        lists = outer;
    }
    assert_eq!(decode(&lists).unwrap_err().kind, DecodeErrorKind::TooDeep);

    let mut arrays = vec![0xf0, 0, 0, 0, 5, 0, 0, 0, 0, 0x40];
    for _ in 0..=MAX_DEPTH {
        // An array of one array: the inner one loses its constructor.
        let inner = &arrays[1..];
        let mut outer = vec![0xf0];
        outer.extend((inner.len() as u32 + 5).to_be_bytes());
        outer.extend(1u32.to_be_bytes());
        outer.push(0xf0);
        outer.extend(inner);
        arrays = outer;
    }
    assert_eq!(decode(&arrays).unwrap_err().kind, DecodeErrorKind::TooDeep);
}

#[test]
fn float_bits_survive_a_round_trip_including_nan_payloads() {
    let nan = f32::from_bits(0x7fc0_0001);
    let bytes = encode(&Value::Float(nan));
    assert_eq!(bytes, [0x72, 0x7f, 0xc0, 0, 1]);
    let Ok(Value::Float(back)) = decode(&bytes) else {
        panic!("not a float")
    };
    assert_eq!(back.to_bits(), nan.to_bits());
    let neg_zero = encode(&Value::Double(-0.0));
    assert_eq!(neg_zero, [0x82, 0x80, 0, 0, 0, 0, 0, 0, 0]);
}

// ---------------------------------------------------------------------------
// Typed decoders accept exactly their type's constructors.
// ---------------------------------------------------------------------------

fn typed<T: Decode>(bytes: &[u8]) -> Result<T, DecodeError> {
    from_bytes(Bytes::copy_from_slice(bytes))
}

fn unexpected(expected: &'static str, found: u8) -> DecodeError {
    DecodeErrorKind::UnexpectedConstructor { expected, found }.into()
}

#[test]
fn typed_uint_accepts_all_three_uint_forms_only() {
    assert_eq!(typed::<u32>(&[0x43]), Ok(0));
    assert_eq!(typed::<u32>(&[0x52, 9]), Ok(9));
    assert_eq!(typed::<u32>(&[0x70, 0, 0, 0, 9]), Ok(9));
    assert_eq!(typed::<u32>(&[0x53, 9]), Err(unexpected("uint", 0x53)));
    assert_eq!(typed::<u32>(&[0x50, 9]), Err(unexpected("uint", 0x50)));
}

#[test]
fn typed_ulong_accepts_all_three_ulong_forms_only() {
    assert_eq!(typed::<u64>(&[0x44]), Ok(0));
    assert_eq!(typed::<u64>(&[0x53, 9]), Ok(9));
    assert_eq!(typed::<u64>(&[0x80, 0, 0, 0, 0, 0, 0, 0, 9]), Ok(9));
    assert_eq!(typed::<u64>(&[0x52, 9]), Err(unexpected("ulong", 0x52)));
}

#[test]
fn typed_small_integers_and_booleans() {
    assert_eq!(typed::<u8>(&[0x50, 9]), Ok(9));
    assert_eq!(typed::<u8>(&[0x52, 9]), Err(unexpected("ubyte", 0x52)));
    assert_eq!(typed::<u16>(&[0x60, 0, 9]), Ok(9));
    assert_eq!(typed::<u16>(&[0x50, 9]), Err(unexpected("ushort", 0x50)));
    assert_eq!(typed::<bool>(&[0x41]), Ok(true));
    assert_eq!(typed::<bool>(&[0x42]), Ok(false));
    assert_eq!(typed::<bool>(&[0x56, 1]), Ok(true));
    assert_eq!(
        typed::<bool>(&[0x56, 2]).unwrap_err().kind,
        DecodeErrorKind::InvalidValue
    );
    assert_eq!(typed::<bool>(&[0x43]), Err(unexpected("boolean", 0x43)));
}

#[test]
fn typed_strings_symbols_and_binaries_do_not_mix() {
    assert_eq!(typed::<String>(&[0xa1, 1, b'a']), Ok("a".to_owned()));
    assert_eq!(
        typed::<String>(&[0xb1, 0, 0, 0, 1, b'a']),
        Ok("a".to_owned())
    );
    assert_eq!(
        typed::<String>(&[0xa3, 1, b'a']),
        Err(unexpected("string", 0xa3))
    );
    assert_eq!(
        typed::<Symbol>(&[0xb3, 0, 0, 0, 1, b'a']),
        Ok(Symbol::from_static("a"))
    );
    assert_eq!(
        typed::<Symbol>(&[0xa1, 1, b'a']),
        Err(unexpected("symbol", 0xa1))
    );
    assert_eq!(
        typed::<Bytes>(&[0xb0, 0, 0, 0, 1, 7]),
        Ok(Bytes::from_static(&[7]))
    );
    assert_eq!(
        typed::<Bytes>(&[0xa1, 1, b'a']),
        Err(unexpected("binary", 0xa1))
    );
}

#[test]
fn typed_option_reads_null_as_none() {
    assert_eq!(typed::<Option<u32>>(&[0x40]), Ok(None));
    assert_eq!(typed::<Option<u32>>(&[0x52, 1]), Ok(Some(1)));
    assert_eq!(
        typed::<Option<u32>>(&[]).unwrap_err().kind,
        DecodeErrorKind::Truncated
    );
}

#[test]
fn multiple_symbols_decode_from_null_one_symbol_or_an_array() {
    let syms = |names: &[&'static str]| {
        names
            .iter()
            .map(|n| Symbol::from_static(n))
            .collect::<Vec<_>>()
    };
    assert_eq!(typed::<Vec<Symbol>>(&[0x40]), Ok(vec![]));
    assert_eq!(typed::<Vec<Symbol>>(&[0xa3, 1, b'a']), Ok(syms(&["a"])));
    assert_eq!(
        typed::<Vec<Symbol>>(&[0xe0, 6, 2, 0xa3, 1, b'a', 1, b'b']),
        Ok(syms(&["a", "b"]))
    );
    assert_eq!(
        typed::<Vec<Symbol>>(&[0xf0, 0, 0, 0, 10, 0, 0, 0, 1, 0xb3, 0, 0, 0, 1, b'a']),
        Ok(syms(&["a"]))
    );
    // An array of strings is not an array of symbols.
    assert_eq!(
        typed::<Vec<Symbol>>(&[0xe0, 4, 1, 0xa1, 1, b'a'])
            .unwrap_err()
            .kind,
        DecodeErrorKind::InvalidValue
    );
    assert_eq!(
        typed::<Vec<Symbol>>(&[0x45]),
        Err(unexpected("symbol or symbol array", 0x45))
    );
}

#[test]
fn multiple_symbols_encode_as_null_when_empty_else_as_an_array() {
    assert_eq!(to_bytes(&Vec::<Symbol>::new()).to_vec(), [0x40]);
    let one = vec![Symbol::from_static("a")];
    assert_eq!(to_bytes(&one).to_vec(), [0xe0, 4, 1, 0xa3, 1, b'a']);
    let long = vec![
        Symbol::from_static("a"),
        Symbol::new("b".repeat(256)).unwrap(),
    ];
    let bytes = to_bytes(&long);
    assert_eq!(bytes[..10], [0xf0, 0, 0, 1, 14, 0, 0, 0, 2, 0xb3]);
    assert_eq!(typed::<Vec<Symbol>>(&bytes), Ok(long));
}

// ---------------------------------------------------------------------------
// The fuzz corpus stays valid: every seed decodes, and crash seeds (former
// crashes) no longer break the round trip.
// ---------------------------------------------------------------------------

#[test]
// Reads committed test fixtures, not broker I/O: the seam does not apply.
#[allow(clippy::disallowed_methods)]
fn fuzz_seed_corpus_decodes_and_round_trips() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode_value");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("seed-") {
            continue;
        }
        seeds += 1;
        let input = std::fs::read(&path).unwrap();
        let value = match decode(&input) {
            Ok(value) => value,
            // A former crash need not be valid input, only handled.
            Err(_) if name.starts_with("seed-crash-") => continue,
            Err(e) => panic!("{name} does not decode: {e}"),
        };
        let encoded = encode(&value);
        let again =
            decode(&encoded).unwrap_or_else(|e| panic!("{name} re-encoded does not decode: {e}"));
        assert_eq!(encode(&again), encoded, "{name}");
    }
    assert!(seeds >= 10, "only {seeds} seeds in {}", dir.display());
}
