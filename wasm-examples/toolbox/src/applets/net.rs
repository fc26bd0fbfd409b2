//! `wget` and `curl` over `wasi:http/outgoing-handler` (HTTP only: the host decides what
//! a pod may reach and answers `HttpRequestDenied` otherwise). URL handling, flags,
//! output and exit codes are plain Rust; only [`fetch`] needs wasi.

use std::io::{self, Read, Write};

use super::fail;
use crate::ctx::{Ctx, err_msg};

/// A parsed `http://host[:port]/path?query`.
#[derive(Debug, PartialEq, Clone)]
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
    pub path: String,
}

impl Url {
    /// Parses a URL; no scheme means `http`. `localhost` and `127.0.0.1` without a port
    /// get the scheme's default port written out, so the host can tell them apart from
    /// cluster names.
    pub fn parse(text: &str) -> Result<Url, String> {
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_owned(), text),
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        if authority.is_empty() {
            return Err(format!("URL rejected: No host part in the URL: {text}"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("URL rejected: Port number was not a decimal number: {text}"))?;
                (host.to_owned(), Some(port))
            }
            _ => (authority.to_owned(), None),
        };
        let path = path.split('#').next().unwrap_or("");
        let path = if path.is_empty() {
            "/".to_owned()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let mut url = Url { scheme, host, port, path };
        if url.port.is_none() && matches!(url.host.as_str(), "localhost" | "127.0.0.1") {
            url.port = Some(url.default_port());
        }
        Ok(url)
    }

    pub fn default_port(&self) -> u16 {
        if self.scheme == "https" { 443 } else { 80 }
    }

    pub fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }

    /// The last path segment (`wget`'s default file name), or `index.html`.
    pub fn file_name(&self) -> String {
        let path = self.path.split('?').next().unwrap_or("");
        match path.rsplit('/').next() {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => "index.html".to_owned(),
        }
    }

    /// A `Location` header resolved against this URL.
    pub fn join(&self, location: &str) -> Result<Url, String> {
        if location.contains("://") {
            Url::parse(location)
        } else if let Some(rest) = location.strip_prefix("//") {
            Url::parse(&format!("{}://{rest}", self.scheme))
        } else if location.starts_with('/') {
            Ok(Url { path: location.to_owned(), ..self.clone() })
        } else {
            let dir = self.path.split('?').next().unwrap_or("/");
            let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
            Ok(Url { path: format!("{dir}{location}"), ..self.clone() })
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority(), self.path)
    }
}

/// Why a request got no response.
#[derive(Debug)]
#[cfg_attr(not(target_os = "wasi"), expect(dead_code, reason = "only the wasi transport fails these ways"))]
pub enum FetchError {
    /// The name did not resolve.
    Dns,
    /// No connection (refused, unreachable, or denied by the pod's egress policy).
    Connect(String),
    Timeout(String),
    Other(String),
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Box<dyn Read>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

#[cfg_attr(not(target_os = "wasi"), expect(dead_code, reason = "only the wasi transport sends headers"))]
pub struct Request {
    pub method: String,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

#[cfg(target_os = "wasi")]
mod transport {
    use std::io::{self, Read};

    use wasi::http::outgoing_handler;
    use wasi::http::types::{
        ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method, OutgoingBody,
        OutgoingRequest, Scheme,
    };
    use wasi::io::streams::{InputStream, StreamError};

    use super::{FetchError, Request, Response};

    /// Largest write `blocking-write-and-flush` accepts in one call.
    const CHUNK: usize = 4096;

    fn error(code: &ErrorCode) -> FetchError {
        match code {
            ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => FetchError::Dns,
            ErrorCode::DnsTimeout
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout => FetchError::Timeout(format!("{code:?}")),
            ErrorCode::ConnectionRefused => FetchError::Connect("Connection refused".into()),
            ErrorCode::HttpRequestDenied => FetchError::Connect("Request denied by the pod's network policy".into()),
            ErrorCode::DestinationUnavailable
            | ErrorCode::DestinationIpProhibited
            | ErrorCode::DestinationIpUnroutable => FetchError::Connect(format!("{code:?}")),
            other => FetchError::Other(format!("{other:?}")),
        }
    }

