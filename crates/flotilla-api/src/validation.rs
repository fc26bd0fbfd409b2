//! Name, label, annotation and object-metadata validation.
//!
//! A port of k8s.io/apimachinery's `util/validation`, `api/validate/content`,
//! `api/validation` (`ValidateObjectMeta`) and `api/validation/path`, with the same rules
//! and the same messages, so that a client sees what kube-apiserver would have said.
//! The `is_*` checks return a list of problems (empty = valid), as the Go functions do;
//! the `validate_*` functions return [`FieldError`]s with their field paths.
//!
//! Lengths are counted in bytes, as Go's `len` does (and as the messages say).

use crate::error::{FieldError, FieldErrorType};
use serde_json::{Map, Value};

/// The longest DNS (RFC 1123) label: namespace names, most `name` fields.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// The longest DNS (RFC 1123) subdomain: most object names.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// The longest DNS (RFC 1035) label: Service names.
pub const DNS1035_LABEL_MAX_LENGTH: usize = 63;
/// The longest label value, and the longest name part of a qualified name.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// The most bytes all of an object's annotations (keys plus values) may take.
pub const TOTAL_ANNOTATION_SIZE_LIMIT_BYTES: usize = 256 * 1024;
/// kube-apiserver's message for a negative count or quantity.
pub const IS_NEGATIVE_ERROR_MSG: &str = "must be greater than or equal to 0";

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
     characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric \
     characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_KEY_ERR_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must \
     start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of alphanumeric \
     characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// The finalizers that may not both be set (`metav1.FinalizerOrphanDependents`, …).
const FINALIZER_ORPHAN_DEPENDENTS: &str = "orphan";
const FINALIZER_DELETE_DEPENDENTS: &str = "foregroundDeletion";

/// Go's `MaxLenError`: "must be no more than N bytes".
pub fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} bytes")
}

/// Go's `RegexError`, double space before "or" and all.
pub fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(example);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

/// Go's `EmptyError`.
pub fn empty_error() -> &'static str {
    "must be non-empty"
}

