use bytes::Bytes;
use proptest::prelude::*;

use super::eval::{self, Truth};
use super::like::LikePattern;
use super::{DEPTH_MAX, IN_LIST_MAX, Selector, TEXT_BYTES_MAX};
use crate::amqp::codec::{Symbol, Value};
use crate::amqp::types::{Header, Message, MessageId, Properties, Section, Timestamp};
use crate::selector::fields::MessageFields;

/// A message with these application properties, read back from its bytes.
fn with_properties(properties: &[(&str, Value)]) -> MessageFields {
    let application_properties = properties
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect();
    read(vec![
        Section::ApplicationProperties(application_properties),
        Section::Data(Bytes::from_static(b"body")),
    ])
}

fn read(sections: Vec<Section>) -> MessageFields {
    MessageFields::read(&Message { sections }.encode()).unwrap()
}

/// The sample most tests select from.
fn sample() -> MessageFields {
    with_properties(&[
        ("color", Value::from("red")),
        ("Color", Value::from("blue")),
        ("size", Value::Int(5)),
        ("weight", Value::Double(2.5)),
        ("big", Value::Ulong(u64::MAX)),
        ("flag", Value::Boolean(true)),
        ("off", Value::Boolean(false)),
        ("symbol", Value::Symbol(Symbol::from_static("sym"))),
        ("blob", Value::Binary(Bytes::from_static(b"x"))),
        ("quote", Value::from("it's")),
    ])
}

fn truth(selector: &str, message: &MessageFields) -> Truth {
    let parsed = Selector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
    eval::truth(parsed.condition.as_ref().expect("not blank"), message)
}

/// Asserts each selector's truth against `sample()`.
fn assert_truths(cases: &[(&str, Truth)]) {
    let message = sample();
    for (selector, expected) in cases {
        assert_eq!(truth(selector, &message), *expected, "{selector}");
    }
}

fn error(selector: &str) -> String {
    match Selector::parse(selector) {
        Ok(_) => panic!("{selector:?} parsed"),
        Err(e) => e.to_string(),
    }
}

use Truth::{False as F, True as T, Unknown as U};

#[test]
fn string_literals() {
    assert_truths(&[
        ("color = 'red'", T),
        ("color = 'RED'", F),
        ("color <> 'red'", F),
        ("quote = 'it''s'", T),
        ("'' = ''", T),
        ("'a''' = 'a'''", T),
        ("symbol = 'sym'", T),
    ]);
}

#[test]
fn exact_numeric_literals() {
    assert_truths(&[
        ("size = 5", T),
        ("size = +5", T),
        ("size = 5L", T),
        ("size = 5l", T),
        ("size = 0x5", T),
        ("size = 0X05L", T),
        ("size = 05", T),
        ("8 = 010", T),
        ("0 = 0", T),
        ("-9223372036854775808 < 0", T),
        ("-0x8000000000000000 < 0", T),
        ("9223372036854775807 > 0", T),
        ("0x7fffffffffffffff = 9223372036854775807", T),
    ]);
}

#[test]
fn approximate_numeric_literals() {
    assert_truths(&[
        ("weight = 2.5", T),
        ("weight = 25E-1", T),
        ("weight = 0.25e1", T),
        ("weight = .25E+1", T),
        ("weight = 2.5D", T),
        ("weight = 2.5f", T),
        ("5. = 5", T),
        ("7E3 = 7000", T),
        ("2d = 2", T),
        ("1e400 > 1e300", T),
    ]);
}

#[test]
fn boolean_literals_and_keywords_ignore_case() {
    assert_truths(&[
        ("TRUE", T),
        ("false", F),
        ("flag = True", T),
        ("flag", T),
        ("off", F),
        ("NOT off", T),
        ("size between 1 and 9 AnD color LiKe 'r%' oR FALSE", T),
        ("color iS nOt NuLl", T),
        ("color In ('red')", T),
    ]);
}

#[test]
fn identifiers_are_case_sensitive() {
    assert_truths(&[
        ("color = 'red'", T),
        ("Color = 'blue'", T),
        ("COLOR = 'red'", U),
        ("$x IS NULL AND _y IS NULL AND été IS NULL", T),
    ]);
}

