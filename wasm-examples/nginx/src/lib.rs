//! `nginx`: a stand-in for `image: nginx`, a static file server for GET and HEAD.
//!
//! - Files come from `/usr/share/nginx/html` (a preopened volume when one is mounted
//!   there); a directory serves its `index.html`, and a directory asked for without its
//!   trailing `/` is redirected (301) to it, as nginx does.
//! - When that directory is missing or has no `index.html`, `/` answers nginx's own
//!   "Welcome to nginx!" page (embedded below; this is Flotilla's stand-in, not nginx).
//! - `404`/`403`/`405` answer nginx-style HTML pages; other methods get `405` with
//!   `Allow: GET, HEAD`. Every response has `Server: nginx (flotilla)`.
//! - The path is percent-decoded and normalized before use, so `..` never climbs out of
//!   the root (the host's preopens enforce that too).
//! - Files are streamed in 4 KiB writes (the most one `blocking-write-and-flush` takes),
//!   never read whole.
//! - HEAD answers carry no `Content-Length`: wasi:http checks a declared length against
//!   the bytes written when the body is finished, and a HEAD body is empty.

use std::fs;
use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use wasi::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};

/// nginx's default document root.
const ROOT: &str = "/usr/share/nginx/html";
/// Largest write `blocking-write-and-flush` accepts in one call.
const CHUNK: usize = 4096;
const SERVER: &str = "nginx (flotilla)";

/// nginx's default `index.html` (nginx is BSD-2-Clause licensed; this copy is only the
/// stand-in's welcome page).
const WELCOME: &str = r#"<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
<!-- Served by Flotilla's wasm stand-in for the nginx image. -->
</body>
</html>
"#;

struct Nginx;

wasi::http::proxy::export!(Nginx);

impl wasi::exports::http::incoming_handler::Guest for Nginx {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let head = match request.method() {
            Method::Get => false,
            Method::Head => true,
            _ => return error_page(out, 405, false, &[("allow", "GET, HEAD")]),
        };
        let raw = request.path_with_query().unwrap_or_else(|| "/".to_owned());
        let raw_path = raw.split(['?', '#']).next().unwrap_or("/");
        let Some(segments) = normalize(raw_path) else {
            return error_page(out, 400, head, &[]);
        };
        let relative = segments.join("/");
        let fs_path = if relative.is_empty() { ROOT.to_owned() } else { format!("{ROOT}/{relative}") };
        match fs::metadata(&fs_path) {
            Ok(meta) if meta.is_dir() => {
                if !raw_path.ends_with('/') {
                    let location = format!("/{relative}/");
                    return error_page(out, 301, head, &[("location", &location)]);
                }
                let index = format!("{fs_path}/index.html");
                match fs::metadata(&index) {
                    Ok(meta) if meta.is_file() => serve_file(out, &index, meta, head),
                    _ if relative.is_empty() => welcome(out, head),
                    _ => error_page(out, 403, head, &[]),
                }
            }
            Ok(meta) if meta.is_file() => serve_file(out, &fs_path, meta, head),
            _ if relative.is_empty() || relative == "index.html" => welcome(out, head),
            _ => error_page(out, 404, head, &[]),
        }
    }
}

/// Percent-decodes the path and resolves `.` and `..` (never above the root); `None` for
/// an undecodable path or a NUL byte.
fn normalize(path: &str) -> Option<Vec<String>> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(decoded).ok()?;
    if text.contains('\0') || text.contains('\\') {
        return None;
    }
    let mut segments: Vec<String> = Vec::new();
    for segment in text.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other.to_owned()),
        }
    }
    Some(segments)
}

/// The `Content-Type` nginx's `mime.types` gives the extension.
fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" | "shtml" => "text/html",
        "css" => "text/css",
        "xml" => "text/xml",
        "txt" => "text/plain",
        "js" | "mjs" => "application/javascript",
        "json" => "application/json",
        "map" => "application/json",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" | "svgz" => "image/svg+xml",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "csv" => "text/csv",
        "md" => "text/markdown",
        "yaml" | "yml" => "application/yaml",
        _ => "application/octet-stream",
    }
}

/// An RFC 7231 date (`Tue, 08 Dec 2026 02:35:32 GMT`).
fn http_date(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[month as usize - 1],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Starts a response: status and headers set, body stream handed to `write`.
fn respond(
    out: ResponseOutparam,
    status: u16,
    headers: &[(&str, &str)],
    write: impl FnOnce(&wasi::io::streams::OutputStream),
) {
    let fields = Fields::new();
    let date = http_date(SystemTime::now());
    for (name, value) in [("server", SERVER), ("date", date.as_str())].iter().chain(headers) {
        fields.append(name, value.as_bytes()).expect("valid header");
    }
    let response = OutgoingResponse::new(fields);
    response.set_status_code(status).expect("valid status code");
    let body = response.body().expect("response body is taken once");
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = body.write().expect("body stream is taken once");
        write(&stream);
    }
    let _ = OutgoingBody::finish(body, None);
}

fn send(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8], head: bool, extra: &[(&str, &str)]) {
    let length = body.len().to_string();
    let mut headers = vec![("content-type", content_type)];
    if !head {
        headers.push(("content-length", length.as_str()));
    }
    headers.extend_from_slice(extra);
    respond(out, status, &headers, |stream| {
        if !head {
            for chunk in body.chunks(CHUNK) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    return;
                }
            }
        }
    });
}

fn welcome(out: ResponseOutparam, head: bool) {
    send(out, 200, "text/html", WELCOME.as_bytes(), head, &[]);
}

fn error_page(out: ResponseOutparam, status: u16, head: bool, extra: &[(&str, &str)]) {
    let reason = match status {
        301 => "Moved Permanently",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Not Allowed",
        _ => "Internal Server Error",
    };
    let page = format!(
        "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    );
    send(out, status, "text/html", page.as_bytes(), head, extra);
}

fn serve_file(out: ResponseOutparam, path: &str, meta: fs::Metadata, head: bool) {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return error_page(out, 403, head, &[]),
        Err(_) => return error_page(out, 404, head, &[]),
    };
    let length = meta.len().to_string();
    let modified = meta.modified().map(http_date).unwrap_or_default();
    let mut headers = vec![("content-type", content_type(path))];
    if !head {
        headers.push(("content-length", length.as_str()));
    }
    if !modified.is_empty() {
        headers.push(("last-modified", modified.as_str()));
    }
    headers.push(("accept-ranges", "bytes"));
    respond(out, 200, &headers, |stream| {
        if head {
            return;
        }
        let mut buf = [0u8; CHUNK];
        loop {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stream.blocking_write_and_flush(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        assert_eq!(normalize("/a/./b/../c.html"), Some(vec!["a".to_owned(), "c.html".to_owned()]));
        assert_eq!(normalize("/../../etc/passwd"), Some(vec!["etc".to_owned(), "passwd".to_owned()]));
        assert_eq!(normalize("/%2e%2e/%2E%2E/x"), Some(vec!["x".to_owned()]));
        assert_eq!(normalize("/my%20file.txt"), Some(vec!["my file.txt".to_owned()]));
        assert_eq!(normalize("/"), Some(vec![]));
        assert_eq!(normalize("/a%00b"), None);
        assert_eq!(normalize("/bad%zz"), None);
    }

    #[test]
    fn types_and_dates() {
        assert_eq!(content_type("/x/index.HTML"), "text/html");
        assert_eq!(content_type("app.js"), "application/javascript");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(UNIX_EPOCH + std::time::Duration::from_secs(1_709_210_096)),
            "Thu, 29 Feb 2024 12:34:56 GMT"
        );
    }
}
