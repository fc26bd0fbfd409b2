//! The three patch types against the seeded objects, through the registry as the server
//! runs them (dry run, so every input meets the same objects). The first byte picks the
//! object, the second the patch type (JSON patch, merge patch, strategic merge patch)
//! and whether it goes to the `status` subresource; the rest is the patch body.
#![no_main]

use flotilla_api::{Format, Subresource, decode_object};
use flotilla_apiserver::PatchType;
use flotilla_apiserver::fuzzing::strategic_merge;
use flotilla_fuzz::{check_write, cluster, dry_run};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let [which, how, body @ ..] = data else { return };
    let cluster = cluster();
    let (rt, ns, name) = &cluster.objects[usize::from(*which) % cluster.objects.len()];
    let sub = (how & 4 != 0 && rt.has_subresource(Subresource::Status)).then_some(Subresource::Status);
    let registry = &cluster.registry;
    let writes = dry_run("fuzz");
    let result = cluster.runtime.block_on(async {
        match how % 3 {
            // As the HTTP edge reads each Content-Type.
            0 => {
                let ops: Value = serde_json::from_slice(body).ok()?;
                Some(registry.patch(rt, *ns, name, PatchType::Json(&ops), sub, &writes).await)
            }
            1 => {
                let merge = decode_object(body, Format::Json).ok()?;
                Some(registry.patch(rt, *ns, name, PatchType::Merge(&merge), sub, &writes).await)
            }
            _ => {
                let patch = decode_object(body, Format::Json).ok()?;
                let current = registry.get(rt, *ns, name).await.ok()?;
                let mut patched = current.clone();
                strategic_merge(&mut patched, &patch);
                patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
                Some(registry.update(rt, *ns, name, patched, sub, &writes).await)
            }
        }
    });
    if let Some(result) = result {
        check_write(&format!("patch {how} of {}/{name}", rt.plural), &result);
    }
});
