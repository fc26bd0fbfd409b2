//! The streaming subresources on the wire — `pods/exec`, `pods/attach` and
//! `pods/portforward` — at both ends of a WebSocket: the HTTP/1.1 upgrade handshake and
//! kube's channel protocols over it, as kube-apiserver and kubelet speak them.
//!
//! - **Exec and attach** (`v5.channel.k8s.io`, `v4.channel.k8s.io`): each binary message
//!   is one channel byte and its data: 0 stdin, 1 stdout, 2 stderr, 3 the error channel
//!   (one `Status` when the command ends: `Success`, or `NonZeroExitCode` with an
//!   `ExitCode` cause, as kubelet writes it), 4 terminal resize (`{"Width":…,"Height":…}`);
//!   v5 adds 255, a stream's close (`[255, 0]` closes stdin). [`serve_exec`] is the serving
//!   end (the API server facing kubectl, an agent facing the API server), [`exec_client`]
//!   the calling end (the API server reaching an agent, `flotilla exec`).
//! - **Port-forward** (`v4.channel.k8s.io` with `?ports=`): for the i-th port, channel 2i
//!   carries data and 2i+1 errors, and each channel's first message is its port number
//!   (two bytes, little-endian). [`serve_port_forward`] and [`port_forward_client`]. The
//!   SPDY tunnel kubectl 1.31+ uses (`SPDY/3.1+portforward.k8s.io`) is `flotilla-spdy`'s;
//!   this module only names it ([`SPDY_TUNNEL`]).
//!
//! What flows is bounded: a message is at most [`MAX_MESSAGE`] bytes, outgoing messages
//! wait in a short queue (a slow reader slows the writer, nothing piles up), and a
//! malformed message ends the session, never the process.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use flotilla_api::ApiError;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{HeaderMap, HeaderValue, Response, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// kubectl 1.30+'s exec protocol: v4 plus stream close.
pub const V5_CHANNEL: &str = "v5.channel.k8s.io";
/// Exec with the exit status as a `Status` on the error channel.
pub const V4_CHANNEL: &str = "v4.channel.k8s.io";
/// kubectl 1.31+'s port-forward: a SPDY/3.1 session tunnelled in binary messages.
pub const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// The protocols exec and attach are served with, in the server's preference.
pub const EXEC_PROTOCOLS: &[&str] = &[V5_CHANNEL, V4_CHANNEL];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// The largest message read or written (data is sent in chunks of at most this).
pub const MAX_MESSAGE: usize = 1 << 20;
/// How much of a stream is read at once before it is sent.
const CHUNK: usize = 32 * 1024;
/// The error channel's `Status` is small; more is a broken peer.
const MAX_STATUS: usize = 64 * 1024;
/// How much of a command or error a status message quotes.
const MAX_MESSAGE_TEXT: usize = 4096;

/// A connection upgraded from HTTP/1.1.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;
/// A WebSocket on an upgraded connection.
pub type WebSocket = WebSocketStream<Upgraded>;

/// Any byte stream both ways (a pod's port, an upgraded connection).
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A boxed future, as the port-forward connector returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

fn config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE + 1)).max_frame_size(Some(MAX_MESSAGE + 1))
}

// ---------------------------------------------------------------------------------------
// The handshake

/// Whether `headers` ask for a WebSocket (`Connection: Upgrade`, `Upgrade: websocket`).
pub fn is_websocket(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// The first protocol of the client's `Sec-WebSocket-Protocol` list that is `supported`.
pub fn negotiate(headers: &HeaderMap, supported: &[&'static str]) -> Option<&'static str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|offered| supported.iter().find(|s| s.eq_ignore_ascii_case(offered)).copied())
}

/// The `101 Switching Protocols` answer to a WebSocket request, speaking `protocol`
/// (`None`: no subprotocol, when the client offered none).
pub fn accept<B>(headers: &HeaderMap, protocol: Option<&str>, body: B) -> Result<Response<B>, ApiError> {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("a WebSocket upgrade needs a Sec-WebSocket-Key header"))?;
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v.as_bytes() != b"13") {
        return Err(ApiError::bad_request("unsupported Sec-WebSocket-Version: this server speaks version 13"));
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = Response::new(body);
    *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|_| ApiError::internal("the accept key is not a header value"))?,
    );
    if let Some(protocol) = protocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(protocol).map_err(|_| ApiError::internal("the protocol is not a header value"))?,
        );
    }
    Ok(response)
}