    /// The response body as a `Read`; its resources are dropped child first.
    struct Body {
        stream: Option<InputStream>,
        body: Option<IncomingBody>,
        _response: IncomingResponse,
        _future: FutureIncomingResponse,
    }

    impl Read for Body {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(stream) = &self.stream else { return Ok(0) };
            loop {
                match stream.blocking_read(buf.len().min(64 * 1024) as u64) {
                    Ok(bytes) if bytes.is_empty() => continue,
                    Ok(bytes) => {
                        buf[..bytes.len()].copy_from_slice(&bytes);
                        return Ok(bytes.len());
                    }
                    Err(StreamError::Closed) => return Ok(0),
                    Err(StreamError::LastOperationFailed(e)) => return Err(io::Error::other(e.to_debug_string())),
                }
            }
        }
    }

    impl Drop for Body {
        fn drop(&mut self) {
            drop(self.stream.take());
            if let Some(body) = self.body.take() {
                let _trailers = IncomingBody::finish(body);
            }
        }
    }

    pub fn fetch(req: &Request) -> Result<Response, FetchError> {
        let other = |what: &str| FetchError::Other(what.to_owned());
        let headers = Fields::new();
        for (name, value) in &req.headers {
            headers
                .append(&name.to_ascii_lowercase(), value.as_bytes())
                .map_err(|e| FetchError::Other(format!("header {name}: {e:?}")))?;
        }
        let request = OutgoingRequest::new(headers);
        let method = match req.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "CONNECT" => Method::Connect,
            other => Method::Other(other.to_owned()),
        };
        request.set_method(&method).map_err(|()| other("invalid method"))?;
        let scheme = match req.url.scheme.as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            s => Scheme::Other(s.to_owned()),
        };
        request.set_scheme(Some(&scheme)).map_err(|()| other("invalid scheme"))?;
        request.set_authority(Some(&req.url.authority())).map_err(|()| other("invalid authority"))?;
        request.set_path_with_query(Some(&req.url.path)).map_err(|()| other("invalid path"))?;
        let body = request.body().map_err(|()| other("request body taken twice"))?;
        // Hand the request over first: the host reads the body as it is written.
        let future = outgoing_handler::handle(request, None).map_err(|e| error(&e))?;
        {
            let stream = body.write().map_err(|()| other("request stream taken twice"))?;
            for chunk in req.body.as_deref().unwrap_or_default().chunks(CHUNK) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| FetchError::Other(format!("sending the body: {e:?}")))?;
            }
        }
        OutgoingBody::finish(body, None).map_err(|e| error(&e))?;
        let response = loop {
            match future.get() {
                Some(Ok(Ok(response))) => break response,
                Some(Ok(Err(code))) => return Err(error(&code)),
                Some(Err(())) => return Err(other("the response was already taken")),
                None => future.subscribe().block(),
            }
        };
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response.consume().map_err(|()| other("response body taken twice"))?;
        let stream = incoming.stream().map_err(|()| other("response stream taken twice"))?;
        let body = Body { stream: Some(stream), body: Some(incoming), _response: response, _future: future };
        Ok(Response { status, headers, body: Box::new(body) })
    }
}

#[cfg(not(target_os = "wasi"))]
mod transport {
    use super::{FetchError, Request, Response};

    pub fn fetch(_req: &Request) -> Result<Response, FetchError> {
        Err(FetchError::Connect("no wasi:http outside a wasm pod".into()))
    }
}

pub use transport::fetch;

/// Headers wasi:http refuses in an outgoing request (connection-level ones, and `Host`:
/// the authority is the URL's).
fn forbidden(name: &str) -> bool {
    const FORBIDDEN: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "host",
        "http2-settings",
    ];
    FORBIDDEN.iter().any(|f| f.eq_ignore_ascii_case(name.trim()))
}

/// Drops the headers wasi:http refuses, with a warning (unless `quiet`).
fn allowed_headers(
    applet: &str,
    headers: Vec<(String, String)>,
    quiet: bool,
    err: &mut dyn Write,
) -> Vec<(String, String)> {
    headers
        .into_iter()
        .filter(|(name, _)| {
            let refused = forbidden(name);
            if refused && !quiet {
                let _ = writeln!(err, "{applet}: warning: header '{name}' cannot be set from a wasm pod; ignored");
            }
            !refused
        })
        .collect()
}