#[test]
fn comparisons_promote_integers_to_floats() {
    assert_truths(&[
        ("size = 5.0", T),
        ("size < 5.5", T),
        ("weight > 2", T),
        ("weight >= 2.5 AND weight <= 2.5", T),
        ("size <> 4", T),
        ("size <= 4", F),
        ("big > 9223372036854775807", T),
        ("big = 18446744073709551615.0", T),
    ]);
}

#[test]
fn strings_and_booleans_only_compare_for_equality_with_their_own_type() {
    assert_truths(&[
        ("color = 'red'", T),
        ("flag = TRUE", T),
        ("flag <> FALSE", T),
        // Values of different types: false (JMS 2.0 §3.8.1.2), so NOT is true.
        ("color = 5", F),
        ("NOT (color = 5)", T),
        ("color <> 5", F),
        ("flag = 1", F),
        ("size = '5'", F),
        ("color > size", F),
        // Unordered types compared by order, through properties.
        ("color > symbol", F),
        ("flag < off", F),
        // Types JMS does not know read as NULL.
        ("blob = 'x'", U),
        ("blob IS NULL", T),
    ]);
}

#[test]
fn arithmetic_follows_java_long_and_double() {
    assert_truths(&[
        ("size + 1 = 6", T),
        ("size - 10 = -5", T),
        ("size * 2 = 10", T),
        ("size / 2 = 2", T),
        ("size / 2.0 = 2.5", T),
        ("-size = -5", T),
        ("- -size = 5", T),
        ("1 + 2 * 3 = 7", T),
        ("(1 + 2) * 3 = 9", T),
        ("10 - 2 - 3 = 5", T),
        ("12 / 2 / 3 = 2", T),
        ("weight * 2 = 5", T),
        ("9223372036854775807 + 1 < 0", T),
        ("-9223372036854775808 / -1 < 0", T),
        ("1.0 / 0 > 1e308", T),
        // Unknowns: division by zero, NULL operands, strings.
        ("size / 0 = 0", U),
        ("missing + 1 = 1", U),
        ("color + 1 = 1", U),
        ("-color = 1", U),
    ]);
}

#[test]
fn three_valued_logic() {
    let value = |t: Truth| match t {
        T => "TRUE",
        F => "FALSE",
        U => "missing",
    };
    let and = |a, b| match (a, b) {
        (F, _) | (_, F) => F,
        (T, T) => T,
        _ => U,
    };
    let or = |a, b| match (a, b) {
        (T, _) | (_, T) => T,
        (F, F) => F,
        _ => U,
    };
    let not = |a| match a {
        T => F,
        F => T,
        U => U,
    };
    let message = sample();
    for a in [T, F, U] {
        let a_text = value(a);
        assert_eq!(truth(&format!("NOT {a_text}"), &message), not(a));
        for b in [T, F, U] {
            let b_text = value(b);
            let cases = [
                (format!("{a_text} AND {b_text}"), and(a, b)),
                (format!("{a_text} OR {b_text}"), or(a, b)),
                (format!("{a_text} AND {b_text} AND TRUE"), and(a, b)),
                (format!("FALSE OR {a_text} OR {b_text}"), or(a, b)),
            ];
            for (selector, expected) in cases {
                assert_eq!(truth(&selector, &message), expected, "{selector}");
            }
        }
    }
}

#[test]
fn an_unknown_or_false_condition_selects_nothing() {
    let message = sample();
    let selects = |s: &str| Selector::parse(s).unwrap().matches(&message);
    assert!(selects("color = 'red'"));
    assert!(!selects("color = 'blue'"));
    assert!(!selects("missing = 'blue'"));
    assert!(!selects("NOT missing = 'blue'"));
    assert!(!selects("size"), "a number is no condition");
}

#[test]
fn a_blank_selector_selects_everything() {
    for blank in ["", "   ", "\t\n"] {
        assert!(Selector::parse(blank).unwrap().matches(&sample()));
    }
}

#[test]
fn precedence_of_not_and_or() {
    assert_truths(&[
        ("TRUE OR TRUE AND FALSE", T),
        ("(TRUE OR TRUE) AND FALSE", F),
        ("NOT FALSE AND FALSE", F),
        ("NOT (FALSE AND FALSE)", T),
        ("NOT NOT TRUE", T),
        ("(size = 5) = TRUE", T),
        ("FALSE = (size = 6)", T),
    ]);
}