/// The serving end's WebSocket on a connection the server upgraded.
pub async fn server_socket(upgraded: hyper::upgrade::Upgraded) -> WebSocket {
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config())).await
}

/// The calling end's WebSocket on a connection the client upgraded.
pub async fn client_socket(upgraded: hyper::upgrade::Upgraded) -> WebSocket {
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, Some(config())).await
}

/// The headers of a WebSocket request offering `protocols`.
pub fn request_headers(protocols: &[&str]) -> Vec<(header::HeaderName, String)> {
    vec![
        (header::CONNECTION, "Upgrade".into()),
        (header::UPGRADE, "websocket".into()),
        (header::SEC_WEBSOCKET_VERSION, "13".into()),
        (header::SEC_WEBSOCKET_KEY, tokio_tungstenite::tungstenite::handshake::client::generate_key()),
        (header::SEC_WEBSOCKET_PROTOCOL, protocols.join(", ")),
    ]
}

// ---------------------------------------------------------------------------------------
// Exec and attach

/// What an exec or attach asks for (`command=…&stdin=…&stdout=…&stderr=…&tty=…&container=…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// The container; the pod's only (or first) one when `None`.
    pub container: Option<String>,
    /// argv (empty for attach).
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    /// The query string of these options, as kubectl writes it.
    pub fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for arg in &self.command {
            query.append_pair("command", arg);
        }
        if let Some(container) = &self.container {
            query.append_pair("container", container);
        }
        for (key, on) in [("stdin", self.stdin), ("stdout", self.stdout), ("stderr", self.stderr), ("tty", self.tty)] {
            if on {
                query.append_pair(key, "true");
            }
        }
        query.finish()
    }
}

/// A terminal's size, as kubectl sends it on the resize channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// How an exec ended, as the error channel says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecExit {
    /// Exit code 0.
    Success,
    /// Another exit code.
    Code(i32),
    /// The command could not run, or was killed (a trap, out of memory): the message.
    Failed(String),
}

impl ExecExit {
    /// The code a shell would report (`Failed` is 1... as kubectl exits for an error).
    pub fn code(&self) -> i32 {
        match self {
            ExecExit::Success => 0,
            ExecExit::Code(code) => *code,
            ExecExit::Failed(_) => 1,
        }
    }

    /// The `Status` kubelet writes on the error channel for this end of `command`.
    pub fn to_status(&self, command: &[String]) -> Value {
        match self {
            ExecExit::Success => json!({"metadata": {}, "status": "Success"}),
            ExecExit::Code(code) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!(
                    "command terminated with non-zero exit code: error executing command {}, exit code {code}",
                    quoted_command(command)
                ),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            ExecExit::Failed(message) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("error executing command in container: {}", flotilla_api::limits::truncate(message, MAX_MESSAGE_TEXT)),
                "reason": "InternalError",
                "code": 500,
            }),
        }
    }

    /// Reads the error channel's `Status` back (`None`: the channel said nothing, the
    /// connection ended first).
    pub fn from_status(bytes: &[u8]) -> Option<ExecExit> {
        if bytes.is_empty() {
            return None;
        }
        let Ok(status) = serde_json::from_slice::<Value>(bytes) else {
            return Some(ExecExit::Failed(String::from_utf8_lossy(bytes).into_owned()));
        };
        if status["status"] == "Success" {
            return Some(ExecExit::Success);
        }
        let code = (status["reason"] == "NonZeroExitCode")
            .then(|| status["details"]["causes"].as_array())
            .flatten()
            .into_iter()
            .flatten()
            .find(|cause| cause["reason"] == "ExitCode")
            .and_then(|cause| cause["message"].as_str()?.parse().ok());
        Some(match code {
            Some(code) => ExecExit::Code(code),
            None => ExecExit::Failed(status["message"].as_str().unwrap_or("the command failed").to_string()),
        })
    }
}

