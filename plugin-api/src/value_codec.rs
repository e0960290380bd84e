//! The compact encoding a provider's metadata crosses the plugin boundary
//! in ([`PluginModule::validate_lent`]). Host plumbing: plugin authors
//! never touch it.
//!
//! JSON text made each accepted validation serialise the metadata, then
//! parse it back on the other side: about half of what a call through the
//! boundary cost over a provider compiled in. This encoding writes a value
//! as it is held (no escaping, no number formatting) and reads it back with
//! one length check per item. Every number keeps its exact value: an
//! integer is sent as the integer, a float as its bits.
//!
//! A value is a tag byte, then its contents; lengths and counts are `u32`,
//! little-endian:
//!
//! | tag | value | contents |
//! |---|---|---|
//! | 0, 1, 2 | `null`, `false`, `true` | none |
//! | 3 | an integer ≥ 0 | `u64`, little-endian |
//! | 4 | an integer < 0 | `i64`, little-endian |
//! | 5 | a float | `f64` bits, little-endian (finite) |
//! | 6 | a string | length, UTF-8 bytes |
//! | 7 | an array | count, that many values |
//! | 8 | an object | count, that many (key: length, UTF-8 bytes; value) |
//! | 9 | any other number | length, its JSON text (`serde_json`'s `arbitrary_precision`) |
//!
//! [`decode`] reads what any peer sends, so it trusts nothing: every length
//! is checked against what is left, text must be UTF-8, floats finite,
//! nesting at most [`MAX_DEPTH`] deep (as `serde_json`'s parser), and
//! nothing may follow the value. An object naming a key twice keeps the
//! last value, as parsing JSON text does.
//!
//! [`PluginModule::validate_lent`]: crate::abi::PluginModule::validate_lent

use std::fmt;

use abi_stable::std_types::RVec;
use serde_json::{Map, Number, Value};

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const UNSIGNED: u8 = 3;
const NEGATIVE: u8 = 4;
const FLOAT: u8 = 5;
const STRING: u8 = 6;
const ARRAY: u8 = 7;
const OBJECT: u8 = 8;
const NUMBER_TEXT: u8 = 9;

/// How deep arrays and objects may nest in a decoded value.
pub const MAX_DEPTH: usize = 128;

/// Why [`decode`] refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Where in the input, in bytes.
    pub offset: usize,
    /// What was wrong there.
    pub reason: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

impl std::error::Error for DecodeError {}

/// Why [`encode`] could not encode a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(&'static str);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for EncodeError {}

/// Where [`encode`] writes: a `Vec<u8>`, or an `RVec<u8>` (such as the
/// buffer a host lends [`PluginModule::validate_lent`]).
///
/// [`PluginModule::validate_lent`]: crate::abi::PluginModule::validate_lent
pub trait Sink {
    /// Appends one byte.
    fn push(&mut self, byte: u8);
    /// Appends these bytes.
    fn extend_from_slice(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn push(&mut self, byte: u8) {
        Vec::push(self, byte);
    }
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes);
    }
}

impl Sink for RVec<u8> {
    fn push(&mut self, byte: u8) {
        RVec::push(self, byte);
    }
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.extend_from_copy_slice(bytes);
    }
}

/// Appends `value`'s encoding to `out`. Fails only for a string, array or
/// object longer than `u32::MAX` (bytes or items).
pub fn encode(value: &Value, out: &mut impl Sink) -> Result<(), EncodeError> {
    match value {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Number(number) => {
            if let Some(n) = number.as_u64() {
                out.push(UNSIGNED);
                out.extend_from_slice(&n.to_le_bytes());
            } else if let Some(n) = number.as_i64() {
                out.push(NEGATIVE);
                out.extend_from_slice(&n.to_le_bytes());
            } else if let Some(n) = number.as_f64().filter(|n| {
                // Only where the float is the number (without
                // `arbitrary_precision`, always).
                Number::from_f64(*n).as_ref() == Some(number)
            }) {
                out.push(FLOAT);
                out.extend_from_slice(&n.to_bits().to_le_bytes());
            } else {
                out.push(NUMBER_TEXT);
                text(&number.to_string(), out)?;
            }
        }
        Value::String(s) => {
            out.push(STRING);
            text(s, out)?;
        }
        Value::Array(items) => {
            out.push(ARRAY);
            count(items.len(), out)?;
            for item in items {
                encode(item, out)?;
            }
        }
        Value::Object(map) => {
            out.push(OBJECT);
            count(map.len(), out)?;
            for (key, item) in map {
                text(key, out)?;
                encode(item, out)?;
            }
        }
    }
    Ok(())
}

