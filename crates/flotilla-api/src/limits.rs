//! The bounds on what a client may send, in one place: body and object sizes, nesting
//! depth, YAML alias expansion, JSON patch length, duration fields, and how much of a
//! bad value an error message may quote.
//!
//! kube-apiserver has most of these (3 MiB bodies, 10,000 JSON patch operations,
//! bounded YAML alias expansion, `int32` ranges on duration fields); where it has none
//! (nesting depth, which etcd's Go decoder does not bound the way serde_json does), the
//! choice and its reason are documented on the constant. Everything here is pure: the
//! API server applies these checks before it stores or answers anything.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::Cell;
use std::fmt;

/// The largest request body, and the largest object the store keeps (kube-apiserver's
/// `--max-request-body-bytes` default: 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The deepest nesting of objects and arrays an object may have when stored. serde_json
/// refuses to read JSON deeper than 128 levels, so anything stored deeper could never be
/// read back (a list of its kind would fail for good); 100 leaves room for the envelopes
/// an object is served in (a list's `items`, a watch event's `object`, a Table's rows).
/// Kubernetes' own kinds nest about 15 levels; free-form fields (`fieldsV1`, a custom
/// resource's spec) are what reach further.
pub const MAX_DEPTH: usize = 100;

/// The most operations one JSON patch may have (kube-apiserver's limit).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The longest duration, in seconds, of the `*Seconds` fields whose Kubernetes type is
/// `int64` but whose meaning is a duration (`terminationGracePeriodSeconds`,
/// `activeDeadlineSeconds`, `startingDeadlineSeconds`, a DELETE's `gracePeriodSeconds`):
/// `int32`'s maximum, 68 years, as kube-apiserver validates a pod's
/// `activeDeadlineSeconds`. Any such duration added to now stays a valid timestamp.
pub const MAX_DURATION_SECONDS: i64 = i32::MAX as i64;

/// How many bytes of a bad value an error message quotes before `... (truncated)`.
pub const MAX_QUOTED_VALUE_BYTES: usize = 256;

/// The most field errors an `Invalid` status lists.
pub const MAX_CAUSES: usize = 100;

/// The longest message a `Status` carries; longer ones are cut with `... (truncated)`.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// The limits above as `flotilla server --help` lists them.
pub fn describe() -> String {
    format!(
        "Limits on what clients send (fixed; kube-apiserver's where it has one):\n\
         - request bodies and stored objects: at most {MAX_BODY_BYTES} bytes (413 RequestEntityTooLarge)\n\
         - nesting of objects and arrays in a stored object: at most {MAX_DEPTH} levels (422 Invalid)\n\
         - JSON patch: at most {MAX_JSON_PATCH_OPERATIONS} operations, and its copies at most {MAX_BODY_BYTES} bytes \
         (413)\n\
         - YAML bodies and manifests: aliases may expand a document to at most {YAML_EXPANSION_FACTOR}x its size \
         plus {YAML_EXPANSION_FLOOR} values or bytes (400 BadRequest)\n\
         - int64 durations (terminationGracePeriodSeconds, activeDeadlineSeconds, startingDeadlineSeconds): at \
         most {MAX_DURATION_SECONDS} seconds (422); a DELETE's gracePeriodSeconds is clamped to it\n\
         - error messages quote at most {MAX_QUOTED_VALUE_BYTES} bytes of a value, list at most {MAX_CAUSES} \
         field errors, and are at most {MAX_MESSAGE_BYTES} bytes"
    )
}

/// `text` cut at `max` bytes (on a character boundary) with `... (truncated)` appended
/// when it was longer.
pub fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... (truncated)", &text[..end]).into()
}

/// The path (`metadata.managedFields[0].fieldsV1.f:a`) of the first place where `value`
/// nests deeper than `max` objects and arrays, if any. Iterative: it cannot itself run
/// out of stack on a value built by code rather than parsed.
pub fn too_deep(value: &Value, max: usize) -> Option<String> {
    // (value, depth of value, path segment that led here, parent index in `trail`)
    let mut stack: Vec<(&Value, usize, usize)> = vec![(value, 0, usize::MAX)];
    let mut trail: Vec<(String, usize)> = Vec::new();
    while let Some((value, depth, parent)) = stack.pop() {
        let children: Box<dyn Iterator<Item = (String, &Value)>> = match value {
            Value::Object(map) => Box::new(map.iter().map(|(k, v)| (format!(".{k}"), v))),
            Value::Array(items) => Box::new(items.iter().enumerate().map(|(i, v)| (format!("[{i}]"), v))),
            _ => continue,
        };
        if depth + 1 > max {
            return Some(path_of(&trail, parent));
        }
        for (segment, child) in children {
            if matches!(child, Value::Object(_) | Value::Array(_)) {
                trail.push((segment, parent));
                stack.push((child, depth + 1, trail.len() - 1));
            }
        }
    }
    None
}

fn path_of(trail: &[(String, usize)], mut at: usize) -> String {
    let mut segments = Vec::new();
    while at != usize::MAX {
        let (segment, parent) = &trail[at];
        segments.push(segment.as_str());
        at = *parent;
    }
    segments.reverse();
    let path = segments.concat();
    truncate(path.strip_prefix('.').unwrap_or(&path), MAX_QUOTED_VALUE_BYTES).into_owned()
}

