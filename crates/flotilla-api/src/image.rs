//! Image references: what a container's `image:` names in Flotilla's image store.

use std::path::{Component, Path};

/// `NAME[:TAG]` (tag `latest` when absent; a digest pin `@sha256:…` is ignored) split
/// into name and tag, each safe to use as a relative path (`NAME/TAG.wasm`). A registry
/// host in the name may carry a port (`localhost:5000/app`); a tag has no `:` or `/`.
pub fn parse_image_reference(image: &str) -> Result<(&str, &str), String> {
    let trimmed = image.trim();
    let image = trimmed.split('@').next().unwrap_or(trimmed);
    let (name, tag) = match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    };
    let valid = |s: &str, extra: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(c))
            && Path::new(s).components().all(|c| matches!(c, Component::Normal(_)))
    };
    if !valid(name, "/:") || !valid(tag, "") {
        return Err(format!(
            "image \"{trimmed}\" is not a valid reference: want NAME[:TAG] of letters, digits, '.', '_', '-' and '/' \
             (or file:///path.wasm in a pod)"
        ));
    }
    Ok((name, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_like_image_names() {
        assert_eq!(parse_image_reference("hello-http"), Ok(("hello-http", "latest")));
        assert_eq!(parse_image_reference("hello-http:1"), Ok(("hello-http", "1")));
        assert_eq!(parse_image_reference("ghcr.io/org/app:v2"), Ok(("ghcr.io/org/app", "v2")));
        assert_eq!(parse_image_reference("localhost:5000/app"), Ok(("localhost:5000/app", "latest")));
        assert_eq!(parse_image_reference("app:v1@sha256:abc"), Ok(("app", "v1")));
        for bad in ["../etc/passwd", "a:../../x", "", "a b", "/abs"] {
            assert!(parse_image_reference(bad).is_err(), "{bad}");
        }
    }
}
