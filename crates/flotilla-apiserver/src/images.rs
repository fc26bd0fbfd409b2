//! The image registry: `flotilla image push NAME:TAG FILE.wasm` uploads a component here
//! (`PUT /flotilla/v1/images/NAME:TAG`), nodes read it back (`GET`, the same path), and
//! `GET /flotilla/v1/images` lists what is stored. Images are files,
//! `DATA_DIR/images/NAME/TAG.wasm`, the layout the built-in node reads directly.

use crate::http::{ApiState, Body, read_body_limited};
use flotilla_api::{ApiError, Reason};
use http::{Method, Request, Response, header};
use hyper::body::Incoming;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The largest component accepted.
pub const MAX_IMAGE_BYTES: usize = 256 * 1024 * 1024;
const PREFIX: &str = "/flotilla/v1/images";

/// `NAME:TAG` (tag `latest` if absent) as the file it is stored in.
fn image_path(dir: &Path, reference: &str) -> Result<(String, PathBuf), ApiError> {
    let (name, tag) = flotilla_api::parse_image_reference(reference).map_err(ApiError::bad_request)?;
    Ok((format!("{name}:{tag}"), dir.join(name).join(format!("{tag}.wasm"))))
}

pub(crate) async fn serve(state: &ApiState, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_string();
    let reference = path.strip_prefix(PREFIX).unwrap_or_default().trim_start_matches('/').to_string();
    let dir = &state.images_dir;
    match (request.method().clone(), reference.is_empty()) {
        (Method::GET, true) => {
            let mut images = Vec::new();
            list(dir, dir, &mut images);
            images.sort();
            let builtin: Vec<_> =
                state.builtin_images.iter().map(|(name, what)| json!({"name": name, "description": what})).collect();
            let body = json!({"images": images, "builtin": builtin});
            Ok(json_response(200, &body))
        }
        (Method::GET, false) => {
            let (reference, file) = image_path(dir, &reference)?;
            let bytes = tokio::fs::read(&file)
                .await
                .map_err(|_| ApiError::new(Reason::NotFound, format!("image \"{reference}\" not found")))?;
            let mut response = Response::new(flotilla_client::full_body(bytes));
            response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/wasm"));
            Ok(response)
        }
        (Method::PUT | Method::POST, false) => {
            let (reference, file) = image_path(dir, &reference)?;
            let (_, body) = read_body_limited(request, MAX_IMAGE_BYTES).await?;
            // The header of a component (layer 1), not a core module: anything else is
            // refused here rather than failing on every node later.
            if body.len() < 8 || &body[..4] != b"\0asm" || body[6..8] != [1, 0] {
                return Err(ApiError::new(
                    Reason::Invalid,
                    format!("image \"{reference}\": the body is not a WebAssembly component (build for wasm32-wasip2)"),
                ));
            }
            let digest = sha256_hex(&body);
            write_atomically(&file, &body).await.map_err(|e| ApiError::internal(format!("storing the image: {e}")))?;
            tracing::info!(image = %reference, bytes = body.len(), "image pushed");
            Ok(json_response(
                201,
                &json!({"image": reference, "digest": format!("sha256:{digest}"), "size": body.len()}),
            ))
        }
        (method, _) => Err(ApiError::new(
            Reason::MethodNotAllowed,
            format!("{method} is not allowed on {PREFIX}: GET lists, GET/PUT NAME:TAG reads/pushes"),
        )),
    }
}

fn json_response(code: u16, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(flotilla_client::full_body(body.to_string()));
    *response.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `NAME:TAG` of every stored image under `dir`.
fn list(root: &Path, dir: &Path, images: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            list(root, &path, images);
        } else if path.extension().is_some_and(|e| e == "wasm")
            && let (Some(parent), Some(tag)) = (path.parent(), path.file_stem())
            && let Ok(name) = parent.strip_prefix(root)
        {
            images.push(format!("{}:{}", name.display(), tag.to_string_lossy()));
        }
    }
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let temporary = path.with_extension(format!("wasm.{}.tmp", uuid::Uuid::new_v4().simple()));
    tokio::fs::write(&temporary, bytes).await?;
    tokio::fs::rename(&temporary, path).await
}