/// `[sh -c exit 3]`, as Go prints a string slice.
fn quoted_command(command: &[String]) -> String {
    let text = format!("[{}]", command.join(" "));
    flotilla_api::limits::truncate(&text, MAX_MESSAGE_TEXT).into_owned()
}

/// A reader of an exec's output.
pub type ExecOutput = Box<dyn AsyncRead + Send + Unpin>;
/// A writer to an exec's stdin.
pub type ExecInput = Box<dyn AsyncWrite + Send + Unpin>;

/// A running exec's streams, from whichever end holds the command: the node running it,
/// or a WebSocket to one. Dropping it ends the exec.
pub struct ExecSession {
    /// Writes to the command's stdin; shut down (or dropped) is its EOF.
    pub stdin: Option<ExecInput>,
    pub stdout: Option<ExecOutput>,
    pub stderr: Option<ExecOutput>,
    /// Terminal sizes, for a `tty` exec.
    pub resize: Option<mpsc::Sender<TerminalSize>>,
    /// Resolves when the command has ended (its output may still be in the readers).
    pub exit: BoxFuture<ExecExit>,
}

impl ExecSession {
    /// A session with no streams yet, ending at once with success: the caller fills
    /// in what the options ask for.
    pub fn without_streams() -> Self {
        ExecSession {
            stdin: None,
            stdout: None,
            stderr: None,
            resize: None,
            exit: Box::pin(async { ExecExit::Success }),
        }
    }
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish_non_exhaustive()
    }
}

/// The exec options of a request's query (`command` repeated), checked as kube-apiserver
/// checks them: at least one stream, no stderr with a terminal.
pub fn exec_options(pairs: &[(String, String)], attach: bool) -> Result<ExecOptions, ApiError> {
    let flag = |key: &str| -> Result<bool, ApiError> {
        match pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str()) {
            None => Ok(false),
            Some("true" | "1" | "True") => Ok(true),
            Some("false" | "0" | "False" | "") => Ok(false),
            Some(other) => Err(ApiError::bad_request(format!(
                "{key}: invalid value {:?}: want true or false",
                flotilla_api::limits::truncate(other, flotilla_api::limits::MAX_QUOTED_VALUE_BYTES)
            ))),
        }
    };
    let options = ExecOptions {
        container: pairs.iter().find(|(k, _)| k == "container").map(|(_, v)| v.clone()).filter(|c| !c.is_empty()),
        command: pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect(),
        stdin: flag("stdin")?,
        stdout: flag("stdout")?,
        stderr: flag("stderr")?,
        tty: flag("tty")?,
    };
    if !attach && options.command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    if !(options.stdin || options.stdout || options.stderr) {
        return Err(ApiError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
    }
    if options.tty && options.stderr {
        // kubectl sends `stderr=false` with a terminal: a terminal has one output stream.
        return Err(ApiError::bad_request("stderr must be false when tty is true: a terminal merges it into stdout"));
    }
    Ok(options)
}