/// The standard reason phrase (wasi:http carries only the code).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Sends `req`, following up to `max_redirects` redirects (0: none).
fn send(mut req: Request, max_redirects: usize) -> Result<(Url, Response), Box<(Url, FetchError)>> {
    let mut redirects = 0;
    loop {
        let response = match fetch(&req) {
            Ok(r) => r,
            Err(e) => return Err(Box::new((req.url, e))),
        };
        let location = response.header("location");
        match location {
            Some(location) if is_redirect(response.status) && redirects < max_redirects => {
                let next = match req.url.join(&location) {
                    Ok(url) => url,
                    Err(e) => return Err(Box::new((req.url, FetchError::Other(e)))),
                };
                if response.status == 303 || (matches!(response.status, 301 | 302) && req.method == "POST") {
                    req.method = "GET".into();
                    req.body = None;
                }
                req.url = next;
                redirects += 1;
            }
            _ => return Ok((req.url, response)),
        }
    }
}

pub fn curl(ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut silent = false;
    let mut show_error = false;
    let mut fail_http = false;
    let mut include = false;
    let mut head = false;
    let mut follow = false;
    let mut verbose = false;
    let mut output: Option<String> = None;
    let mut remote_name = false;
    let mut method: Option<String> = None;
    let mut data: Vec<String> = Vec::new();
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut agent = "curl/8.5.0".to_owned();
    let mut write_out: Option<String> = None;
    let mut urls = Vec::new();
    let mut i = 1;
    macro_rules! value {
        ($flag:expr) => {{
            i += 1;
            match args.get(i) {
                Some(v) => v.clone(),
                None => return fail(err, "curl", format!("option {}: requires parameter", $flag), 2),
            }
        }};
    }
    while i < args.len() {
        let arg = args[i].clone();
        match arg.as_str() {
            "--silent" => silent = true,
            "--show-error" => show_error = true,
            "--fail" => fail_http = true,
            "--include" => include = true,
            "--head" => head = true,
            "--location" => follow = true,
            "--verbose" => verbose = true,
            "--output" => output = Some(value!("--output")),
            "--remote-name" => remote_name = true,
            "--request" => method = Some(value!("--request")),
            "--data" | "--data-raw" | "--data-binary" | "--data-ascii" => data.push(value!(arg)),
            "--header" => {
                let h = value!("--header");
                if let Some((k, v)) = h.split_once(':') {
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
            }
            "--user-agent" => agent = value!("--user-agent"),
            "--write-out" => write_out = Some(value!("--write-out")),
            "--max-time" | "--connect-timeout" | "--retry" => {
                let _ = value!(arg);
            }
            "--insecure" | "--compressed" | "--no-progress-meter" | "--progress-bar" => {}
            a if a.starts_with("--") => return fail(err, "curl", format!("option {a}: is unknown"), 2),
            a if a.len() > 1 && a.starts_with('-') => {
                let chars: Vec<char> = a[1..].chars().collect();
                let mut j = 0;
                while j < chars.len() {
                    let c = chars[j];
                    let takes = "oXdHAmwu".contains(c);
                    let attached: String = chars[j + 1..].iter().collect();
                    let v = if takes {
                        if attached.is_empty() { value!(format!("-{c}")) } else { attached }
                    } else {
                        String::new()
                    };
                    match c {
                        's' => silent = true,
                        'S' => show_error = true,
                        'f' => fail_http = true,
                        'i' => include = true,
                        'I' => head = true,
                        'L' => follow = true,
                        'v' => verbose = true,
                        'k' | '#' => {}
                        'O' => remote_name = true,
                        'o' => output = Some(v),
                        'X' => method = Some(v),
                        'd' => data.push(v),
                        'H' => {
                            if let Some((k, val)) = v.split_once(':') {
                                headers.push((k.trim().to_owned(), val.trim().to_owned()));
                            }
                        }
                        'A' => agent = v,
                        'w' => write_out = Some(v),
                        'm' | 'u' => {}
                        other => return fail(err, "curl", format!("option -{other}: is unknown"), 2),
                    }
                    if takes {
                        break;
                    }
                    j += 1;
                }
            }
            _ => urls.push(arg),
        }
        i += 1;
    }
    let report = |err: &mut dyn Write, code: i32, message: String| -> i32 {
        if !silent || show_error {
            let _ = writeln!(err, "curl: ({code}) {message}");
        }
        code
    };
    if urls.is_empty() {
        let _ = writeln!(err, "curl: no URL specified\ncurl: try 'curl --help' for more information");
        return 2;
    }
    let mut body = None;
    if !data.is_empty() {
        let mut joined = Vec::new();
        for (n, d) in data.iter().enumerate() {
            if n > 0 {
                joined.push(b'&');
            }
            match d.strip_prefix('@') {
                Some(file) => match std::fs::read(ctx.resolve(file)) {
                    Ok(bytes) => joined.extend(bytes.into_iter().filter(|b| *b != b'\n' && *b != b'\r')),
                    Err(e) => {
                        let _ = writeln!(err, "Warning: Couldn't read data from file \"{file}\": {}", err_msg(&e));
                    }
                },
                None => joined.extend_from_slice(d.as_bytes()),
            }
        }
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            headers.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
        }
        body = Some(joined);
    }
    let method = method.unwrap_or_else(|| {
        if head {
            "HEAD"
        } else if body.is_some() {
            "POST"
        } else {
            "GET"
        }
        .into()
    });
    let mut headers = allowed_headers("curl", headers, silent, err);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("user-agent")) {
        headers.push(("User-Agent".into(), agent));
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept")) {
        headers.push(("Accept".into(), "*/*".into()));
    }
    let mut status = 0;
    for text in &urls {
        let url = match Url::parse(text) {
            Ok(url) => url,
            Err(message) => {
                status = report(err, 3, message);
                continue;
            }
        };
        if url.scheme != "http" && url.scheme != "https" {
            status = report(err, 1, format!("Protocol \"{}\" not supported", url.scheme));
            continue;
        }
        if verbose {
            let _ = writeln!(err, "> {method} {} HTTP/1.1\n> Host: {}", url.path, url.authority());
            for (k, v) in &headers {
                let _ = writeln!(err, "> {k}: {v}");
            }
            let _ = writeln!(err, ">");
        }
        let request = Request { method: method.clone(), url, headers: headers.clone(), body: body.clone() };
        let (final_url, mut response) = match send(request, if follow { 50 } else { 0 }) {
            Ok(pair) => pair,
            Err(failure) => {
                let (url, error) = *failure;
                let (host, port) = (url.host.clone(), url.port.unwrap_or(url.default_port()));
                status = match error {
                    FetchError::Dns => report(err, 6, format!("Could not resolve host: {host}")),
                    FetchError::Connect(why) => {
                        report(err, 7, format!("Failed to connect to {host} port {port}: {why}"))
                    }
                    FetchError::Timeout(why) => report(err, 28, format!("Operation timed out: {why}")),
                    FetchError::Other(why) => {
                        report(err, 56, format!("Failure when receiving data from the peer: {why}"))
                    }
                };
                continue;
            }
        };
        if fail_http && response.status >= 400 {
            status = report(err, 22, format!("The requested URL returned error: {}", response.status));
            if let Some(format) = &write_out {
                let _ = out.write_all(write_out_text(format, &response, &final_url, 0).as_bytes());
            }
            continue;
        }
        let mut head_text = format!("HTTP/1.1 {} {}\r\n", response.status, reason(response.status));
        for (k, v) in &response.headers {
            head_text.push_str(&format!("{k}: {}\r\n", String::from_utf8_lossy(v)));
        }
        head_text.push_str("\r\n");
        if verbose {
            for line in head_text.lines() {
                let _ = writeln!(err, "< {line}");
            }
        }
        let target = if remote_name { Some(final_url.file_name()) } else { output.clone() };
        let mut downloaded = 0;
        let result = (|| -> io::Result<()> {
            let mut file;
            let mut null = io::sink();
            let sink: &mut dyn Write = match target.as_deref() {
                None | Some("-") => &mut *out,
                Some("/dev/null") => &mut null,
                Some(name) => {
                    file = io::BufWriter::new(std::fs::File::create(ctx.resolve(name))?);
                    &mut file
                }
            };
            if include || head {
                sink.write_all(head_text.as_bytes())?;
            }
            if method != "HEAD" {
                downloaded = io::copy(&mut response.body, sink)?;
            }
            sink.flush()
        })();
        if let Some(format) = &write_out {
            let _ = out.write_all(write_out_text(format, &response, &final_url, downloaded).as_bytes());
        }
        if let Err(e) = result {
            status = match target {
                Some(name) if name != "-" => {
                    report(err, 23, format!("Failure writing output to destination: {name}: {}", err_msg(&e)))
                }
                _ => report(err, 56, format!("Failure when receiving data from the peer: {}", err_msg(&e))),
            };
        }
    }
    status
}

