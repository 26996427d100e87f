//! Reading a few fields of a JSON object in one pass, raw, without building a tree: the
//! chat's payloads (`code`, `text`) and a Socket.IO CONNECT's recovery claim (`pid`,
//! `offset`) come from clients, and a large object must cost no more than skipping it.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The values of the fields named `names` in the JSON object `json`, raw (others are
/// skipped; a repeated key keeps its last value); `None` when `json` is not an object.
pub fn raw_fields<'a, const N: usize>(
    json: &'a str,
    names: [&str; N],
) -> Option<[Option<&'a RawValue>; N]> {
    let mut de = serde_json::Deserializer::from_str(json);
    let fields = Fields(&names).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(fields)
}

/// The object, as the values of `names`.
struct Fields<'n, const N: usize>(&'n [&'n str; N]);

impl<'de, const N: usize> DeserializeSeed<'de> for Fields<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Fields<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = [None; N];
        while let Some(key) = map.next_key_seed(Key(self.0))? {
            match key {
                Some(i) => out[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A key, as its index in `names` (`None`: not one of them).
struct Key<'n, const N: usize>(&'n [&'n str; N]);

impl<'de, const N: usize> DeserializeSeed<'de> for Key<'_, N> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<const N: usize> Visitor<'_> for Key<'_, N> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|n| *n == v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a, const N: usize>(json: &'a str, names: [&str; N]) -> Option<[Option<&'a str>; N]> {
        raw_fields(json, names).map(|f| f.map(|v| v.map(RawValue::get)))
    }

    #[test]
    fn named_fields_raw_others_skipped_last_one_wins() {
        assert_eq!(
            get(r#"{"a":1,"x":{"a":2},"b":"s","a":[3]}"#, ["a", "b", "c"]),
            Some([Some("[3]"), Some("\"s\""), None])
        );
        assert_eq!(get(r#"{"\u0061":true}"#, ["a"]), Some([Some("true")]));
        for not_an_object in ["[1]", "\"a\"", "null", "{", "{} {}", ""] {
            assert_eq!(get(not_an_object, ["a"]), None, "{not_an_object}");
        }
    }
}