/// Serves `session` to the client at the other end of `socket`, speaking `protocol`
/// (one of [`EXEC_PROTOCOLS`]): stdin and resizes in, stdout and stderr out, the exit
/// as a `Status` on the error channel, then a close. Returns when the command has ended
/// and its output is sent, or when the client is gone (the session is then dropped,
/// which ends the command).
pub async fn serve_exec<S>(socket: WebSocketStream<S>, protocol: &str, session: ExecSession, command: Vec<String>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let v5 = protocol == V5_CHANNEL;
    let (sink, mut incoming) = socket.split();
    let (out, outgoing) = mpsc::channel::<Message>(8);
    let writer = send_all(sink, outgoing);
    let ExecSession { stdin, stdout, stderr, resize, exit } = session;
    let pumps = async move {
        let (_, _, exit) = tokio::join!(pump(stdout, Some(STDOUT), &out), pump(stderr, Some(STDERR), &out), exit);
        let status = serde_json::to_vec(&exit.to_status(&command)).unwrap_or_default();
        let _ = out.send(channel_message(ERROR, &status)).await;
        let _ = out.send(normal_close()).await;
    };
    let reader = async {
        let mut stdin = stdin;
        let mut closed = false;
        while let Some(Ok(message)) = incoming.next().await {
            let data = match received(message) {
                Received::Data(data) => data,
                Received::End => {
                    closed = true;
                    break;
                }
                Received::Skip => continue,
            };
            let Some((&channel, payload)) = data.split_first() else { continue };
            match channel {
                STDIN => {
                    if let Some(writer) = stdin.as_mut()
                        && writer.write_all(payload).await.and(writer.flush().await).is_err()
                    {
                        stdin = None;
                    }
                }
                RESIZE => {
                    if let (Some(resize), Ok(size)) = (&resize, serde_json::from_slice::<TerminalSize>(payload)) {
                        let _ = resize.try_send(size);
                    }
                }
                CLOSE if v5 && payload == [STDIN] => {
                    if let Some(mut writer) = stdin.take() {
                        let _ = writer.shutdown().await;
                    }
                }
                _ => {}
            }
        }
        // A client that closed (v4 has no other way to end stdin) still reads the
        // output to the end; one that is gone ends the session, and so the command.
        if closed {
            drop(stdin);
            std::future::pending::<()>().await
        }
    };
    tokio::select! {
        ((), ()) = async { tokio::join!(writer, pumps) } => {}
        () = reader => {}
    }
}

/// Copies `reader` into binary messages on `channel` (or plain ones, no channel byte, for
/// a tunnel) until its EOF; answers whether it got there (false: the socket went first).
async fn pump<R: AsyncRead + Unpin>(reader: Option<R>, channel: Option<u8>, out: &mpsc::Sender<Message>) -> bool {
    let Some(mut reader) = reader else { return true };
    let mut buffer = vec![0; CHUNK];
    loop {
        let n = match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return true,
            Ok(n) => n,
        };
        let message = match channel {
            Some(channel) => channel_message(channel, &buffer[..n]),
            None => Message::Binary(Bytes::copy_from_slice(&buffer[..n])),
        };
        if out.send(message).await.is_err() {
            return false;
        }
    }
}

/// What a received message carries: its bytes (binary, or text as the Python client
/// sends what it writes as `str`), the end (a close), or nothing of interest (pings).
enum Received {
    Data(Bytes),
    End,
    Skip,
}

fn received(message: Message) -> Received {
    match message {
        Message::Binary(data) => Received::Data(data),
        Message::Text(text) => Received::Data(Bytes::from(text)),
        Message::Close(_) => Received::End,
        _ => Received::Skip,
    }
}

/// Sends what `outgoing` receives, then a normal close, until every sender is gone or
/// the peer is.
async fn send_all<S>(mut sink: SplitSink<WebSocketStream<S>, Message>, mut outgoing: mpsc::Receiver<Message>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = outgoing.recv().await {
        if sink.send(message).await.is_err() {
            return;
        }
    }
    let _ = sink.send(normal_close()).await;
    let _ = sink.close().await;
}

/// A close frame with 1000 (normal closure): client-go's WebSocket reader takes only
/// that as the end of the streams, any other (1005, no status, included) as an error.
fn normal_close() -> Message {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))
}

fn channel_message(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::Binary(Bytes::from(bytes))
}

