//! kubelet's port-forward protocol over a SPDY session (`portforward.k8s.io`), as in
//! kubernetes' `pkg/kubelet/cri/streaming/portforward/httpstream.go`.
//!
//! For each forwarded connection the client (client-go's `tools/portforward`) opens two
//! streams with the headers `streamtype: error` / `streamtype: data`, `port: <remote port>`
//! and `requestid: <n>` (Go sets `streamType`, `port`, `requestID`; SPDY lower-cases names on
//! the wire). It half-closes the error stream at once (it never writes to it) and reads it to
//! the end after the data stream is done; it copies the local connection into the data
//! stream, FINs it at local EOF, and RSTs it once the server's side of it ended.
//!
//! The server here does what kubelet does:
//! - a stream without a valid `port` (1–65535) or `streamtype` (`error`/`data`) is reset
//!   (RST_STREAM CANCEL, apimachinery's `Stream.Reset` after the handler's error);
//! - streams are paired by `requestid` (a client too old to send one gets kubelet's fallback:
//!   the error stream's id, or the data stream's id minus 2); a second stream of a type the
//!   pair already has gets `error processing stream for request <id>: <type> stream already
//!   assigned` on the pair's error stream; a pair not complete within
//!   [`PortForwardOptions::stream_creation_timeout`] gets `timed out waiting for streams`
//!   and is dropped;
//! - a complete pair connects to the port and copies both ways with half-close; a failure to
//!   connect, or a pod-side i/o error, is written to the error stream as kubelet does:
//!   `error forwarding port <port> to pod <pod>, uid <uid>: <error>`; then both streams are
//!   closed (FIN).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::Error;
use crate::frame::rst_status;
use crate::session::{Config, IncomingStream, Stream, accept};

/// Header naming the stream's role.
pub const STREAM_TYPE_HEADER: &str = "streamtype";
/// Header naming the port to forward to.
pub const PORT_HEADER: &str = "port";
/// Header pairing a connection's error and data streams.
pub const REQUEST_ID_HEADER: &str = "requestid";
/// `streamtype` of the error stream.
pub const STREAM_TYPE_ERROR: &str = "error";
/// `streamtype` of the data stream.
pub const STREAM_TYPE_DATA: &str = "data";

/// What the port-forward handler needs beyond the connection.
#[derive(Debug, Clone)]
pub struct PortForwardOptions {
    /// The pod's name, for error messages.
    pub pod_name: String,
    /// The pod's uid, for error messages.
    pub pod_uid: String,
    /// How long a request's second stream may take to arrive (kubelet's
    /// `streamCreationTimeout`, 30 s by default).
    pub stream_creation_timeout: Duration,
    /// The SPDY session's limits.
    pub session: Config,
}

impl PortForwardOptions {
    /// Options for `pod_name`/`pod_uid` with kubelet's defaults.
    pub fn new(pod_name: impl Into<String>, pod_uid: impl Into<String>) -> Self {
        Self {
            pod_name: pod_name.into(),
            pod_uid: pod_uid.into(),
            stream_creation_timeout: Duration::from_secs(30),
            session: Config::default(),
        }
    }
}

#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
    port: u16,
    timer: Option<JoinHandle<()>>,
    generation: u64,
}

/// Serves kubelet's port-forward protocol on `io` until the peer closes the session and every
/// forwarded connection has finished. `connect(port)` opens a connection to the pod's port
/// (the integrator decides what that means: a TCP dial in the pod's network namespace, a
/// loopback listener, a wasm socket…).
pub async fn serve_port_forward<IO, C, Fut, S>(io: IO, options: PortForwardOptions, connect: C) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    C: Fn(u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (driver, mut incoming) = accept(io, options.session);
    let connect = Arc::new(connect);
    let options = Arc::new(options);
    let handler = async move {
        let mut pairs: HashMap<String, Pair> = HashMap::new();
        let (timeout_tx, mut timeout_rx) = mpsc::unbounded_channel::<(String, u64)>();
        let mut forwards = JoinSet::new();
        let mut generation = 0u64;
        loop {
            tokio::select! {
                stream = incoming.next() => {
                    let Some(stream) = stream else { break };
                    let Some((request_id, kind, port, stream)) = validate(stream) else { continue };
                    let pair = pairs.entry(request_id.clone()).or_insert_with(|| {
                        generation += 1;
                        let tx = timeout_tx.clone();
                        let (rid, g, after) = (request_id.clone(), generation, options.stream_creation_timeout);
                        let timer = tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            let _ = tx.send((rid, g));
                        });
                        Pair { port, timer: Some(timer), generation, ..Pair::default() }
                    });
                    let slot = if kind == STREAM_TYPE_ERROR { &mut pair.error } else { &mut pair.data };
                    if slot.is_some() {
                        let msg = format!("error processing stream for request {request_id}: {kind} stream already assigned");
                        tracing::warn!("{msg}");
                        if let Some(err) = pair.error.as_mut() {
                            let _ = err.write_all(msg.as_bytes()).await;
                        }
                        continue; // the duplicate is dropped (FIN)
                    }
                    *slot = Some(stream);
                    if kind == STREAM_TYPE_DATA {
                        pair.port = port;
                    }
                    if pair.error.is_some() && pair.data.is_some()
                        && let Some(mut pair) = pairs.remove(&request_id)
                        && let (Some(error), Some(data)) = (pair.error.take(), pair.data.take())
                    {
                        if let Some(t) = pair.timer.take() {
                            t.abort();
                        }
                        let (connect, options) = (connect.clone(), options.clone());
                        forwards.spawn(forward(error, data, pair.port, options, connect));
                    }
                }
                Some((request_id, g)) = timeout_rx.recv() => {
                    if pairs.get(&request_id).is_some_and(|p| p.generation == g)
                        && let Some(mut pair) = pairs.remove(&request_id)
                    {
                        let msg = format!("(conn=spdy, request={request_id}) timed out waiting for streams");
                        tracing::warn!("{msg}");
                        if let Some(err) = pair.error.as_mut() {
                            let _ = err.write_all(msg.as_bytes()).await;
                        }
                    }
                }
                Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
            }
        }
        for (_, mut pair) in pairs.drain() {
            if let Some(t) = pair.timer.take() {
                t.abort();
            }
        }
        while forwards.join_next().await.is_some() {}
    };
    let (result, ()) = tokio::join!(driver, handler);
    result
}