#[test]
fn between() {
    assert_truths(&[
        ("size BETWEEN 1 AND 5", T),
        ("size BETWEEN 5 AND 9", T),
        ("size BETWEEN 6 AND 9", F),
        ("size NOT BETWEEN 6 AND 9", T),
        ("size NOT BETWEEN 1 AND 9", F),
        ("weight BETWEEN 2 AND 3", T),
        ("size BETWEEN 1 + 1 AND 2 * 3", T),
        ("size BETWEEN 9 AND 1", F),
        ("missing BETWEEN 1 AND 9", U),
        ("missing NOT BETWEEN 1 AND 9", U),
        ("size BETWEEN missing AND 9", U),
        ("size BETWEEN missing AND 4", F),
        ("size NOT BETWEEN missing AND 4", T),
        // A string is neither between nor outside two numbers.
        ("color BETWEEN 1 AND 9", F),
        ("color NOT BETWEEN 1 AND 9", F),
    ]);
}

#[test]
fn in_lists() {
    assert_truths(&[
        ("color IN ('red')", T),
        ("color IN ('green', 'red', 'blue')", T),
        ("color IN ('green', 'blue')", F),
        ("color NOT IN ('green', 'blue')", T),
        ("color NOT IN ('red')", F),
        ("quote IN ('it''s')", T),
        ("symbol IN ('sym')", T),
        ("missing IN ('red')", U),
        ("missing NOT IN ('red')", U),
        ("size IN ('5')", U),
        ("size NOT IN ('5')", U),
    ]);
}

#[test]
fn like() {
    assert_truths(&[
        ("color LIKE 'red'", T),
        ("color LIKE 're_'", T),
        ("color LIKE 'r%'", T),
        ("color LIKE '%d'", T),
        ("color LIKE '%e%'", T),
        ("color LIKE '%'", T),
        ("color LIKE '___'", T),
        ("color LIKE '____'", F),
        ("color LIKE 'r%d%'", T),
        ("color LIKE 'R%'", F),
        ("color NOT LIKE 'b%'", T),
        ("color NOT LIKE 'r%'", F),
        ("quote LIKE 'it''_'", T),
        ("missing LIKE '%'", U),
        ("missing NOT LIKE '%'", U),
        ("size LIKE '%'", U),
        ("size NOT LIKE '%'", U),
    ]);
}

#[test]
fn like_escapes() {
    let message = with_properties(&[
        ("code", Value::from("50%_off")),
        ("path", Value::from(r"a\b")),
    ]);
    let cases = [
        (r"code LIKE '50\%\_off' ESCAPE '\'", T),
        (r"code LIKE '5_\%%' ESCAPE '\'", T),
        (r"code LIKE '%\_%' ESCAPE '\'", T),
        (r"code LIKE '50\_%' ESCAPE '\'", F),
        ("code LIKE '50!%!_off' ESCAPE '!'", T),
        // An escaped ordinary character is itself.
        ("code LIKE '!5!0%' ESCAPE '!'", T),
        (r"path LIKE 'a\\b' ESCAPE '\'", T),
        (r"path LIKE 'a\b'", T),
        // The escape character may be a wildcard, which it then escapes.
        ("code LIKE '50%%_off' ESCAPE '%'", T),
        ("code LIKE '50%%%_off' ESCAPE '%'", T),
        ("code LIKE '50%%__off' ESCAPE '%'", F),
    ];
    for (selector, expected) in cases {
        assert_eq!(truth(selector, &message), expected, "{selector}");
    }
}

#[test]
fn is_null() {
    assert_truths(&[
        ("missing IS NULL", T),
        ("missing IS NOT NULL", F),
        ("color IS NULL", F),
        ("color IS NOT NULL", T),
        ("size / 0 IS NULL", T),
        ("(missing = 1) IS NULL", T),
        ("JMSType IS NULL", T),
    ]);
}