/// The calling end of an exec on `socket` (speaking `protocol`): an [`ExecSession`]
/// whose streams are the socket's channels. Its `exit` resolves when the socket closes,
/// with the error channel's `Status`.
pub fn exec_client<S>(socket: WebSocketStream<S>, protocol: &str, options: &ExecOptions) -> ExecSession
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let v5 = protocol == V5_CHANNEL;
    let (sink, mut incoming) = socket.split();
    let (out, outgoing) = mpsc::channel::<Message>(8);
    let (stdin_write, stdin_read) = tokio::io::duplex(CHUNK);
    let (stdout_write, stdout_read) = tokio::io::duplex(CHUNK * 2);
    let (stderr_write, stderr_read) = tokio::io::duplex(CHUNK * 2);
    let (resize, mut resizes) = mpsc::channel::<TerminalSize>(4);
    let (exited, exit) = oneshot::channel();
    // Writes: stdin and resizes become messages.
    tokio::spawn(send_all(sink, outgoing));
    let send_stdin = options.stdin;
    let stdin_out = out.clone();
    tokio::spawn(async move {
        if send_stdin && pump(Some(stdin_read), Some(STDIN), &stdin_out).await && v5 {
            let _ = stdin_out.send(Message::Binary(Bytes::from_static(&[CLOSE, STDIN]))).await;
        }
    });
    let resize_out = out.clone();
    tokio::spawn(async move {
        while let Some(size) = resizes.recv().await {
            let body = serde_json::to_vec(&size).unwrap_or_default();
            if resize_out.send(channel_message(RESIZE, &body)).await.is_err() {
                return;
            }
        }
    });
    // Reads: channels into the output pipes; the error channel into the exit.
    tokio::spawn(async move {
        let (mut stdout_write, mut stderr_write) = (Some(stdout_write), Some(stderr_write));
        let mut status = Vec::new();
        while let Some(Ok(message)) = incoming.next().await {
            let data = match received(message) {
                Received::Data(data) => data,
                Received::End => break,
                Received::Skip => continue,
            };
            let Some((&channel, payload)) = data.split_first() else { continue };
            let target = match channel {
                STDOUT => &mut stdout_write,
                STDERR => &mut stderr_write,
                ERROR => {
                    if status.len() + payload.len() <= MAX_STATUS {
                        status.extend_from_slice(payload);
                    }
                    continue;
                }
                _ => continue,
            };
            // A reader that went away drops its stream, not the session.
            if let Some(writer) = target.as_mut()
                && writer.write_all(payload).await.is_err()
            {
                *target = None;
            }
        }
        drop((stdout_write, stderr_write, out));
        let exit = ExecExit::from_status(&status)
            .unwrap_or_else(|| ExecExit::Failed("the connection ended before the command's exit status".into()));
        let _ = exited.send(exit);
    });
    ExecSession {
        stdin: options.stdin.then(|| Box::new(stdin_write) as ExecInput),
        stdout: options.stdout.then(|| Box::new(stdout_read) as ExecOutput),
        stderr: options.stderr.then(|| Box::new(stderr_read) as ExecOutput),
        resize: options.tty.then_some(resize),
        exit: Box::pin(async move {
            exit.await.unwrap_or_else(|_| ExecExit::Failed("the exec session ended without a status".into()))
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Port-forward

/// The ports of a port-forward request (`ports=80,8080`, or `ports` repeated), checked.
pub fn port_forward_ports(pairs: &[(String, String)]) -> Result<Vec<u16>, ApiError> {
    let mut ports = Vec::new();
    for value in pairs.iter().filter(|(k, _)| k == "ports").map(|(_, v)| v) {
        for text in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let port = text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "ports: invalid port {:?}: want a number from 1 to 65535",
                    flotilla_api::limits::truncate(text, flotilla_api::limits::MAX_QUOTED_VALUE_BYTES)
                ))
            })?;
            if ports.len() >= 64 {
                return Err(ApiError::bad_request("ports: at most 64 ports per connection"));
            }
            ports.push(port);
        }
    }
    Ok(ports)
}

