//! Flotilla's API vocabulary: the resource kinds it serves (k8s-openapi types at one
//! pinned Kubernetes version), their validation, label and field selectors, quantities,
//! the JSON/YAML codecs, and the `Status` errors every failure is answered with.
//!
//! This crate is the bottom of the graph: it does no I/O, keeps no state and depends on
//! no other Flotilla crate. Anything that stores, serves or runs objects lives above it.

mod codec;
pub mod cron;
mod error;
mod image;
pub mod limits;
mod node_affinity;
mod quantity;
mod resources;
mod selector;
pub mod service;
mod validation;
mod workloads;

pub use codec::{Format, decode_manifests, decode_object, encode};
pub use error::{ApiError, FieldError, FieldErrorType, ObjectRef, Reason, Result};
pub use image::parse_image_reference;
pub use k8s_openapi;
pub use node_affinity::node_selector_matches;
pub use quantity::{Quantity, parse_quantity};
pub use resources::{
    ResourceType, Subresource, all as all_resources, by_cli_name, by_kind, by_plural, groups, unknown_fields,
};
pub use selector::{FieldSelector, LabelSelector};
pub use validation::{NameRule, is_dns1123_label, is_dns1123_subdomain, validate_path_segment_name};
pub use workloads::fold_secret_string_data;

/// The Kubernetes version whose API Flotilla serves (k8s-openapi's `v1_37` feature).
pub const KUBERNETES_VERSION: (u32, u32) = (1, 37);

/// RFC 3339 time in whole seconds, as Kubernetes writes `creationTimestamp`.
pub fn timestamp_now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