/// How much a YAML document may expand through aliases: the values and the bytes of
/// strings it decodes to, as a multiple of its own size plus a floor. A document without
/// aliases never comes near (each value and each byte costs at least one input byte);
/// a "billion laughs" document is refused before it is built.
pub const YAML_EXPANSION_FACTOR: usize = 2;
/// The expansion every document is allowed whatever its size.
pub const YAML_EXPANSION_FLOOR: usize = 64 * 1024;

/// Why a bounded decode stopped.
#[derive(Debug)]
pub struct ExpansionExceeded {
    pub values: usize,
    pub bytes: usize,
}

/// The budget of one bounded decode.
#[derive(Debug)]
struct Budget {
    values: Cell<usize>,
    bytes: Cell<usize>,
    max_values: usize,
    max_bytes: usize,
}

impl Budget {
    fn for_input(len: usize) -> Self {
        let max = len.saturating_mul(YAML_EXPANSION_FACTOR).saturating_add(YAML_EXPANSION_FLOOR);
        Self { values: Cell::new(0), bytes: Cell::new(0), max_values: max, max_bytes: max }
    }

    fn spend<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        self.values.set(self.values.get().saturating_add(1));
        self.bytes.set(self.bytes.get().saturating_add(bytes));
        if self.values.get() > self.max_values || self.bytes.get() > self.max_bytes {
            return Err(E::custom(format!(
                "the document expands (through YAML aliases) beyond {} values or {} bytes",
                self.max_values, self.max_bytes
            )));
        }
        Ok(())
    }
}

/// Decodes a `serde_json::Value` from any deserializer, counting every value and every
/// string byte against a budget relative to the input's size: aliases cannot make the
/// result (or the time spent building it) much larger than the input.
pub fn decode_bounded<'de, D: de::Deserializer<'de>>(deserializer: D, input_len: usize) -> Result<Value, D::Error> {
    let budget = Budget::for_input(input_len);
    BoundedValue(&budget).deserialize(deserializer)
}

struct BoundedValue<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for BoundedValue<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoundedValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.spend(8)?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.spend(8)?;
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.spend(8)?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.spend(v.len())?;
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.0.spend(v.len())?;
        Ok(Value::String(v))
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.spend(1)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(BoundedValue(self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.spend(1)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(BoundedValue(self.0))? {
            let key = match key {
                Value::String(key) => key,
                // YAML allows any scalar as a key; JSON (and Kubernetes) use its text.
                Value::Bool(_) | Value::Number(_) | Value::Null => key.to_string(),
                Value::Array(_) | Value::Object(_) => {
                    return Err(de::Error::custom("a mapping key must be a scalar, not a collection"));
                }
            };
            let value = map.next_value_seed(BoundedValue(self.0))?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn yaml(text: &str) -> Result<Value, serde_yaml_ng::Error> {
        decode_bounded(serde_yaml_ng::Deserializer::from_str(text), text.len())
    }

    #[test]
    fn plain_yaml_decodes_as_before() {
        let text = "a: 1\nb: [x, true, null, 2.5]\nc: {d: e}\n1: one\n";
        assert_eq!(yaml(text).ok(), Some(json!({"a": 1, "b": ["x", true, null, 2.5], "c": {"d": "e"}, "1": "one"})));
        let anchors = "base: &b {image: app, port: 80}\nweb: *b\nworker: *b\n";
        assert_eq!(yaml(anchors).ok().map(|v| v["worker"]["port"].clone()), Some(json!(80)));
    }

    #[test]
    fn alias_bombs_are_refused_before_they_are_built() {
        // One anchor of 3,000 items referenced 3,000 times: 9 million values from 15 KB.
        let items = vec!["x"; 3000].join(",");
        let refs = vec!["*a"; 3000].join(",");
        let text = format!("a: &a [{items}]\nb: [{refs}]\n");
        let error = yaml(&text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("expands (through YAML aliases) beyond"), "{error}");
        // A long string repeated through aliases is counted by its bytes.
        let long = "y".repeat(60_000);
        let text = format!("a: &a {long}\nb: [{}]\n", vec!["*a"; 50].join(","));
        assert!(yaml(&text).is_err());
    }

    #[test]
    fn depth_is_found_with_its_path() {
        let mut deep = json!("leaf");
        for _ in 0..5 {
            deep = json!({"f:a": deep});
        }
        let object = json!({"metadata": {"managedFields": [{"fieldsV1": deep}]}});
        assert_eq!(too_deep(&object, 9), None);
        assert!(too_deep(&object, 8).is_some());
        assert_eq!(too_deep(&object, 6).as_deref(), Some("metadata.managedFields[0].fieldsV1.f:a.f:a"));
        assert_eq!(too_deep(&json!([[[]]]), 2).as_deref(), Some("[0][0]"));
        assert_eq!(too_deep(&json!({"a": 1}), 0).as_deref(), Some(""));
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééé", 3), "é... (truncated)");
    }
}
