//! Label and field selectors, as `labelSelector=` and `fieldSelector=` carry them. What
//! parses prints as a selector that parses to the same requirements (compared as
//! printed, in any order: `==` prints as `=`, and terms sort as written, as in Go), and
//! matching never fails.
#![no_main]

use flotilla_api::{FieldSelector, LabelSelector};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

/// Requirements as a sorted list of their printed forms.
fn terms<T: ToString>(requirements: &[T]) -> Vec<String> {
    let mut terms: Vec<String> = requirements.iter().map(T::to_string).collect();
    terms.sort();
    terms
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let labels = json!({"app": "web", "tier": "front", "example.com/team": "a-b_c.d", "empty": ""});
    let object = json!({"metadata": {"name": "web", "namespace": "default", "labels": labels},
        "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}});
    if let Ok(selector) = LabelSelector::parse(text) {
        let printed = selector.to_string();
        match LabelSelector::parse(&printed) {
            Ok(again) => assert_eq!(
                terms(again.requirements()),
                terms(selector.requirements()),
                "label selector {text:?} printed as {printed:?}"
            ),
            Err(e) => panic!("label selector {text:?} printed as {printed:?}, which does not parse: {}", e.message),
        }
        let _ = selector.matches(labels.as_object().unwrap_or(&serde_json::Map::new()));
    }
    if let Ok(selector) = FieldSelector::parse(text) {
        let printed = selector.to_string();
        match FieldSelector::parse(&printed) {
            Ok(again) => assert_eq!(
                terms(again.requirements()),
                terms(selector.requirements()),
                "field selector {text:?} printed as {printed:?}"
            ),
            Err(e) => panic!("field selector {text:?} printed as {printed:?}, which does not parse: {}", e.message),
        }
        let _ = selector.matches(&object);
        let _ = selector.check_supported(&["metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"]);
    }
});
