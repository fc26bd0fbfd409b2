//! Server-side apply of a configuration (YAML, as `application/apply-patch+yaml`) onto
//! the seeded objects, whose fields two managers own, or onto a name that does not exist
//! (a create). The first byte picks the object, the second whether to force and
//! whether the name is new; the rest is the applied configuration. Dry run, so every
//! input meets the same objects.
#![no_main]

use flotilla_api::{Format, decode_object};
use flotilla_fuzz::{check_write, cluster, dry_run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [which, how, body @ ..] = data else { return };
    let cluster = cluster();
    let (rt, ns, name) = &cluster.objects[usize::from(*which) % cluster.objects.len()];
    let Ok(config) = decode_object(body, Format::Yaml) else { return };
    let force = how & 1 != 0;
    let name = if how & 2 != 0 { "new-object" } else { name.as_str() };
    let mut writes = dry_run(if how & 4 != 0 { "kubectl" } else { "fuzz" });
    writes.server_side_apply = true;
    let result = cluster.runtime.block_on(cluster.registry.apply(rt, *ns, name, config, force, &writes));
    check_write(&format!("apply to {}/{name}", rt.plural), &result);
});
