//! The three patch types a PATCH request carries (server-side apply is `apply.rs`), applied
//! to an object in memory, within bounds: every verb that patches (an object, its status,
//! its scale; over HTTP or in process) goes through [`apply`].
//!
//! A JSON patch has at most [`MAX_JSON_PATCH_OPERATIONS`] operations, and its `copy`
//! operations together may copy at most [`MAX_BODY_BYTES`] (kube-apiserver's
//! `AccumulatedCopySizeLimit`): without that, 40 copies of a field into itself double it
//! 40 times from a 2.5 KB request. `add`, `replace` and `test` values come from the body,
//! which is already bounded, so the patched document can grow by at most the body and
//! the copy budget. Merge and strategic merge patches grow an object by at most the patch.

use crate::strategic;
use flotilla_api::limits::{MAX_BODY_BYTES, MAX_JSON_PATCH_OPERATIONS};
use flotilla_api::{ApiError, Reason};
use json_patch::PatchOperation;
use serde_json::Value;

/// A patch, told apart by the request's Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType<'a> {
    /// RFC 6902 operations.
    Json(&'a Value),
    /// RFC 7386 merge patch.
    Merge(&'a Value),
    /// Kubernetes' strategic merge patch (`strategic.rs`).
    Strategic(&'a Value),
}

/// A JSON patch's operations, parsed and checked once per request.
#[derive(Debug)]
pub enum Parsed<'a> {
    Json(Vec<PatchOperation>),
    Merge(&'a Value),
    Strategic(&'a Value),
}

/// Checks and parses a patch: a JSON patch must be a list of at most
/// [`MAX_JSON_PATCH_OPERATIONS`] operations.
pub fn parse(patch: PatchType<'_>) -> Result<Parsed<'_>, ApiError> {
    match patch {
        PatchType::Json(ops) => {
            let Some(list) = ops.as_array() else {
                return Err(ApiError::bad_request("the JSON patch must be a list of operations"));
            };
            if list.len() > MAX_JSON_PATCH_OPERATIONS {
                return Err(ApiError::new(
                    Reason::RequestEntityTooLarge,
                    format!(
                        "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
                        list.len()
                    ),
                ));
            }
            let parsed: json_patch::Patch = serde_json::from_value(ops.clone())
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is not a list of operations: {e}")))?;
            Ok(Parsed::Json(parsed.0))
        }
        PatchType::Merge(merge) => Ok(Parsed::Merge(merge)),
        PatchType::Strategic(patch) => Ok(Parsed::Strategic(patch)),
    }
}

/// Applies a parsed patch to `target`. On error `target` may be half patched: callers
/// patch a copy.
pub fn apply(target: &mut Value, patch: &Parsed<'_>) -> Result<(), ApiError> {
    match patch {
        Parsed::Json(ops) => apply_json(target, ops),
        Parsed::Merge(merge) => {
            json_patch::merge(target, merge);
            Ok(())
        }
        Parsed::Strategic(patch) => {
            strategic::apply(target, patch);
            Ok(())
        }
    }
}

fn apply_json(target: &mut Value, ops: &[PatchOperation]) -> Result<(), ApiError> {
    let mut copied = 0usize;
    for (index, op) in ops.iter().enumerate() {
        if let PatchOperation::Copy(copy) = op
            && let Some(from) = target.pointer(copy.from.as_str())
        {
            copied = copied.saturating_add(encoded_len(from));
            if copied > MAX_BODY_BYTES {
                return Err(ApiError::new(
                    Reason::RequestEntityTooLarge,
                    format!("the JSON patch copies more than {MAX_BODY_BYTES} bytes (at operation {index})"),
                ));
            }
        }
        // One operation at a time, on the caller's copy: json_patch's all-or-nothing
        // `patch` keeps an undo log the caller does not need.
        json_patch::patch_unsafe(target, std::slice::from_ref(op))
            .map_err(|e| ApiError::new(Reason::Invalid, format!("the JSON patch could not be applied: {e}")))?;
    }
    Ok(())
}

/// How many bytes `value` takes as JSON, without building the text.
pub(crate) fn encoded_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a Value into a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_patch(target: &mut Value, ops: Value) -> Result<(), ApiError> {
        apply(target, &parse(PatchType::Json(&ops))?)
    }

    #[test]
    fn json_patches_apply_in_order() -> Result<(), ApiError> {
        let mut object = json!({"data": {"a": "1"}});
        json_patch(
            &mut object,
            json!([{"op": "add", "path": "/data/b", "value": "2"}, {"op": "copy", "from": "/data/a", "path": "/data/c"},
               {"op": "remove", "path": "/data/a"}, {"op": "test", "path": "/data/b", "value": "2"}]),
        )?;
        assert_eq!(object, json!({"data": {"b": "2", "c": "1"}}));
        let failed = json_patch(&mut object, json!([{"op": "test", "path": "/data/b", "value": "3"}]));
        assert_eq!(failed.err().map(|e| e.reason), Some(Reason::Invalid));
        Ok(())
    }

    #[test]
    fn doubling_copies_stop_at_the_copy_budget() {
        // 40 copies of /data into itself would make 2^40 copies of the one value.
        let mut object = json!({"data": {"x": "y".repeat(64)}});
        let ops: Vec<Value> =
            (0..40).map(|i| json!({"op": "copy", "from": "/data", "path": format!("/data/d{i}")})).collect();
        let error = json_patch(&mut object, Value::Array(ops)).err();
        assert_eq!(error.as_ref().map(|e| e.reason), Some(Reason::RequestEntityTooLarge));
        assert!(encoded_len(&object) < 2 * MAX_BODY_BYTES, "{}", encoded_len(&object));
    }

    #[test]
    fn too_many_operations_are_refused_before_parsing() {
        let ops = Value::Array(vec![json!({"op": "test", "path": "", "value": {}}); MAX_JSON_PATCH_OPERATIONS + 1]);
        let error = parse(PatchType::Json(&ops)).err();
        assert_eq!(error.as_ref().map(|e| e.reason), Some(Reason::RequestEntityTooLarge));
        assert!(error.is_some_and(|e| e.message.contains("10000, got 10001")));
    }

    #[test]
    fn encoded_len_counts_bytes() {
        let value = json!({"a": [1, "é"]});
        assert_eq!(encoded_len(&value), serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0));
    }
}