/// Serves a `v4.channel.k8s.io` port-forward: for each of `ports`, one connection from
/// `connect(port)`, its bytes on channel 2i both ways and any error as text on 2i+1.
/// Returns when every connection has ended or the client is gone.
pub async fn serve_port_forward<C>(socket: WebSocket, ports: Vec<u16>, connect: C)
where
    C: Fn(u16) -> BoxFuture<Result<Box<dyn Duplex>, String>>,
{
    let (sink, mut incoming) = socket.split();
    let (out, outgoing) = mpsc::channel::<Message>(8);
    let writer = send_all(sink, outgoing);
    // Each channel first says its port.
    for (i, port) in ports.iter().enumerate() {
        for channel in [2 * i, 2 * i + 1] {
            let _ = out.send(channel_message(channel as u8, &port.to_le_bytes())).await;
        }
    }
    let mut to_pod = Vec::new();
    let mut forwards = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        to_pod.push(Some(tx));
        let out = out.clone();
        let connecting = connect(port);
        forwards.push(async move {
            let connection = match connecting.await {
                Ok(connection) => connection,
                Err(error) => {
                    let _ = out.send(channel_message((2 * i + 1) as u8, error.as_bytes())).await;
                    return;
                }
            };
            let (mut read, mut write) = tokio::io::split(connection);
            let upstream = async {
                while let Some(bytes) = rx.recv().await {
                    if write.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                let _ = write.shutdown().await;
            };
            let downstream = async {
                pump(Some(&mut read), Some((2 * i) as u8), &out).await;
            };
            // The pod's side ending ends the connection (kubelet closes the stream then);
            // the client's side ending only half-closes it.
            tokio::select! {
                () = async { upstream.await; std::future::pending::<()>().await } => {}
                () = downstream => {}
            }
        });
    }
    drop(out);
    let all = async {
        futures_util::future::join_all(forwards).await;
    };
    let reader = async {
        while let Some(Ok(message)) = incoming.next().await {
            let data = match received(message) {
                Received::Data(data) => data,
                Received::End => break,
                Received::Skip => continue,
            };
            let Some((&channel, payload)) = data.split_first() else { continue };
            let index = usize::from(channel / 2);
            if channel % 2 == 0
                && let Some(slot) = to_pod.get_mut(index)
                && let Some(tx) = slot.as_ref()
                && tx.send(Bytes::copy_from_slice(payload)).await.is_err()
            {
                *slot = None;
            }
        }
        to_pod.clear();
        std::future::pending::<()>().await
    };
    tokio::select! {
        ((), ()) = async { tokio::join!(all, writer) } => {}
        () = reader => {}
    }
}

/// The calling end of a one-port `v4.channel.k8s.io` port-forward on `socket`: a byte
/// stream to the pod's port (an error on the error channel ends it with that message).
pub fn port_forward_client(socket: WebSocket) -> impl Duplex {
    let (sink, mut incoming) = socket.split();
    let (local, remote) = tokio::io::duplex(CHUNK * 2);
    let (remote_read, mut remote_write) = tokio::io::split(remote);
    let (out, outgoing) = mpsc::channel(8);
    tokio::spawn(send_all(sink, outgoing));
    tokio::spawn(async move { pump(Some(remote_read), Some(0), &out).await });
    tokio::spawn(async move {
        let mut seen = [false; 2];
        while let Some(Ok(message)) = incoming.next().await {
            let data = match received(message) {
                Received::Data(data) => data,
                Received::End => break,
                Received::Skip => continue,
            };
            let Some((&channel, payload)) = data.split_first() else { continue };
            let Some(first) = seen.get_mut(usize::from(channel)) else { continue };
            if !*first {
                // The port number each channel starts with.
                *first = true;
                continue;
            }
            if channel == 1 {
                tracing::debug!(error = %String::from_utf8_lossy(payload), "port-forward error");
                break;
            }
            if remote_write.write_all(payload).await.is_err() {
                break;
            }
        }
        let _ = remote_write.shutdown().await;
    });
    local
}

// ---------------------------------------------------------------------------------------
// Serving an upgrade request

/// The `(key, value)` pairs of a request's query, `command` repeated as it comes.
pub fn query_pairs<B>(request: &http::Request<B>) -> Vec<(String, String)> {
    form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()).into_owned().collect()
}

/// Answers a `pods/exec` or `pods/attach` request (`attach`: no command): checks the
/// upgrade and the options, starts the session with `start` — so that a missing pod or
/// container is a plain HTTP `Status`, as kubectl shows it — then switches protocols
/// and serves the session on the WebSocket in a task of its own.
pub async fn upgrade_exec<F>(
    mut request: http::Request<hyper::body::Incoming>,
    attach: bool,
    start: impl FnOnce(ExecOptions) -> F,
) -> Result<Response<crate::Body>, ApiError>
where
    F: Future<Output = Result<ExecSession, ApiError>>,
{
    let protocol = websocket_protocol(request.headers(), EXEC_PROTOCOLS)?;
    let options = exec_options(&query_pairs(&request), attach)?;
    let command = options.command.clone();
    let session = start(options).await?;
    let response = accept(request.headers(), Some(protocol), crate::empty_body())?;
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => serve_exec(server_socket(upgraded).await, protocol, session, command).await,
            Err(error) => tracing::debug!(%error, "the exec upgrade failed"),
        }
    });
    Ok(response)
}

