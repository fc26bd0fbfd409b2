//! Request body decoding: the first byte picks the decoder (a JSON body, a YAML body, a
//! manifest file of many YAML documents, a protobuf body), the rest is the body.
#![no_main]

use flotilla_api::{Format, decode_manifests, decode_object};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    match which % 4 {
        0 => check(decode_object(body, Format::Json)),
        1 => check(decode_object(body, Format::Yaml)),
        2 => {
            if let Ok(text) = std::str::from_utf8(body)
                && let Ok(objects) = decode_manifests(text)
            {
                for object in &objects {
                    flotilla_fuzz::check_readable("manifest", object);
                }
            }
        }
        _ => check(flotilla_apiserver::fuzzing::decode_protobuf(body)),
    }
});

fn check(result: Result<serde_json::Value, flotilla_api::ApiError>) {
    match result {
        Ok(object) => assert!(object.is_object(), "a body decoded to a non-object: {object}"),
        Err(e) => assert!(e.code() < 500, "a body answered {}: {}", e.code(), e.message),
    }
}
