//! How replay files write values TOML has no good type for: durations as
//! text with a unit (`"1500ms"`, `"50us"`), exact, so that a schedule read
//! back injects at the same nanosecond; and 64-bit picks as hex strings
//! (TOML integers stop at `i64::MAX`).
//!
//! Each submodule is a serde `with` module.

use std::time::Duration;

/// The units a duration is written in, largest first.
const UNITS: [(&str, u128); 4] = [
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// `d` in the largest unit that keeps it exact (`"2s"`, `"350ms"`).
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    let (unit, per) = UNITS
        .into_iter()
        .find(|(_, per)| nanos % per == 0)
        .unwrap_or(("ns", 1));
    format!("{}{unit}", nanos / per)
}

/// Parses what [`format_duration`] writes: a whole number and one of `s`,
/// `ms`, `us`, `ns`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a whole number and a unit (s, ms, us, ns)"))?;
    let per = UNITS
        .into_iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, per)| per)
        .ok_or_else(|| format!("{text:?}: unknown unit {unit:?} (s, ms, us, ns)"))?;
    let nanos = u128::from(number) * per;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| format!("{text:?}: too long"))?;
    // Below one second's nanoseconds, so it fits.
    let subsec = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, subsec))
}

/// A `Duration` as text.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// serde's `serialize_with`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    /// serde's `deserialize_with`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(D::Error::custom)
    }
}

/// An optional `(min, max)` pair of durations, as a two-element array of
/// texts.
pub mod duration_range {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

    /// serde's `serialize_with`.
    pub fn serialize<S: Serializer>(
        range: &Option<(Duration, Duration)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        range
            .map(|(min, max)| [super::format_duration(min), super::format_duration(max)])
            .serialize(s)
    }

    /// serde's `deserialize_with`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<(Duration, Duration)>, D::Error> {
        let texts = Option::<[String; 2]>::deserialize(d)?;
        let parse = |[min, max]: [String; 2]| -> Result<(Duration, Duration), String> {
            Ok((super::parse_duration(&min)?, super::parse_duration(&max)?))
        };
        texts.map(parse).transpose().map_err(D::Error::custom)
    }
}

/// A `u64` as `0x` and 16 hex digits.
pub mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// serde's `serialize_with`.
    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's signature
    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{value:#018x}"))
    }

    /// serde's `deserialize_with`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        let digits = text
            .strip_prefix("0x")
            .ok_or_else(|| D::Error::custom(format!("{text:?}: expected 0x and hex digits")))?;
        u64::from_str_radix(digits, 16).map_err(|e| D::Error::custom(format!("{text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_exactly_in_their_largest_unit() {
        for (d, text) in [
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(1_500), "1500ms"),
            (Duration::from_micros(50), "50us"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("ms").is_err());
    }
}