/// A string quoted as Go's `%q` would quote it (near enough: JSON string syntax).
pub(crate) fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// A string slice as Go's `%#v` prints it: `[]string{"a", "b"}`.
pub(crate) fn go_string_slice(values: &[String]) -> String {
    if values.is_empty() {
        return "[]string(nil)".to_string();
    }
    let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            is_lower_alnum(first) && is_lower_alnum(last) && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

/// `^[a-z]([-a-z0-9]*[a-z0-9])?$`
fn matches_dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            first.is_ascii_lowercase() && is_lower_alnum(last) && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`
fn matches_label_key_name(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A DNS (RFC 1123) label: at most 63 bytes of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(value) {
        if matches_dns1123_subdomain(value) {
            // A valid subdomain but not a valid label: it must be the dots.
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(DNS1123_LABEL_ERR_MSG, DNS1123_LABEL_FMT, &["my-name", "123-abc"]));
        }
    }
    errs
}

/// A DNS (RFC 1123) subdomain: at most 253 bytes of dot-separated labels.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(regex_error(DNS1123_SUBDOMAIN_ERR_MSG, DNS1123_SUBDOMAIN_FMT, &["example.com"]));
    }
    errs
}

/// A DNS (RFC 1035) label, as Service names must be: starts with a letter.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1035_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1035_LABEL_MAX_LENGTH));
    }
    if !matches_dns1035_label(value) {
        errs.push(regex_error(DNS1035_LABEL_ERR_MSG, DNS1035_LABEL_FMT, &["my-name", "abc-123"]));
    }
    errs
}

/// A name that can be used as one segment of a URL path: not `.` or `..`, and without
/// `/` or `%` (Go's `path.IsValidPathSegmentName`).
pub fn validate_path_segment_name(name: &str) -> Vec<String> {
    for illegal in [".", ".."] {
        if name == illegal {
            return vec![format!("may not be '{illegal}'")];
        }
    }
    validate_path_segment_prefix(name)
}

/// A prefix of a path-segment name (a `generateName`): without `/` or `%`.
pub fn validate_path_segment_prefix(name: &str) -> Vec<String> {
    ["/", "%"]
        .iter()
        .filter(|illegal| name.contains(*illegal))
        .map(|illegal| format!("may not contain '{illegal}'"))
        .collect()
}

/// A qualified name (a label key, an annotation key, a finalizer): an optional DNS
/// subdomain prefix and `/`, then a name of at most 63 bytes.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push(format!("prefix part {}", empty_error()));
            } else {
                errs.extend(is_dns1123_subdomain(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(LABEL_KEY_ERR_MSG, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push(format!("name part {}", empty_error()));
    } else if name.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(format!("name part {}", max_len_error(LABEL_VALUE_MAX_LENGTH)));
    }
    if !matches_label_key_name(name) {
        errs.push(format!(
            "name part {}",
            regex_error(LABEL_KEY_ERR_MSG, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"])
        ));
    }
    errs
}

/// A label value: empty, or at most 63 bytes of `[-A-Za-z0-9_.]`, alphanumeric at both ends.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_label_key_name(value) {
        errs.push(regex_error(LABEL_VALUE_ERR_MSG, LABEL_VALUE_FMT, &["MyValue", "my_value", "12345"]));
    }
    errs
}

/// Which rule an object's name must follow (Go's `ValidateNameFunc`s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameRule {
    /// A DNS-1123 subdomain (most kinds: Pods, Deployments, ConfigMaps, …).
    Subdomain,
    /// A DNS-1123 label (Namespaces, …).
    Label,
    /// A DNS-1035 label (Services).
    Dns1035Label,
    /// Anything that is safe as a URL path segment (Events, …).
    PathSegment,
}

impl NameRule {
    /// The problems with `name`; with `prefix`, `name` is a `generateName`, which may
    /// end with a dash because random characters will follow it.
    pub fn check(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix && self != Self::PathSegment {
            masked = mask_trailing_dash(name);
            masked.as_str()
        } else {
            name
        };
        match self {
            Self::Subdomain => is_dns1123_subdomain(name),
            Self::Label => is_dns1123_label(name),
            Self::Dns1035Label => is_dns1035_label(name),
            Self::PathSegment if prefix => validate_path_segment_prefix(name),
            Self::PathSegment => validate_path_segment_name(name),
        }
    }
}

/// Go's `maskTrailingDash`: a trailing dash (and the character before it) becomes `a`,
/// so that `web-` passes as a prefix.
fn mask_trailing_dash(name: &str) -> String {
    match name.strip_suffix('-') {
        Some(rest) => {
            let mut masked = rest.to_string();
            // Go drops the byte before the dash too; keep a non-ASCII character so that
            // the result stays invalid, as Go's (broken UTF-8) result is.
            if masked.chars().last().is_some_and(|c| c.is_ascii()) {
                masked.pop();
            }
            masked.push('a');
            masked
        }
        None => name.to_string(),
    }
}

/// Reads an optional string member; a member of another type is an error.
fn optional_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &str,
    errs: &mut Vec<FieldError>,
) -> Option<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            errs.push(FieldError::invalid(field, other, "must be a string"));
            None
        }
    }
}

/// Validates an object's `metadata` on create (Go's `ValidateObjectMetaAccessor` plus
/// the path-segment check the REST layer adds): name or generateName, namespace,
/// generation, labels, annotations, owner references and finalizers.
///
/// A name is not required when `generateName` is set (the name may not be generated
/// yet). Paths are rooted at `metadata` (`metadata.name`, `metadata.labels`,
/// `metadata.ownerReferences[0].uid`).
pub fn validate_object_meta(meta: &Value, namespaced: bool, name_rule: NameRule) -> Vec<FieldError> {
    let empty = Map::new();
    let obj = match meta {
        Value::Object(obj) => obj,
        Value::Null => &empty,
        other => return vec![FieldError::invalid("metadata", other, "must be an object")],
    };
    let mut errs = Vec::new();

    let generate_name = optional_str(obj, "generateName", "metadata.generateName", &mut errs).unwrap_or("");
    if !generate_name.is_empty() {
        for msg in name_rule.check(generate_name, true) {
            errs.push(FieldError::invalid("metadata.generateName", &generate_name, msg));
        }
    }
    let errors_before_name = errs.len();
    let name = optional_str(obj, "name", "metadata.name", &mut errs).unwrap_or("");
    let name_is_not_a_string = errs.len() > errors_before_name;
    if name.is_empty() {
        if generate_name.is_empty() && !name_is_not_a_string {
            errs.push(FieldError::required("metadata.name", "name or generateName is required"));
        }
    } else {
        for msg in name_rule.check(name, false) {
            errs.push(FieldError::invalid("metadata.name", &name, msg));
        }
    }

    let errors_before_namespace = errs.len();
    let namespace = optional_str(obj, "namespace", "metadata.namespace", &mut errs).unwrap_or("");
    let namespace_is_not_a_string = errs.len() > errors_before_namespace;
    if namespaced {
        if namespace.is_empty() {
            if !namespace_is_not_a_string {
                errs.push(FieldError::required("metadata.namespace", ""));
            }
        } else {
            for msg in is_dns1123_label(namespace) {
                errs.push(FieldError::invalid("metadata.namespace", &namespace, msg));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden("metadata.namespace", "not allowed on this type"));
    }

    if let Some(generation) = obj.get("generation").and_then(Value::as_i64)
        && generation < 0
    {
        errs.push(FieldError::invalid("metadata.generation", &generation, IS_NEGATIVE_ERROR_MSG));
    }

    match obj.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => errs.extend(validate_labels(labels, "metadata.labels")),
        Some(other) => errs.push(FieldError::invalid("metadata.labels", other, "must be an object")),
    }
    match obj.get("annotations") {
        None | Some(Value::Null) => {}
        Some(Value::Object(annotations)) => {
            errs.extend(validate_annotations(annotations, "metadata.annotations"));
        }
        Some(other) => errs.push(FieldError::invalid("metadata.annotations", other, "must be an object")),
    }
    match obj.get("ownerReferences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(refs)) => errs.extend(validate_owner_references(refs, "metadata.ownerReferences")),
        Some(other) => errs.push(FieldError::invalid("metadata.ownerReferences", other, "must be an array")),
    }
    match obj.get("finalizers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(finalizers)) => errs.extend(validate_finalizers(finalizers, "metadata.finalizers")),
        Some(other) => errs.push(FieldError::invalid("metadata.finalizers", other, "must be an array")),
    }
    errs
}

/// Validates a label map (`metadata.labels`, a pod template's labels, a selector's
/// `matchLabels`): keys are qualified names, values are label values. Every error is
/// reported at `field`, as kube-apiserver does.
pub fn validate_labels(labels: &Map<String, Value>, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (key, value) in labels {
        for msg in is_qualified_name(key) {
            errs.push(FieldError::invalid(field, key, msg));
        }
        match value {
            Value::String(value) => {
                for msg in is_valid_label_value(value) {
                    errs.push(FieldError::invalid(field, value, msg));
                }
            }
            other => errs.push(FieldError::invalid(field, other, "must be a string")),
        }
    }
    errs
}

/// Validates an annotation map: keys are qualified names (case-insensitively), values
/// are strings, and all keys and values together take at most 256 KiB.
pub fn validate_annotations(annotations: &Map<String, Value>, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (key, value) in annotations {
        for msg in is_qualified_name(&key.to_lowercase()) {
            errs.push(FieldError::invalid(field, key, msg));
        }
        total = total.saturating_add(key.len());
        match value {
            Value::String(value) => total = total.saturating_add(value.len()),
            other => errs.push(FieldError::invalid(field, other, "must be a string")),
        }
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_BYTES {
        errs.push(FieldError::new(
            FieldErrorType::TooLong,
            field,
            None,
            format!("must have at most {TOTAL_ANNOTATION_SIZE_LIMIT_BYTES} bytes"),
        ));
    }
    errs
}

/// The version of an `apiVersion` (`apps/v1` → `v1`, `v1` → `v1`), empty when there is
/// none or it does not parse (Go's `schema.ParseGroupVersion`).
fn group_and_version(api_version: &str) -> (&str, &str) {
    if api_version.is_empty() || api_version == "/" {
        return ("", "");
    }
    match api_version.matches('/').count() {
        0 => ("", api_version),
        1 => api_version.split_once('/').unwrap_or(("", "")),
        _ => ("", ""),
    }
}

/// Validates `ownerReferences`: apiVersion (with a version), kind, name and uid are set,
/// no Event owns anything, and at most one reference is the controller.
pub fn validate_owner_references(refs: &[Value], field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut first_controller: Option<String> = None;
    for (i, reference) in refs.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let Some(obj) = reference.as_object() else {
            errs.push(FieldError::invalid(&path, reference, "must be an object"));
            continue;
        };
        let get = |key: &str| obj.get(key).and_then(Value::as_str).unwrap_or("");
        let (api_version, kind, name, uid) = (get("apiVersion"), get("kind"), get("name"), get("uid"));
        let (group, version) = group_and_version(api_version);
        if version.is_empty() {
            errs.push(FieldError::invalid(format!("{path}.apiVersion"), &api_version, "version must not be empty"));
        }
        if kind.is_empty() {
            errs.push(FieldError::invalid(format!("{path}.kind"), &kind, "must not be empty"));
        }
        if name.is_empty() {
            errs.push(FieldError::invalid(format!("{path}.name"), &name, "must not be empty"));
        }
        if uid.is_empty() {
            errs.push(FieldError::invalid(format!("{path}.uid"), &uid, "must not be empty"));
        }
        if group.is_empty() && version == "v1" && kind == "Event" {
            errs.push(FieldError::invalid(
                &path,
                reference,
                format!("{group}/{version}, Kind={kind} is disallowed from being an owner"),
            ));
        }
        if obj.get("controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{kind}/{name}");
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid(
                    field,
                    &refs,
                    format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                    ),
                )),
                None => first_controller = Some(current),
            }
        }
    }
    errs
}

/// Validates `finalizers`: each is a qualified name, and `orphan` and
/// `foregroundDeletion` are not both set.
pub fn validate_finalizers(finalizers: &[Value], field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names = Vec::with_capacity(finalizers.len());
    for (i, finalizer) in finalizers.iter().enumerate() {
        let Some(finalizer) = finalizer.as_str() else {
            errs.push(FieldError::invalid(format!("{field}[{i}]"), finalizer, "must be a string"));
            continue;
        };
        for msg in is_qualified_name(finalizer) {
            errs.push(FieldError::invalid(field, &finalizer, msg));
        }
        names.push(finalizer.to_string());
    }
    if names.iter().any(|f| f == FINALIZER_ORPHAN_DEPENDENTS) && names.iter().any(|f| f == FINALIZER_DELETE_DEPENDENTS)
    {
        errs.push(FieldError::new(
            FieldErrorType::Invalid,
            field,
            Some(go_string_slice(&names)),
            format!("finalizer {FINALIZER_ORPHAN_DEPENDENTS} and {FINALIZER_DELETE_DEPENDENTS} cannot be both set"),
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
        characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', \
        regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    const NAME_PART_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and \
        must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', \
        regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn dns1123_subdomains() {
        for good in ["a", "a1", "a-b", "a.b", "example.com", "1-a.b-2", &"a".repeat(253)] {
            assert!(is_dns1123_subdomain(good).is_empty(), "{good}");
        }
        for bad in ["", "A", "a_b", "-a", "a-", "a..b", ".a", "a.", "a b", "a/b", ".."] {
            assert!(!is_dns1123_subdomain(bad).is_empty(), "{bad}");
        }
        assert_eq!(is_dns1123_subdomain("Foo"), vec![SUBDOMAIN_MSG.to_string()]);
        assert_eq!(is_dns1123_subdomain(&"a".repeat(254)), vec!["must be no more than 253 bytes".to_string()]);
        assert_eq!(is_dns1123_subdomain(&"A".repeat(254)).len(), 2);
    }

    #[test]
    fn dns1123_labels() {
        assert!(is_dns1123_label("my-name").is_empty());
        assert!(is_dns1123_label(&"a".repeat(63)).is_empty());
        assert_eq!(is_dns1123_label(&"a".repeat(64)), vec!["must be no more than 63 bytes".to_string()]);
        assert_eq!(is_dns1123_label("a.b"), vec!["must not contain dots".to_string()]);
        assert_eq!(
            is_dns1123_label("My_Name"),
            vec![
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must \
                 start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for \
                 validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                    .to_string()
            ]
        );
    }

    #[test]
    fn dns1035_labels() {
        assert!(is_dns1035_label("web").is_empty());
        assert!(is_dns1035_label("a-1").is_empty());
        assert_eq!(is_dns1035_label("1abc").len(), 1);
        assert!(is_dns1035_label("1abc")[0].starts_with("a DNS-1035 label must consist of"));
        assert!(is_dns1035_label("1abc")[0].contains("(e.g. 'my-name',  or 'abc-123', regex"));
        assert_eq!(is_dns1035_label(&"a".repeat(64)).len(), 1);
        assert_eq!(is_dns1035_label("").len(), 1);
    }

    #[test]
    fn path_segment_names() {
        assert!(validate_path_segment_name("a.b:c").is_empty());
        assert_eq!(validate_path_segment_name("."), vec!["may not be '.'".to_string()]);
        assert_eq!(validate_path_segment_name(".."), vec!["may not be '..'".to_string()]);
        assert_eq!(validate_path_segment_name("a/b"), vec!["may not contain '/'".to_string()]);
        assert_eq!(
            validate_path_segment_name("a/%b"),
            vec!["may not contain '/'".to_string(), "may not contain '%'".to_string()]
        );
        assert!(validate_path_segment_prefix("..").is_empty());
    }

    #[test]
    fn qualified_names() {
        for good in ["a", "A", "MyName", "my.name", "123-abc", "a_b", "example.com/MyName", "a.b/c", &"a".repeat(63)] {
            assert!(is_qualified_name(good).is_empty(), "{good}");
        }
        assert_eq!(is_qualified_name("-a"), vec![NAME_PART_MSG.to_string()]);
        assert_eq!(is_qualified_name(""), vec!["name part must be non-empty".to_string(), NAME_PART_MSG.to_string()]);
        assert_eq!(is_qualified_name(&"a".repeat(64)), vec!["name part must be no more than 63 bytes".to_string()]);
        assert_eq!(is_qualified_name("/a"), vec!["prefix part must be non-empty".to_string()]);
        assert_eq!(is_qualified_name("Example.com/a"), vec![format!("prefix part {SUBDOMAIN_MSG}")]);
        assert!(is_qualified_name(&format!("{}/a", "a".repeat(254)))[0].starts_with("prefix part must be no more"));
        assert_eq!(
            is_qualified_name("a/b/c"),
            vec![
                "a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and \
                 end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for \
                 validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix \
                 and '/' (e.g. 'example.com/MyName')"
                    .to_string()
            ]
        );
    }

    #[test]
    fn label_values() {
        for good in ["", "a", "MyValue", "my_value", "12345", "a.b-c_d", &"a".repeat(63)] {
            assert!(is_valid_label_value(good).is_empty(), "{good}");
        }
        assert_eq!(is_valid_label_value(&"a".repeat(64)), vec!["must be no more than 63 bytes".to_string()]);
        assert_eq!(
            is_valid_label_value("-a"),
            vec![
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', \
                 and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or \
                 '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                    .to_string()
            ]
        );
        assert_eq!(is_valid_label_value("a b").len(), 1);
    }

    #[test]
    fn name_rules_and_generate_name() {
        assert!(NameRule::Subdomain.check("web-", true).is_empty());
        assert!(NameRule::Subdomain.check("web.", true).len() == 1);
        assert!(!NameRule::Subdomain.check("web-", false).is_empty());
        assert!(NameRule::Label.check("a-", true).is_empty());
        assert!(NameRule::Dns1035Label.check("svc-", true).is_empty());
        assert!(NameRule::PathSegment.check("..", true).is_empty());
        assert!(!NameRule::PathSegment.check("..", false).is_empty());
        assert!(NameRule::PathSegment.check("Any_Thing.x", false).is_empty());
        assert_eq!(mask_trailing_dash("ab-"), "aa");
        assert_eq!(mask_trailing_dash("-"), "a");
    }

    #[test]
    fn object_meta_requires_a_name() {
        let errs = validate_object_meta(&json!({"namespace": "default"}), true, NameRule::Subdomain);
        assert_eq!(messages(&errs), vec!["metadata.name: Required value: name or generateName is required"]);
        let errs =
            validate_object_meta(&json!({"generateName": "web-", "namespace": "default"}), true, NameRule::Subdomain);
        assert!(errs.is_empty(), "{errs:?}");
        let errs = validate_object_meta(&Value::Null, false, NameRule::Subdomain);
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn object_meta_names() {
        let errs = validate_object_meta(&json!({"name": "Web_1", "namespace": "default"}), true, NameRule::Subdomain);
        assert_eq!(messages(&errs), vec![format!("metadata.name: Invalid value: \"Web_1\": {SUBDOMAIN_MSG}")]);
        let errs = validate_object_meta(&json!({"name": "a.b"}), false, NameRule::Label);
        assert_eq!(messages(&errs), vec!["metadata.name: Invalid value: \"a.b\": must not contain dots"]);
        let errs = validate_object_meta(&json!({"name": "a/b", "namespace": "ns"}), true, NameRule::PathSegment);
        assert_eq!(messages(&errs), vec!["metadata.name: Invalid value: \"a/b\": may not contain '/'"]);
        let errs = validate_object_meta(&json!({"name": "..", "namespace": "ns"}), true, NameRule::PathSegment);
        assert_eq!(messages(&errs), vec!["metadata.name: Invalid value: \"..\": may not be '..'"]);
        let errs = validate_object_meta(&json!({"name": "1svc", "namespace": "ns"}), true, NameRule::Dns1035Label);
        assert_eq!(errs.len(), 1);
        let errs = validate_object_meta(&json!({"generateName": "Web-", "namespace": "ns"}), true, NameRule::Subdomain);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.generateName");
        let errs = validate_object_meta(&json!({"name": 5, "namespace": "ns"}), true, NameRule::Subdomain);
        assert_eq!(messages(&errs), vec!["metadata.name: Invalid value: 5: must be a string"]);
    }

    #[test]
    fn object_meta_namespaces() {
        let errs = validate_object_meta(&json!({"name": "web"}), true, NameRule::Subdomain);
        assert_eq!(messages(&errs), vec!["metadata.namespace: Required value"]);
        let errs = validate_object_meta(&json!({"name": "web", "namespace": "My.NS"}), true, NameRule::Subdomain);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.namespace");
        let errs = validate_object_meta(&json!({"name": "node-1", "namespace": "default"}), false, NameRule::Subdomain);
        assert_eq!(messages(&errs), vec!["metadata.namespace: Forbidden: not allowed on this type"]);
        let errs = validate_object_meta(&json!({"name": "node-1", "namespace": ""}), false, NameRule::Subdomain);
        assert!(errs.is_empty());
    }

    #[test]
    fn object_meta_labels_and_annotations() {
        let meta = json!({
            "name": "web",
            "namespace": "default",
            "generation": -1,
            "labels": {"app": "web", "bad key": "x", "tier": "-front", "n": 1},
            "annotations": {"Example.COM/Thing": "anything at all", "a//b": "x"}
        });
        let errs = messages(&validate_object_meta(&meta, true, NameRule::Subdomain));
        assert!(
            errs.contains(&"metadata.generation: Invalid value: -1: must be greater than or equal to 0".to_string())
        );
        assert!(errs.contains(&format!("metadata.labels: Invalid value: \"bad key\": {NAME_PART_MSG}")));
        assert!(errs.iter().any(|e| e.starts_with("metadata.labels: Invalid value: \"-front\": a valid label")));
        assert!(errs.contains(&"metadata.labels: Invalid value: 1: must be a string".to_string()));
        assert!(
            errs.iter().any(|e| { e.starts_with("metadata.annotations: Invalid value: \"a//b\": a valid label key") })
        );
        assert_eq!(errs.len(), 5, "{errs:#?}");

        let mut big = Map::new();
        big.insert("a".into(), Value::String("x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_BYTES)));
        let errs = messages(&validate_annotations(&big, "metadata.annotations"));
        assert_eq!(errs, vec!["metadata.annotations: Too long: must have at most 262144 bytes"]);
        big.insert("a".into(), Value::String("x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_BYTES - 1)));
        assert!(validate_annotations(&big, "metadata.annotations").is_empty());
    }

    #[test]
    fn object_meta_owner_references() {
        let meta = json!({
            "name": "web-abc",
            "namespace": "default",
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "1", "controller": true},
                {"apiVersion": "apps/", "kind": "", "name": "", "uid": ""},
                {"apiVersion": "v1", "kind": "Event", "name": "e", "uid": "2"},
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "3", "controller": true}
            ]
        });
        let errs = validate_object_meta(&meta, true, NameRule::Subdomain);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "metadata.ownerReferences[1].apiVersion",
                "metadata.ownerReferences[1].kind",
                "metadata.ownerReferences[1].name",
                "metadata.ownerReferences[1].uid",
                "metadata.ownerReferences[2]",
                "metadata.ownerReferences",
            ]
        );
        assert_eq!(errs[0].detail, "version must not be empty");
        assert_eq!(errs[3].to_string(), "metadata.ownerReferences[1].uid: Invalid value: \"\": must not be empty");
        assert_eq!(errs[4].detail, "/v1, Kind=Event is disallowed from being an owner");
        assert_eq!(
            errs[5].detail,
            "Only one reference can have Controller set to true. Found \"true\" in references for ReplicaSet/web and Deployment/d"
        );
    }

    #[test]
    fn object_meta_finalizers() {
        let meta = json!({"name": "x", "finalizers": ["kubernetes", "example.com/cleanup", "bad finalizer", "orphan", "foregroundDeletion"]});
        let errs = messages(&validate_object_meta(&meta, false, NameRule::Subdomain));
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[0].starts_with("metadata.finalizers: Invalid value: \"bad finalizer\": name part"));
        assert_eq!(
            errs[1],
            "metadata.finalizers: Invalid value: []string{\"kubernetes\", \"example.com/cleanup\", \"bad finalizer\", \
             \"orphan\", \"foregroundDeletion\"}: finalizer orphan and foregroundDeletion cannot be both set"
        );
    }

    #[test]
    fn regex_error_format() {
        assert_eq!(regex_error("m", "f", &[]), "m (regex used for validation is 'f')");
        assert_eq!(regex_error("m", "f", &["a", "b"]), "m (e.g. 'a',  or 'b', regex used for validation is 'f')");
    }
}