/// kubelet's `httpStreamReceived` checks plus the request id; rejects (RST CANCEL) what fails.
fn validate(stream: IncomingStream) -> Option<(String, &'static str, u16, Stream)> {
    let headers = stream.headers();
    let port = match headers.get(PORT_HEADER) {
        None | Some("") => Err(format!("{PORT_HEADER:?} header is required")),
        Some(s) => match s.parse::<u16>() {
            Ok(0) => Err(format!("port {s:?} must be > 0")),
            Ok(p) => Ok(p),
            Err(e) => Err(format!("unable to parse {s:?} as a port: {e}")),
        },
    };
    let kind = match headers.get(STREAM_TYPE_HEADER) {
        None | Some("") => Err(format!("{STREAM_TYPE_HEADER:?} header is required")),
        Some(STREAM_TYPE_ERROR) => Ok(STREAM_TYPE_ERROR),
        Some(STREAM_TYPE_DATA) => Ok(STREAM_TYPE_DATA),
        Some(other) => Err(format!("invalid stream type {other:?}")),
    };
    let (port, kind) = match (port, kind) {
        (Ok(p), Ok(k)) => (p, k),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(stream_id = stream.id(), "port-forward stream rejected: {e}");
            stream.reject(rst_status::CANCEL);
            return None;
        }
    };
    let request_id = match headers.get(REQUEST_ID_HEADER) {
        Some(id) if !id.is_empty() => id.to_owned(),
        // Clients from before request ids: consecutive odd ids, error stream first.
        _ if kind == STREAM_TYPE_ERROR => stream.id().to_string(),
        _ => (i64::from(stream.id()) - 2).to_string(),
    };
    Some((request_id, kind, port, stream.accept()))
}

/// Which side of a copy failed.
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

async fn pump<R, W>(r: &mut R, w: &mut W) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    let result = loop {
        match r.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(e) = w.write_all(&buf[..n]).await {
                    break Err(CopyError::Write(e));
                }
            }
            Err(e) => break Err(CopyError::Read(e)),
        }
    };
    // Half-close: the other side sees EOF (FIN on the SPDY stream, shutdown(SHUT_WR) on TCP).
    let _ = w.shutdown().await;
    result
}

async fn forward<C, Fut, S>(
    mut error: Stream,
    data: Stream,
    port: u16,
    options: Arc<PortForwardOptions>,
    connect: Arc<C>,
) where
    C: Fn(u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let failure = match connect(port).await {
        Err(e) => Some(e),
        Ok(pod) => splice(data, pod).await.err(),
    };
    if let Some(e) = failure {
        let msg = format!("error forwarding port {port} to pod {}, uid {}: {e}", options.pod_name, options.pod_uid);
        tracing::warn!("{msg}");
        let _ = error.write_all(msg.as_bytes()).await;
    }
    let _ = error.shutdown().await;
}

/// How long the client-to-pod direction may go on once the pod's side has ended (containerd's
/// port-forward gives the other direction the same second). kubectl resets the data stream as
/// soon as it sees the pod's FIN, which ends that direction sooner.
const UPSTREAM_GRACE: Duration = Duration::from_secs(1);

/// Copies both ways with half-close. Ends when the pod's side has ended and the client's has
/// too (or [`UPSTREAM_GRACE`] later), or at once on a pod-side failure, which is returned.
/// Client-side failures (the client resetting the data stream, as kubectl does once the pod's
/// side ended) are not errors.
async fn splice<S>(data: Stream, pod: S) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut data_rd, mut data_wr) = tokio::io::split(data);
    let (mut pod_rd, mut pod_wr) = tokio::io::split(pod);
    let up = pump(&mut data_rd, &mut pod_wr);
    let down = pump(&mut pod_rd, &mut data_wr);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                if let Err(CopyError::Write(e)) = r {
                    return Err(e);
                }
            }
            r = &mut down, if !down_done => {
                down_done = true;
                if let Err(CopyError::Read(e)) = r {
                    return Err(e);
                }
                if let Some(deadline) = tokio::time::Instant::now().checked_add(UPSTREAM_GRACE) {
                    grace.as_mut().reset(deadline);
                }
            }
            () = &mut grace, if down_done => break,
        }
    }
    Ok(())
}