/// `curl -w`: `%{http_code}`, `%{response_code}`, `%{size_download}`,
/// `%{url_effective}`, `%{content_type}`, and `\n`/`\t`.
fn write_out_text(format: &str, response: &Response, url: &Url, downloaded: u64) -> String {
    format
        .replace("%{http_code}", &format!("{:03}", response.status))
        .replace("%{response_code}", &format!("{:03}", response.status))
        .replace("%{size_download}", &downloaded.to_string())
        .replace("%{url_effective}", &url.to_string())
        .replace("%{content_type}", &response.header("content-type").unwrap_or_default())
        .replace("\\n", "\n")
        .replace("\\t", "\t")
}

pub fn wget(ctx: &mut Ctx, args: &[String], _stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut quiet = false;
    let mut server = false;
    let mut output: Option<String> = None;
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut urls = Vec::new();
    let mut spider = false;
    let mut i = 1;
    while i < args.len() {
        let arg = &args[i];
        if let Some(v) = arg.strip_prefix("--header=") {
            if let Some((k, val)) = v.split_once(':') {
                headers.push((k.trim().to_owned(), val.trim().to_owned()));
            }
        } else if let Some(v) = arg.strip_prefix("--output-document=") {
            output = Some(v.to_owned());
        } else if arg == "--header"
            || arg == "-O"
            || arg == "--output-document"
            || arg == "-T"
            || arg == "--timeout"
            || arg == "-U"
            || arg == "-t"
        {
            i += 1;
            let Some(v) = args.get(i) else {
                return fail(err, "wget", format!("option requires an argument -- '{arg}'"), 1);
            };
            match arg.as_str() {
                "--header" => {
                    if let Some((k, val)) = v.split_once(':') {
                        headers.push((k.trim().to_owned(), val.trim().to_owned()));
                    }
                }
                "-O" | "--output-document" => output = Some(v.clone()),
                "-U" => headers.push(("User-Agent".into(), v.clone())),
                _ => {}
            }
        } else if arg == "--spider" {
            spider = true;
        } else if arg == "--quiet" {
            quiet = true;
        } else if arg.starts_with("--") {
            // --no-check-certificate and friends: accepted, nothing to do.
        } else if arg.len() > 1 && arg.starts_with('-') {
            // A bundle like `-qO-`: `O` takes the rest of it, or the next argument.
            let rest: Vec<char> = arg[1..].chars().collect();
            for (n, c) in rest.iter().enumerate() {
                match c {
                    'q' => quiet = true,
                    'S' => server = true,
                    's' => spider = true,
                    'c' | 'n' | 'v' => {}
                    'O' | 'T' | 'U' | 't' => {
                        let attached: String = rest[n + 1..].iter().collect();
                        let value = if attached.is_empty() {
                            i += 1;
                            match args.get(i) {
                                Some(v) => v.clone(),
                                None => return fail(err, "wget", format!("option requires an argument -- '{c}'"), 1),
                            }
                        } else {
                            attached
                        };
                        match c {
                            'O' => output = Some(value),
                            'U' => headers.push(("User-Agent".into(), value)),
                            _ => {}
                        }
                        break;
                    }
                    other => return fail(err, "wget", format!("invalid option -- '{other}'"), 1),
                }
            }
        } else {
            urls.push(arg.clone());
        }
        i += 1;
    }
    let Some(text) = urls.first() else {
        return fail(err, "wget", "missing URL\nUsage: wget [-qS] [-O FILE] [--header 'K: V'] URL", 1);
    };
    let url = match Url::parse(text) {
        Ok(url) => url,
        Err(e) => return fail(err, "wget", e, 1),
    };
    let mut headers = allowed_headers("wget", headers, quiet, err);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("user-agent")) {
        headers.push(("User-Agent".into(), "Wget".into()));
    }
    if !quiet {
        let _ = writeln!(err, "Connecting to {} ({}:{})", url.host, url.host, url.port.unwrap_or(url.default_port()));
    }
    let request = Request { method: if spider { "HEAD" } else { "GET" }.into(), url, headers, body: None };
    let (final_url, mut response) = match send(request, 20) {
        Ok(pair) => pair,
        Err(failure) => {
            let (url, error) = *failure;
            let host = url.host;
            return match error {
                FetchError::Dns => fail(err, "wget", format!("bad address '{host}'"), 4),
                FetchError::Connect(why) => {
                    fail(err, "wget", format!("can't connect to remote host ({host}): {why}"), 4)
                }
                FetchError::Timeout(why) => fail(err, "wget", format!("download timed out ({why})"), 4),
                FetchError::Other(why) => fail(err, "wget", format!("error getting response: {why}"), 4),
            };
        }
    };
    if server {
        let _ = writeln!(err, "  HTTP/1.1 {} {}", response.status, reason(response.status));
        for (k, v) in &response.headers {
            let _ = writeln!(err, "  {k}: {}", String::from_utf8_lossy(v));
        }
    }
    if response.status >= 400 {
        return fail(
            err,
            "wget",
            format!("server returned error: HTTP/1.1 {} {}", response.status, reason(response.status)),
            8,
        );
    }
    if spider {
        if !quiet {
            let _ = writeln!(err, "remote file exists");
        }
        return 0;
    }
    let name = output.unwrap_or_else(|| final_url.file_name());
    let result = if name == "-" {
        io::copy(&mut response.body, out).map(|_| ())
    } else if name == "/dev/null" {
        io::copy(&mut response.body, &mut io::sink()).map(|_| ())
    } else {
        if !quiet {
            let _ = writeln!(err, "saving to '{name}'");
        }
        std::fs::File::create(ctx.resolve(&name)).and_then(|file| {
            let mut file = io::BufWriter::new(file);
            io::copy(&mut response.body, &mut file)?;
            file.flush()
        })
    };
    match result {
        Ok(()) => {
            if !quiet && name != "-" {
                let _ = writeln!(err, "'{name}' saved");
            }
            0
        }
        Err(e) => fail(err, "wget", format!("{name}: {}", err_msg(&e)), 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("localhost/x?y=1").unwrap();
        assert_eq!((u.scheme.as_str(), u.authority(), u.path.as_str()), ("http", "localhost:80".into(), "/x?y=1"));
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.authority(), u.path.as_str()), ("127.0.0.1:8080".into(), "/"));
        let u = Url::parse("http://backend.default.svc/api/v1/").unwrap();
        assert_eq!((u.authority(), u.file_name()), ("backend.default.svc".into(), "index.html".into()));
        assert_eq!(Url::parse("http://h/a/b.txt").unwrap().file_name(), "b.txt");
        assert_eq!(Url::parse("http://h/a/b").unwrap().join("c").unwrap().path, "/a/c");
        assert_eq!(Url::parse("http://h/a/b").unwrap().join("/z").unwrap().path, "/z");
        assert!(Url::parse("http://h:x/").is_err());
        assert!(forbidden("Host") && forbidden(" connection") && !forbidden("x-api-key"));
        let response = Response {
            status: 204,
            headers: vec![("content-type".into(), b"text/plain".to_vec())],
            body: Box::new(std::io::empty()),
        };
        let url = Url::parse("http://h:8080/p").unwrap();
        assert_eq!(
            write_out_text("%{http_code} %{size_download} %{content_type} %{url_effective}\\n", &response, &url, 7),
            "204 7 text/plain http://h:8080/p\n"
        );
    }
}
