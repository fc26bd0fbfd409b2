//! Validation of every kind: the first byte picks the kind, the rest is the object as
//! JSON (its `apiVersion` and `kind` set to the kind's, as the server sets them).
//! A valid object's canonical form must itself be valid and canonical (defaulting and
//! normalising are idempotent), and readable back from the store.
#![no_main]

use flotilla_api::all_resources;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let kinds = all_resources();
    let rt = &kinds[usize::from(which) % kinds.len()];
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else { return };
    let Some(map) = object.as_object_mut() else { return };
    map.insert("apiVersion".into(), json!(rt.api_version()));
    map.insert("kind".into(), json!(rt.kind));
    let Ok(canonical) = rt.validate(object) else { return };
    flotilla_fuzz::check_readable(rt.kind, &canonical);
    match rt.validate(canonical.clone()) {
        Ok(again) => assert_eq!(again, canonical, "{}: validating a canonical object changed it", rt.kind),
        Err(errors) => panic!("{}: a canonical object is invalid: {errors:?}\n{canonical}", rt.kind),
    }
});