fn count(n: usize, out: &mut impl Sink) -> Result<(), EncodeError> {
    let n = u32::try_from(n).map_err(|_| EncodeError("more than 4 GiB in one item"))?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

fn text(s: &str, out: &mut impl Sink) -> Result<(), EncodeError> {
    count(s.len(), out)?;
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Reads a value [`encode`] wrote, refusing anything else (see the
/// module's documentation).
pub fn decode(input: &[u8]) -> Result<Value, DecodeError> {
    let mut reader = Reader { input, at: 0 };
    let value = reader.value(0)?;
    if reader.at != input.len() {
        return Err(reader.error("bytes after the value"));
    }
    Ok(value)
}

struct Reader<'a> {
    input: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, reason: &'static str) -> DecodeError {
        DecodeError {
            offset: self.at,
            reason,
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        match self.input.get(self.at..).and_then(|rest| rest.get(..n)) {
            Some(bytes) => {
                self.at += n;
                Ok(bytes)
            }
            None => Err(self.error("the input ends inside a value")),
        }
    }

    fn eight(&mut self) -> Result<[u8; 8], DecodeError> {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(self.bytes(8)?);
        Ok(bytes)
    }

    /// A count or length: at most what is left of the input, since every
    /// item takes at least one byte.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(self.bytes(4)?);
        let n = u32::from_le_bytes(bytes) as usize;
        if n > self.input.len() - self.at {
            self.at -= 4;
            return Err(self.error("a length longer than the input"));
        }
        Ok(n)
    }

    fn text(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.count()?;
        let start = self.at;
        let bytes = self.bytes(n)?;
        std::str::from_utf8(bytes).map_err(|e| DecodeError {
            offset: start + e.valid_up_to(),
            reason: "text that is not UTF-8",
        })
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let tag = self.bytes(1)?[0];
        Ok(match tag {
            NULL => Value::Null,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            UNSIGNED => Value::from(u64::from_le_bytes(self.eight()?)),
            NEGATIVE => {
                let n = i64::from_le_bytes(self.eight()?);
                if n >= 0 {
                    self.at -= 8;
                    return Err(self.error("a negative integer that is not negative"));
                }
                Value::from(n)
            }
            FLOAT => {
                let n = f64::from_bits(u64::from_le_bytes(self.eight()?));
                match Number::from_f64(n) {
                    Some(number) => Value::Number(number),
                    None => {
                        self.at -= 8;
                        return Err(self.error("a float that is not finite"));
                    }
                }
            }
            NUMBER_TEXT => {
                let start = self.at;
                let number = self.text()?.parse::<Number>().map_err(|_| DecodeError {
                    offset: start,
                    reason: "a number that is not a JSON number",
                })?;
                Value::Number(number)
            }
            STRING => Value::String(self.text()?.to_owned()),
            ARRAY | OBJECT if depth >= MAX_DEPTH => {
                self.at -= 1;
                return Err(self.error("arrays and objects nested too deep"));
            }
            ARRAY => {
                let n = self.count()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            OBJECT => {
                let n = self.count()?;
                let mut map = Map::new();
                for _ in 0..n {
                    let key = self.text()?.to_owned();
                    let item = self.value(depth + 1)?;
                    map.insert(key, item);
                }
                Value::Object(map)
            }
            _ => {
                self.at -= 1;
                return Err(self.error("an unknown tag"));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn round_trip(value: &Value) -> Value {
        let mut out = Vec::new();
        encode(value, &mut out).expect("encodes");
        decode(&out).expect("decodes")
    }

    #[test]
    fn every_kind_of_value_comes_back_as_it_went() {
        let value = json!({
            "null": null, "yes": true, "no": false,
            "zero": 0, "max": u64::MAX, "min": i64::MIN, "minus one": -1,
            "float": 1.5, "tiny": 5e-324, "negative float": -0.0,
            "text": "h\u{e9}llo \"w\u{f6}rld\"\n\u{1f600}", "empty": "",
            "array": [1, "two", [3, {"four": 4}], [], {}],
            "": {"nested": {"deeper": [null]}}
        });
        assert_eq!(round_trip(&value), value);
        // Exactly: the same JSON text, not only an equal value.
        assert_eq!(round_trip(&value).to_string(), value.to_string());
    }

    #[test]
    fn the_encoding_is_what_the_module_documents() {
        let mut out = Vec::new();
        encode(&json!({"region": "eu", "n": [-2, 3, 0.5]}), &mut out).unwrap();
        let mut wanted = vec![OBJECT, 2, 0, 0, 0];
        wanted.extend([1, 0, 0, 0, b'n', ARRAY, 3, 0, 0, 0]);
        wanted.push(NEGATIVE);
        wanted.extend((-2i64).to_le_bytes());
        wanted.push(UNSIGNED);
        wanted.extend(3u64.to_le_bytes());
        wanted.push(FLOAT);
        wanted.extend(0.5f64.to_bits().to_le_bytes());
        wanted.extend([6, 0, 0, 0]);
        wanted.extend(b"region");
        wanted.extend([STRING, 2, 0, 0, 0, b'e', b'u']);
        assert_eq!(out, wanted);
    }

    #[test]
    fn a_host_buffer_receives_the_same_bytes() {
        let value = json!({"a": [1, "two", {"three": 3.5}]});
        let (mut vec, mut rvec) = (Vec::new(), RVec::new());
        encode(&value, &mut vec).unwrap();
        encode(&value, &mut rvec).unwrap();
        assert_eq!(rvec.as_slice(), vec.as_slice());
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_as_json_text_does() {
        let mut input = vec![OBJECT, 2, 0, 0, 0];
        for value in [1u64, 2] {
            input.extend([1, 0, 0, 0, b'k', UNSIGNED]);
            input.extend(value.to_le_bytes());
        }
        assert_eq!(decode(&input).unwrap(), json!({"k": 2}));
        assert_eq!(
            serde_json::from_str::<Value>(r#"{"k": 1, "k": 2}"#).unwrap(),
            json!({"k": 2})
        );
    }

    #[test]
    fn malformed_input_is_refused_saying_what_and_where() {
        let refused = |input: &[u8]| decode(input).unwrap_err().to_string();
        assert_eq!(refused(&[]), "the input ends inside a value at byte 0");
        assert_eq!(refused(&[42]), "an unknown tag at byte 0");
        assert_eq!(refused(&[NULL, NULL]), "bytes after the value at byte 1");
        assert_eq!(
            refused(&[STRING, 9, 0, 0, 0, b'a']),
            "a length longer than the input at byte 1"
        );
        assert_eq!(
            refused(&[STRING, 2, 0, 0, 0, b'a', 0xff]),
            "text that is not UTF-8 at byte 6"
        );
        assert_eq!(
            refused(&[ARRAY, 255, 255, 255, 255]),
            "a length longer than the input at byte 1"
        );
        let mut nan = vec![FLOAT];
        nan.extend(f64::NAN.to_bits().to_le_bytes());
        assert_eq!(refused(&nan), "a float that is not finite at byte 1");
        let mut not_negative = vec![NEGATIVE];
        not_negative.extend(5i64.to_le_bytes());
        assert_eq!(
            refused(&not_negative),
            "a negative integer that is not negative at byte 1"
        );
        assert_eq!(
            refused(&[NUMBER_TEXT, 3, 0, 0, 0, b'a', b'b', b'c']),
            "a number that is not a JSON number at byte 1"
        );
        assert_eq!(
            refused(&[UNSIGNED, 1, 2]),
            "the input ends inside a value at byte 1"
        );
    }

    #[test]
    fn nesting_deeper_than_json_parsing_allows_is_refused() {
        let deep = |depth: usize| {
            let mut input = Vec::new();
            for _ in 0..depth {
                input.extend([ARRAY, 1, 0, 0, 0]);
            }
            input.push(NULL);
            input
        };
        assert!(decode(&deep(MAX_DEPTH)).is_ok());
        assert_eq!(
            decode(&deep(MAX_DEPTH + 1)).unwrap_err().to_string(),
            format!(
                "arrays and objects nested too deep at byte {}",
                MAX_DEPTH * 5
            )
        );
        // A million levels: refused, not a stack overflow.
        assert!(decode(&deep(1_000_000)).is_err());
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |n| n.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_value_comes_back_as_it_went(value in any_value()) {
            prop_assert_eq!(round_trip(&value), value);
        }

        #[test]
        fn any_bytes_decode_or_are_refused_without_panicking(
            input in prop::collection::vec(any::<u8>(), 0..64)
        ) {
            if let Ok(value) = decode(&input) {
                // Whatever decodes is a value like any other.
                prop_assert_eq!(round_trip(&value), value);
            }
        }
    }
}
