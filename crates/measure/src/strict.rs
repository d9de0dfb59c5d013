//! Strict reading of JSON documents whose parts are hashed or signed: an object with the same
//! key twice is refused. A reader that keeps the first of two values and one that keeps the last
//! would see two documents in the same bytes, and a verifier must see exactly one.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, thiserror::Error)]
#[error("not a JSON document with unique keys: {0}")]
pub struct StrictError(String);

/// Check that `json` is one JSON value in which no object has a key twice (at any depth).
pub fn check_unique_keys(json: &[u8]) -> Result<(), StrictError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    Unique
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| StrictError(e.to_string()))
}

struct Unique;

/// An object key: borrowed from the input when it can be, owned when it had escapes.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key<'de>(std::borrow::Cow<'de, str>);

impl std::fmt::Debug for Key<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> DeserializeSeed<'de> for Unique {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Unique)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Keys are borrowed from the document where they have no escapes (nearly always).
        let mut keys: Vec<Key<'de>> = Vec::new();
        let mut set: Option<std::collections::HashSet<Key<'de>>> = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let seen = match &mut set {
                Some(s) => !s.insert(key.clone()),
                None if keys.len() >= 16 => {
                    let mut s: std::collections::HashSet<Key<'de>> = keys.drain(..).collect();
                    let seen = !s.insert(key.clone());
                    set = Some(s);
                    seen
                }
                None => {
                    let seen = keys.contains(&key);
                    keys.push(key.clone());
                    seen
                }
            };
            if seen {
                return Err(de::Error::custom(format!(
                    "key {key:?} appears twice in an object"
                )));
            }
            map.next_value_seed(Unique)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(check_unique_keys(br#"{"a":1,"b":[{"c":2,"d":{"e":3}}]}"#).is_ok());
        for dup in [
            &br#"{"a":1,"a":2}"#[..],
            br#"{"x":{"exit_code":0,"exit_code":139}}"#,
            br#"[{"k":1},{"k":1,"k":1}]"#,
            br#"{"\u0061":1,"a":2}"#,
        ] {
            let err = check_unique_keys(dup).expect_err("duplicate accepted");
            assert!(err.to_string().contains("appears twice"), "{err}");
        }
        // Many keys, the duplicate after the switch to a set.
        let mut big = String::from("{");
        for i in 0..40 {
            big.push_str(&format!("\"k{i}\":{i},"));
        }
        big.push_str("\"k3\":0}");
        assert!(check_unique_keys(big.as_bytes()).is_err());
        assert!(check_unique_keys(b"{} {}").is_err(), "trailing document");
        assert!(check_unique_keys(b"{").is_err());
    }
}