/// Answers a `v4.channel.k8s.io` port-forward request: one connection per port of
/// `?ports=`, each made by `connect` once the socket is up.
pub fn upgrade_port_forward<C>(
    mut request: http::Request<hyper::body::Incoming>,
    connect: C,
) -> Result<Response<crate::Body>, ApiError>
where
    C: Fn(u16) -> BoxFuture<Result<Box<dyn Duplex>, String>> + Send + 'static,
{
    let protocol = websocket_protocol(request.headers(), &[V4_CHANNEL])?;
    let ports = port_forward_ports(&query_pairs(&request))?;
    if ports.is_empty() {
        return Err(ApiError::bad_request("ports: at least one port is required (?ports=8080)"));
    }
    let response = accept(request.headers(), Some(protocol), crate::empty_body())?;
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => serve_port_forward(server_socket(upgraded).await, ports, connect).await,
            Err(error) => tracing::debug!(%error, "the port-forward upgrade failed"),
        }
    });
    Ok(response)
}

/// The protocol a WebSocket request is served with, or the 400 a client that asks for
/// something else gets.
fn websocket_protocol(headers: &HeaderMap, supported: &[&'static str]) -> Result<&'static str, ApiError> {
    if !is_websocket(headers) {
        return Err(ApiError::bad_request(format!(
            "this endpoint is served over a WebSocket (Connection: Upgrade, Upgrade: websocket) with one of the \
             protocols {supported:?}"
        )));
    }
    negotiate(headers, supported).ok_or_else(|| {
        ApiError::bad_request(format!(
            "none of the offered WebSocket protocols is supported: this endpoint speaks {supported:?}"
        ))
    })
}

/// A WebSocket as a byte stream: binary messages' payloads are the bytes read, writes go
/// out as binary messages (the `SPDY/3.1+portforward.k8s.io` tunnel carries a SPDY
/// session so). EOF when the socket closes.
pub fn websocket_bytes(socket: WebSocket) -> impl Duplex {
    let (sink, mut incoming) = socket.split();
    let (local, remote) = tokio::io::duplex(CHUNK * 2);
    let (remote_read, mut remote_write) = tokio::io::split(remote);
    let (out, outgoing) = mpsc::channel(8);
    tokio::spawn(send_all(sink, outgoing));
    tokio::spawn(async move { pump(Some(remote_read), None, &out).await });
    tokio::spawn(async move {
        while let Some(Ok(message)) = incoming.next().await {
            let data = match received(message) {
                Received::Data(data) => data,
                Received::End => break,
                Received::Skip => continue,
            };
            if remote_write.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = remote_write.shutdown().await;
    });
    local
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(query.as_bytes()).into_owned().collect()
    }

    #[test]
    fn exit_statuses_read_back_as_kubectl_reads_them() {
        let command = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        for exit in [ExecExit::Success, ExecExit::Code(3), ExecExit::Code(127), ExecExit::Failed("trapped".into())] {
            let status = serde_json::to_vec(&exit.to_status(&command)).expect("json");
            let read = ExecExit::from_status(&status).expect("a status");
            match (&exit, &read) {
                (ExecExit::Failed(_), ExecExit::Failed(message)) => assert!(message.contains("trapped"), "{message}"),
                _ => assert_eq!(read, exit),
            }
        }
        let status = ExecExit::Code(3).to_status(&command);
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
        assert_eq!(
            status["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        assert_eq!(ExecExit::from_status(b""), None);
    }

    #[test]
    fn exec_options_are_checked_as_kube_apiserver_checks_them() {
        let options =
            exec_options(&pairs("command=ls&command=-l&stdout=true&stderr=1&container=web"), false).expect("valid");
        assert_eq!(options.command, ["ls", "-l"]);
        assert_eq!(options.container.as_deref(), Some("web"));
        assert!(options.stdout && options.stderr && !options.stdin && !options.tty);
        assert_eq!(exec_options(&pairs(&options.query()), false).expect("round trip"), options);
        let refused = |query: &str, attach: bool| exec_options(&pairs(query), attach).expect_err(query).message;
        assert!(refused("stdout=true", false).contains("at least 1 command"));
        assert!(refused("command=ls", false).contains("stdin, stdout, stderr"));
        assert!(refused("command=sh&tty=true&stderr=true&stdin=true", false).contains("stderr must be false"));
        assert!(refused("command=ls&stdout=maybe", false).contains("stdout: invalid value"));
        assert!(exec_options(&pairs("stdin=true&stdout=true"), true).is_ok(), "attach has no command");
    }

    #[test]
    fn ports_and_protocols() {
        assert_eq!(port_forward_ports(&pairs("ports=80,8080&ports=9090")).expect("valid"), [80, 8080, 9090]);
        assert!(port_forward_ports(&pairs("ports=0")).is_err());
        assert!(port_forward_ports(&pairs("ports=70000")).is_err());
        let long = (1..=65).map(|p| p.to_string()).collect::<Vec<_>>().join(",");
        assert!(port_forward_ports(&pairs(&format!("ports={long}"))).is_err(), "at most 64 ports");
        let mut headers = HeaderMap::new();
        headers
            .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("v6.channel.k8s.io, v4.channel.k8s.io"));
        headers.append(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("v5.channel.k8s.io"));
        assert_eq!(negotiate(&headers, EXEC_PROTOCOLS), Some(V4_CHANNEL), "the client's order decides");
        assert_eq!(negotiate(&headers, &[SPDY_TUNNEL]), None);
    }

    /// Both ends over a real WebSocket pair: stdin in, stdout and stderr out, stdin's
    /// close (v5), the exit status.
    #[tokio::test]
    async fn an_exec_session_crosses_a_websocket() {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (server, client) = tokio::join!(
            WebSocketStream::from_raw_socket(server_io, Role::Server, None),
            WebSocketStream::from_raw_socket(client_io, Role::Client, None),
        );
        // The serving end: `cat` to stdout, a word on stderr, exit 3.
        let (stdin_write, mut stdin_read) = tokio::io::duplex(1024);
        let (mut stdout_write, stdout_read) = tokio::io::duplex(1024);
        let (mut stderr_write, stderr_read) = tokio::io::duplex(1024);
        let command = async move {
            tokio::io::copy(&mut stdin_read, &mut stdout_write).await.expect("cat");
            stderr_write.write_all(b"done").await.expect("stderr");
            ExecExit::Code(3)
        };
        let (exited, exit) = oneshot::channel();
        tokio::spawn(async move {
            let _ = exited.send(command.await);
        });
        let session = ExecSession {
            stdin: Some(Box::new(stdin_write)),
            stdout: Some(Box::new(stdout_read)),
            stderr: Some(Box::new(stderr_read)),
            resize: None,
            exit: Box::pin(async move { exit.await.unwrap_or(ExecExit::Failed("lost".into())) }),
        };
        // Over a duplex pipe rather than an upgraded connection: the same framing.
        let serving = tokio::spawn(serve_exec(server, V5_CHANNEL, session, vec!["cat".into()]));
        let options =
            ExecOptions { command: vec!["cat".into()], stdin: true, stdout: true, stderr: true, ..Default::default() };
        let client = exec_client(client, V5_CHANNEL, &options);
        let mut stdin = client.stdin.expect("stdin");
        stdin.write_all(b"hello over the wire").await.expect("write");
        stdin.shutdown().await.expect("close stdin");
        let (mut out, mut err) = (String::new(), String::new());
        client.stdout.expect("stdout").read_to_string(&mut out).await.expect("stdout");
        client.stderr.expect("stderr").read_to_string(&mut err).await.expect("stderr");
        assert_eq!((out.as_str(), err.as_str()), ("hello over the wire", "done"));
        assert_eq!(client.exit.await, ExecExit::Code(3));
        serving.await.expect("served");
    }
}
