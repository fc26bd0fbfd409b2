//! Quantities (`500m`, `1.5Gi`, `1e3`): parsing never panics, a string quantity in JSON
//! reads as the same quantity (surrounding spaces ignored, as Go's `UnmarshalJSON`
//! ignores them), and the conversions and arithmetic the scheduler and
//! quota use never overflow.
#![no_main]

use flotilla_api::{Quantity, parse_quantity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = parse_quantity(text.trim());
    let from_json = Quantity::from_json(&serde_json::Value::String(text.to_string()));
    assert_eq!(parsed.is_ok(), from_json.is_ok(), "{text:?}: parse_quantity and from_json disagree");
    let Ok(q) = parse_quantity(text) else { return };
    if let Ok(j) = from_json {
        assert_eq!(q, j, "{text:?}: parse_quantity and from_json disagree");
    }
    assert_eq!(Quantity::from_nanos(q.as_nanos()), q);
    let _ = (q.as_milli(), q.as_value(), q.is_negative(), q.is_zero());
    let _ = (q.saturating_add(q), q.saturating_sub(q), Quantity::ZERO.saturating_sub(q));
});
