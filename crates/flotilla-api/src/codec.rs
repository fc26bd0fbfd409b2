//! Decoding request bodies and manifest files (JSON or YAML, one or many documents) and
//! encoding responses.

use crate::error::ApiError;
use serde_json::Value;

/// The body formats the API reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// Decodes one object from a request body. Anything but a JSON/YAML mapping is a
/// BadRequest that says what was found.
pub fn decode_object(body: &[u8], format: Format) -> Result<Value, ApiError> {
    let value: Value = match format {
        Format::Json => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?,
        // Aliases are expanded within a budget relative to the body's size.
        Format::Yaml => crate::limits::decode_bounded(serde_yaml_ng::Deserializer::from_slice(body), body.len())
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))?,
    };
    match value {
        Value::Object(_) => Ok(value),
        other => Err(ApiError::bad_request(format!("the request body must be an object, not {}", type_name(&other)))),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Splits a manifest file into its objects: every YAML document (JSON is YAML), empty
/// documents skipped, `kind: List` expanded into its items.
pub fn decode_manifests(text: &str) -> Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value =
            crate::limits::decode_bounded(document, text.len()).map_err(|e| format!("document {}: {e}", index + 1))?;
        match value {
            Value::Null => {}
            Value::Object(ref map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
                if let Some(items) = map.get("items").and_then(Value::as_array) {
                    objects.extend(items.iter().cloned());
                }
            }
            Value::Object(_) => objects.push(value),
            other => {
                return Err(format!("document {} must be a mapping, not {}", index + 1, type_name(&other)));
            }
        }
    }
    Ok(objects)
}

/// Encodes a response body.
pub fn encode(value: &impl serde::Serialize, format: Format) -> Vec<u8> {
    match format {
        // Serializing a Value or a k8s-openapi type to JSON cannot fail: keys are strings.
        Format::Json => serde_json::to_vec(value).unwrap_or_default(),
        Format::Yaml => serde_yaml_ng::to_string(value).map(String::into_bytes).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_split_skip_empty_and_expand_lists() {
        let text = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n";
        let objects = decode_manifests(text).expect("valid manifests");
        let kinds: Vec<_> = objects.iter().map(|o| o["kind"].as_str().unwrap_or("")).collect();
        assert_eq!(kinds, ["ConfigMap", "Secret"]);
        let err = decode_manifests("kind: [unclosed").expect_err("bad yaml");
        assert!(err.starts_with("document 1:"), "{err}");
        assert!(decode_manifests("- a\n- b\n").is_err());
    }

    #[test]
    fn bodies_must_be_objects() {
        assert!(decode_object(br#"{"kind":"Pod"}"#, Format::Json).is_ok());
        assert!(decode_object(b"kind: Pod\n", Format::Yaml).is_ok());
        let err = decode_object(b"[1]", Format::Json).expect_err("array");
        assert_eq!(err.code(), 400);
        assert!(err.message.contains("not an array"));
        let err = decode_object(b"{", Format::Json).expect_err("truncated");
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
    }
}