#[test]
fn a_long_or_chain_is_flat() {
    let chain = (100..350)
        .map(|i| format!("size = {i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    assert!(chain.len() < TEXT_BYTES_MAX);
    assert_eq!(truth(&chain, &sample()), F);
    assert_eq!(truth(&format!("{chain} OR size = 5"), &sample()), T);
}

fn jms_message() -> MessageFields {
    read(vec![
        Section::Header(Header {
            durable: true,
            priority: 7,
            delivery_count: 2,
            ..Header::default()
        }),
        Section::MessageAnnotations(vec![(
            Value::Symbol(Symbol::from_static("x-opt-jms-type")),
            Value::from("ignored: the subject wins"),
        )]),
        Section::Properties(Box::new(Properties {
            message_id: Some(MessageId::String("ID:abc".into())),
            user_id: Some(Bytes::from_static(b"alice")),
            subject: Some("order".into()),
            correlation_id: Some(MessageId::String("corr".into())),
            creation_time: Some(Timestamp(1_700_000_000_000)),
            absolute_expiry_time: Some(Timestamp(1_700_000_060_000)),
            group_id: Some("g1".into()),
            group_sequence: Some(3),
            ..Properties::default()
        })),
        Section::ApplicationProperties(vec![("JMSPriority".into(), Value::Int(0))]),
    ])
}

#[test]
fn jms_headers_map_onto_amqp_fields() {
    let message = jms_message();
    for (selector, expected) in [
        ("JMSDeliveryMode = 'PERSISTENT'", T),
        ("JMSPriority = 7", T),
        ("JMSRedelivered", T),
        ("JMSXDeliveryCount = 3", T),
        ("JMSMessageID = 'ID:abc'", T),
        ("JMSCorrelationID = 'corr'", T),
        ("JMSTimestamp = 1700000000000", T),
        ("JMSExpiration = 1700000060000", T),
        ("JMSType = 'order'", T),
        ("JMSXUserID = 'alice'", T),
        ("JMSXGroupID = 'g1'", T),
        ("JMSXGroupSeq = 3", T),
        ("JMSDestination IS NULL", T),
        ("jmspriority IS NULL", T),
    ] {
        assert_eq!(truth(selector, &message), expected, "{selector}");
    }
}

#[test]
fn jms_headers_of_a_bare_message() {
    let message = read(vec![Section::Data(Bytes::from_static(b"x"))]);
    for (selector, expected) in [
        ("JMSDeliveryMode = 'NON_PERSISTENT'", T),
        ("JMSPriority = 4", T),
        ("JMSRedelivered", F),
        ("JMSXDeliveryCount = 1", T),
        ("JMSMessageID IS NULL", T),
        ("JMSCorrelationID IS NULL", T),
        ("JMSTimestamp = 0", T),
        ("JMSExpiration = 0", T),
        ("JMSType IS NULL", T),
        ("JMSXUserID IS NULL", T),
        ("JMSXGroupID IS NULL", T),
        ("JMSXGroupSeq IS NULL", T),
    ] {
        assert_eq!(truth(selector, &message), expected, "{selector}");
    }
}

#[test]
fn jms_type_falls_back_to_the_legacy_annotation() {
    let message = read(vec![Section::MessageAnnotations(vec![(
        Value::Symbol(Symbol::from_static("x-opt-jms-type")),
        Value::from("legacy"),
    )])]);
    assert_eq!(truth("JMSType = 'legacy'", &message), T);
}

#[test]
fn message_and_correlation_ids_read_as_qpid_jms_writes_them() {
    let uuid = [
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ];
    let cases = [
        (MessageId::String("ID:abc".into()), "ID:abc", "ID:abc"),
        (
            MessageId::String("abc".into()),
            "ID:AMQP_NO_PREFIX:abc",
            "abc",
        ),
        (
            MessageId::String("ID:AMQP_ULONG:7".into()),
            "ID:AMQP_STRING:ID:AMQP_ULONG:7",
            "ID:AMQP_STRING:ID:AMQP_ULONG:7",
        ),
        (
            MessageId::String("AMQP_ULONG:7".into()),
            "ID:AMQP_NO_PREFIX:AMQP_ULONG:7",
            "AMQP_ULONG:7",
        ),
        (MessageId::Ulong(42), "ID:AMQP_ULONG:42", "ID:AMQP_ULONG:42"),
        (
            MessageId::Uuid(uuid),
            "ID:AMQP_UUID:12345678-9abc-def0-0123-456789abcdef",
            "ID:AMQP_UUID:12345678-9abc-def0-0123-456789abcdef",
        ),
        (
            MessageId::Binary(Bytes::from_static(&[0x00, 0xab, 0x7f])),
            "ID:AMQP_BINARY:00AB7F",
            "ID:AMQP_BINARY:00AB7F",
        ),
    ];
    for (id, message_id, correlation_id) in cases {
        let message = read(vec![Section::Properties(Box::new(Properties {
            message_id: Some(id.clone()),
            correlation_id: Some(id.clone()),
            ..Properties::default()
        }))]);
        let selector =
            format!("JMSMessageID = '{message_id}' AND JMSCorrelationID = '{correlation_id}'");
        assert_eq!(truth(&selector, &message), T, "{id:?}");
    }
}

#[test]
fn a_user_id_that_is_not_utf8_is_null() {
    let message = read(vec![Section::Properties(Box::new(Properties {
        user_id: Some(Bytes::from_static(&[0xff, 0xfe])),
        ..Properties::default()
    }))]);
    assert_eq!(truth("JMSXUserID IS NULL", &message), T);
}

#[test]
fn errors_name_the_position_and_the_fault() {
    let cases = [
        "a =",
        "a = 1 AND",
        "a = 1 AND )",
        "(a = 1",
        "a = (1 + 2",
        "a = 'abc",
        "a = \"x\"",
        "a != 1",
        "a # 1",
        "a = 0x",
        "a = 09",
        "a = 1e",
        "a = 1E+",
        "a = 18446744073709551616",
        "a = 9223372036854775808",
        "a = -9223372036854775809",
        "a NOT 5",
        "a IS 5",
        "a IS NOT 5",
        "a BETWEEN 1 5",
        "a BETWEEN 1 AND",
        "a IN 'x'",
        "a IN ()",
        "a IN ('x' 'y')",
        "a IN ('x',)",
        "a IN (1)",
        "a LIKE 5",
        "a LIKE 'x' ESCAPE 'ab'",
        "a LIKE 'x' ESCAPE ''",
        "a LIKE 'x' ESCAPE 5",
        "a LIKE 'ab!' ESCAPE '!'",
        "a = NULL",
        "1",
        "'abc'",
        "a + 1",
        "a = 1 b",
        "a = 1 = TRUE",
        ")",
        "TRUE + 1",
        "a AND 5",
        "5 OR a",
        "NOT 'x'",
        "'a' < 'b'",
        "a >= TRUE",
        "JMSPriority LIKE '5'",
        "5 IN ('a')",
        "JMSType BETWEEN 1 AND 2",
        "a BETWEEN 'a' AND 'z'",
        "-'x' = 1",
        "+TRUE",
        "a = 1 OR",
        "été = 1 AND ü =",
    ];
    let mut lines: Vec<String> = cases
        .iter()
        .map(|selector| format!("{selector:<28} => {}", error(selector)))
        .collect();
    let generated = [
        (
            "(((…(1 = 1)…))) 65 deep",
            nested("(", "1 = 1", ")", DEPTH_MAX + 1),
        ),
        (
            "NOT NOT … a, 65 NOTs",
            nested("NOT ", "a", "", DEPTH_MAX + 1),
        ),
        (
            "- - … 1 = 1, 65 signs",
            nested("- ", "1 = 1", "", DEPTH_MAX + 1),
        ),
        (
            "1 + 1 + … = 1, 65 terms",
            format!("{} = 1", vec!["1"; DEPTH_MAX + 1].join(" + ")),
        ),
        ("a IN (257 strings)", in_list(IN_LIST_MAX + 1)),
        (
            "4097 bytes",
            format!("a = '{}'", "x".repeat(TEXT_BYTES_MAX - 5)),
        ),
    ];
    lines.extend(
        generated
            .iter()
            .map(|(name, selector)| format!("{name:<28} => {}", error(selector))),
    );
    insta::assert_snapshot!(lines.join("\n"));
}

fn nested(open: &str, inner: &str, close: &str, depth: usize) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

fn in_list(items: usize) -> String {
    let list: Vec<String> = (0..items).map(|i| format!("'{i}'")).collect();
    format!("a IN ({})", list.join(","))
}

#[test]
fn limits_are_inclusive() {
    let message = sample();
    let ok = |selector: &str| {
        Selector::parse(selector).unwrap_or_else(|e| panic!("{e}"));
    };
    ok(&nested("(", "TRUE", ")", DEPTH_MAX - 1));
    ok(&nested("NOT ", "flag", "", DEPTH_MAX - 1));
    ok(&in_list(IN_LIST_MAX));
    let longest = format!("color = '{}'", "x".repeat(TEXT_BYTES_MAX - 10));
    assert_eq!(longest.len(), TEXT_BYTES_MAX);
    assert_eq!(truth(&longest, &message), F);
}

#[test]
fn positions_count_characters_not_bytes() {
    let e = Selector::parse("été = 1 AND ü =").unwrap_err();
    assert_eq!(e.position, 15);
    assert_eq!(e.message, "expected an expression after '='");
}

/// LIKE as SQL defines it, by dynamic programming over characters: the
/// reference the fast matcher must agree with.
fn like_reference(pattern: &str, escape: Option<char>, text: &str) -> bool {
    enum P {
        Char(char),
        One,
        Many,
    }
    let mut atoms = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        atoms.push(match c {
            c if Some(c) == escape => P::Char(chars.next().expect("valid pattern")),
            '%' => P::Many,
            '_' => P::One,
            c => P::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // matched[j]: the atoms so far match text[..j].
    let mut matched = vec![false; text.len() + 1];
    matched[0] = true;
    for atom in &atoms {
        let mut next = vec![false; text.len() + 1];
        for j in 0..=text.len() {
            next[j] = match atom {
                P::Many => matched[j] || (j > 0 && next[j - 1]),
                P::One => j > 0 && matched[j - 1],
                P::Char(c) => j > 0 && matched[j - 1] && text[j - 1] == *c,
            };
        }
        matched = next;
    }
    matched[text.len()]
}

fn like_matches(pattern: &str, escape: Option<char>, text: &str) -> bool {
    LikePattern::compile(pattern, escape).unwrap().matches(text)
}

/// Every string over `alphabet` of at most `len_max` characters.
fn strings(alphabet: &[char], len_max: usize) -> Vec<String> {
    let mut all = vec![String::new()];
    let mut last = vec![String::new()];
    for _ in 0..len_max {
        last = last
            .iter()
            .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
            .collect();
        all.extend(last.iter().cloned());
    }
    all
}

#[test]
fn like_agrees_with_the_reference_on_every_small_case() {
    let texts = strings(&['a', 'b'], 6);
    for pattern in strings(&['a', 'b', '%', '_'], 5) {
        let compiled = LikePattern::compile(&pattern, None).unwrap();
        for text in &texts {
            assert_eq!(
                compiled.matches(text),
                like_reference(&pattern, None, text),
                "{text:?} LIKE {pattern:?}"
            );
        }
    }
}

#[test]
fn like_handles_segments_longer_than_a_word() {
    let atom = |i: usize| match (i % 7, i % 11) {
        (3, _) => '_',
        (_, 5) => 'é',
        _ => 'a',
    };
    let segment: String = (0..150).map(atom).collect();
    let pattern = format!("%{segment}b%");
    let filled = segment.replace('_', "x");
    let hit = format!("bbbbb{filled}bé");
    let miss = format!("bbbbb{}b", &filled[..filled.len() - 1]);
    for text in [&hit, &miss] {
        assert_eq!(
            like_matches(&pattern, None, text),
            like_reference(&pattern, None, text),
            "{text}"
        );
    }
    assert!(like_matches(&pattern, None, &hit));
    assert!(!like_matches(&pattern, None, &miss));
}

#[test]
fn like_survives_nasty_patterns_on_long_text() {
    let text = "a".repeat(10_000);
    let with_b = format!("{text}b");
    let cases = [
        ("%a%a%a%a%a%a%a%a%b", &text, false),
        ("%a%a%a%a%a%a%a%a%b", &with_b, true),
        ("%aaaaaaaaab%", &text, false),
        ("%a_a_a_a_a_a_a_a_b%", &text, false),
        ("%a_a_a_a_a_a_a_a_b%", &with_b, true),
        ("%_%_%_%_%_%_%_%_%_%", &text, true),
        ("_%_%_%_%_%_%_%_%_", &text, true),
    ];
    for (pattern, text, expected) in cases {
        assert_eq!(like_matches(pattern, None, text), expected, "{pattern}");
    }
}

fn pattern_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!['a', 'b', 'é', '%', '_', '!']),
        0..12,
    )
    .prop_map(|chars| chars.into_iter().collect::<String>())
    // A trailing escape character is refused at compile time.
    .prop_filter("valid pattern", |p| {
        LikePattern::compile(p, Some('!')).is_ok()
    })
}

proptest! {
    #[test]
    fn like_agrees_with_the_reference(
        pattern in pattern_strategy(),
        text in "[abé!%_]{0,16}",
    ) {
        prop_assert_eq!(
            like_matches(&pattern, Some('!'), &text),
            like_reference(&pattern, Some('!'), &text),
            "{:?} LIKE {:?} ESCAPE '!'", text, pattern
        );
    }

}
