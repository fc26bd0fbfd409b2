//! The server side of a SPDY/3.1 session over any byte stream.
//!
//! [`accept`] splits the connection into a reader and a writer, both driven by the returned
//! [`SessionDriver`] future (poll it, or spawn it, until it completes), and hands each
//! stream the peer opens to the [`Incoming`] receiver. The application answers each
//! [`IncomingStream`] with [`IncomingStream::accept`] (SYN_REPLY, as spdystream's
//! `SendReply(http.Header{}, false)`) or [`IncomingStream::reject`] (RST_STREAM). An accepted
//! [`Stream`] reads the peer's DATA, writes DATA frames, sends FIN on `shutdown` (or when
//! dropped, as Go's `Stream.Close` does), and reports a peer's RST_STREAM as
//! `ConnectionReset`.
//!
//! What the session does on its own: answers the peer's PINGs (spdystream's `Ping` uses odd
//! ids from a client), records SETTINGS and WINDOW_UPDATE, stops taking new streams after the
//! peer's GOAWAY, refuses streams past [`Config::max_concurrent_streams`] with
//! RST_STREAM(REFUSED_STREAM), resets with RST_STREAM(PROTOCOL_ERROR) a SYN_STREAM whose id
//! does not increase (spdystream's `validateStreamId`) or is even (a client's ids are odd, says
//! the spec; spdystream does not check), and ends with GOAWAY(PROTOCOL_ERROR) on a frame it
//! cannot decode.
//!
//! Backpressure: each stream buffers at most [`Config::stream_recv_buffer`] bytes from the
//! peer (plus the frame that crossed the line); past that the session stops reading the
//! connection until the stream's reader catches up, which is what spdystream itself does
//! (its frame workers block on an unbuffered channel). Writes take budget from a session-wide
//! [`Config::write_buffer`] of queued bytes and wait when it is spent.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::PollSemaphore;

use crate::Error;
use crate::frame::{
    FLAG_FIN, Frame, FrameDecoder, FrameEncoder, Headers, Limits, MAX_PAYLOAD_LEN, goaway_status, rst_status,
};

/// Budget one control frame the session sends on its own takes from the write queue.
const CONTROL_COST: usize = 32;
/// How much the reader asks of the connection at a time.
const READ_CHUNK: usize = 64 * 1024;
/// The writer writes out once this much is encoded, even if more commands are queued.
const WRITE_BATCH: usize = 256 * 1024;
/// Consumed bytes per WINDOW_UPDATE, when they are sent.
const WINDOW_UPDATE_THRESHOLD: usize = 32 * 1024;

/// Session limits and behaviour. The defaults suit kubectl port-forward.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Largest DATA frame payload accepted (spdystream's own bound is the 24-bit length
    /// field, 16 MiB - 1, which is the default).
    pub max_frame_len: usize,
    /// Largest decompressed header block (default 256 KiB).
    pub max_header_block: usize,
    /// Most header entries in one block (default 256).
    pub max_headers: usize,
    /// Most streams open at once; more are refused (default 1000).
    pub max_concurrent_streams: usize,
    /// Bytes buffered per stream before the session stops reading the connection (default
    /// 1 MiB).
    pub stream_recv_buffer: usize,
    /// Bytes queued for writing, all streams together, before writers wait (default 1 MiB).
    pub write_buffer: usize,
    /// Largest DATA frame this side writes (default 32 KiB, what Go's `io.Copy` writes).
    pub max_write_frame: usize,
    /// Streams handed over but not yet taken from [`Incoming`] before the session stops
    /// reading (default 64).
    pub incoming_backlog: usize,
    /// Send WINDOW_UPDATE (per stream and for the session) as data is consumed. spdystream
    /// ignores them, so the default is off; a peer that enforces SPDY/3.1 windows needs it.
    pub send_window_updates: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_len: MAX_PAYLOAD_LEN,
            max_header_block: 256 * 1024,
            max_headers: 256,
            max_concurrent_streams: 1000,
            stream_recv_buffer: 1024 * 1024,
            write_buffer: 1024 * 1024,
            max_write_frame: 32 * 1024,
            incoming_backlog: 64,
            send_window_updates: false,
        }
    }
}

impl Config {
    fn normalized(mut self) -> Self {
        self.max_frame_len = self.max_frame_len.clamp(1, MAX_PAYLOAD_LEN);
        self.max_write_frame = self.max_write_frame.clamp(1, MAX_PAYLOAD_LEN).min(u32::MAX as usize);
        self.write_buffer = self.write_buffer.max(self.max_write_frame + CONTROL_COST).min(Semaphore::MAX_PERMITS);
        self.max_concurrent_streams = self.max_concurrent_streams.max(1);
        self.stream_recv_buffer = self.stream_recv_buffer.max(1);
        self.incoming_backlog = self.incoming_backlog.max(1);
        self
    }

    fn limits(&self) -> Limits {
        Limits {
            max_data_frame_len: self.max_frame_len,
            max_control_frame_len: self.max_header_block.saturating_add(1024).min(MAX_PAYLOAD_LEN),
            max_header_block: self.max_header_block,
            max_headers: self.max_headers,
        }
    }
}

/// Per-stream state shared by the session's reader, its writer and the application's handle.
struct StreamState {
    id: u32,
    inner: Mutex<StreamInner>,
}

#[derive(Default)]
struct StreamInner {
    recv: VecDeque<Bytes>,
    recv_len: usize,
    /// The peer sent FIN.
    remote_closed: bool,
    /// RST_STREAM received, or sent by this side.
    reset: bool,
    /// The session ended.
    session_closed: bool,
    /// FIN or RST_STREAM queued: no more writes.
    local_close_queued: bool,
    /// FIN or RST_STREAM encoded by the writer.
    local_closed: bool,
    /// Nobody reads any more: drop what arrives.
    discard: bool,
    /// Bytes consumed since the last WINDOW_UPDATE.
    unacked: usize,
    read_waker: Option<Waker>,
    space_waker: Option<Waker>,
}

impl StreamInner {
    fn wake_all(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.space_waker.take() {
            w.wake();
        }
    }

    fn finished(&self) -> bool {
        self.reset || (self.local_closed && self.remote_closed)
    }
}

impl StreamState {
    fn new(id: u32, remote_closed: bool) -> Self {
        Self { id, inner: Mutex::new(StreamInner { remote_closed, ..StreamInner::default() }) }
    }

    fn lock(&self) -> MutexGuard<'_, StreamInner> {
        // A panic while holding the lock leaves plain data behind: keep going with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Cmd {
    Reply(Arc<StreamState>),
    Data { stream: Arc<StreamState>, data: Bytes, fin: bool },
    Rst { stream_id: u32, status: u32, stream: Option<Arc<StreamState>> },
    Ping(u32),
    GoAway { last_good_stream_id: u32, status: u32 },
    WindowUpdate { stream_id: u32, delta: u32 },
    Shutdown,
}

/// A command for the writer and the write budget it holds until written.
struct Queued {
    cmd: Cmd,
    permits: usize,
}

struct Shared {
    tx: mpsc::UnboundedSender<Queued>,
    budget: Arc<Semaphore>,
    config: Config,
}

impl Shared {
    /// Queues a command holding `permits` of budget; gives the budget back if the writer is
    /// gone.
    fn send(&self, cmd: Cmd, permits: usize) -> bool {
        if self.tx.send(Queued { cmd, permits }).is_err() {
            self.budget.add_permits(permits);
            return false;
        }
        true
    }

    /// Queues a control frame the session sends on its own, waiting for budget first so a
    /// peer that floods PINGs without reading cannot grow the queue.
    async fn send_control(&self, cmd: Cmd) {
        // An error means the session is closing: nothing to send.
        if let Ok(permit) = self.budget.acquire_many(CONTROL_COST as u32).await {
            permit.forget();
            self.send(cmd, CONTROL_COST);
        }
    }
}

type StreamMap = Arc<Mutex<HashMap<u32, Arc<StreamState>>>>;

fn lock_map(map: &StreamMap) -> MutexGuard<'_, HashMap<u32, Arc<StreamState>>> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the server side of a SPDY session on `io`.
///
/// Returns the future that drives the session (it must be polled for anything to happen;
/// it completes when the peer closes the connection, with `Ok`, or on an i/o or protocol
/// error) and the receiver of the streams the peer opens. Dropping the driver ends the
/// session: every stream's reads and writes then fail.
pub fn accept<IO>(io: IO, config: Config) -> (SessionDriver, Incoming)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let config = config.normalized();
    let (rd, wr) = tokio::io::split(io);
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(config.write_buffer));
    let shared = Arc::new(Shared { tx, budget: budget.clone(), config });
    let streams: StreamMap = Arc::new(Mutex::new(HashMap::new()));
    let (in_tx, in_rx) = mpsc::channel(config.incoming_backlog);
    let reader = Reader {
        rd,
        buf: BytesMut::with_capacity(READ_CHUNK),
        dec: FrameDecoder::new(config.limits()),
        streams: streams.clone(),
        shared: shared.clone(),
        incoming: Some(in_tx),
        last_remote_id: 0,
    };
    let fut = async move {
        let _guard = CloseGuard { streams, budget: budget.clone() };
        let writer = write_loop(wr, rx, budget);
        let reader = reader.run();
        tokio::pin!(reader, writer);
        tokio::select! {
            r = &mut reader => {
                shared.send(Cmd::Shutdown, 0);
                let w = writer.await;
                r.and(w)
            }
            w = &mut writer => w,
        }
    };
    (SessionDriver { fut: Box::pin(fut) }, Incoming { rx: in_rx })
}

/// Drives a session: poll (or spawn) it to completion. `Ok(())` when the peer closed the
/// connection; an [`Error`] on an i/o failure or a protocol violation (after GOAWAY).
pub struct SessionDriver {
    fut: Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
}

impl fmt::Debug for SessionDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionDriver").finish_non_exhaustive()
    }
}

impl Future for SessionDriver {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}

/// Marks every stream closed when the session ends, however it ends (including the driver
/// being dropped), so no reader or writer waits forever.
struct CloseGuard {
    streams: StreamMap,
    budget: Arc<Semaphore>,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.budget.close();
        let streams: Vec<_> = lock_map(&self.streams).drain().map(|(_, s)| s).collect();
        for s in streams {
            let mut g = s.lock();
            g.session_closed = true;
            g.wake_all();
        }
    }
}

/// The streams the peer opens, in order. Ends when the session ends or the peer sent GOAWAY.
pub struct Incoming {
    rx: mpsc::Receiver<IncomingStream>,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

impl Incoming {
    /// The next stream, or `None` once no more will come.
    pub async fn next(&mut self) -> Option<IncomingStream> {
        self.rx.recv().await
    }

    /// Poll form of [`Incoming::next`].
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<IncomingStream>> {
        self.rx.poll_recv(cx)
    }
}

/// A stream the peer opened (SYN_STREAM), not yet answered. Dropping it unanswered refuses
/// it (RST_STREAM REFUSED_STREAM).
pub struct IncomingStream {
    state: Arc<StreamState>,
    headers: Headers,
    shared: Arc<Shared>,
    answered: bool,
}

impl fmt::Debug for IncomingStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingStream").field("id", &self.state.id).field("headers", &self.headers).finish()
    }
}

impl IncomingStream {
    /// The stream id (odd: opened by the client).
    pub fn id(&self) -> u32 {
        self.state.id
    }

    /// The SYN_STREAM's headers (names lower-case).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Answers with SYN_REPLY (no headers) and returns the stream.
    pub fn accept(mut self) -> Stream {
        self.answered = true;
        self.shared.send(Cmd::Reply(self.state.clone()), 0);
        Stream {
            state: self.state.clone(),
            headers: std::mem::take(&mut self.headers),
            shared: self.shared.clone(),
            sem: PollSemaphore::new(self.shared.budget.clone()),
        }
    }

    /// Refuses the stream with RST_STREAM and `status` (one of
    /// [`crate::frame::rst_status`]; kubelet's stream handler rejection is CANCEL, what
    /// spdystream's `Stream.Reset` sends).
    pub fn reject(mut self, status: u32) {
        self.answered = true;
        reset_stream(&self.state, &self.shared, status);
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        if !self.answered {
            reset_stream(&self.state, &self.shared, rst_status::REFUSED_STREAM);
        }
    }
}

fn reset_stream(state: &Arc<StreamState>, shared: &Shared, status: u32) {
    let mut g = state.lock();
    g.discard = true;
    g.recv.clear();
    g.recv_len = 0;
    if let Some(w) = g.space_waker.take() {
        w.wake();
    }
    if g.local_close_queued || g.reset || g.session_closed {
        return;
    }
    g.local_close_queued = true;
    drop(g);
    shared.send(Cmd::Rst { stream_id: state.id, status, stream: Some(state.clone()) }, 0);
}

/// An accepted stream: reads the peer's DATA, writes DATA frames (at most
/// [`Config::max_write_frame`] each), `shutdown` sends FIN. Dropping it sends FIN if
/// `shutdown` did not, and discards whatever the peer still sends. Reads end (`Ok(0)`) at the
/// peer's FIN; a peer's RST_STREAM fails reads and writes with `ConnectionReset`, the end of
/// the session with `ConnectionAborted` / `BrokenPipe`.
pub struct Stream {
    state: Arc<StreamState>,
    headers: Headers,
    shared: Arc<Shared>,
    sem: PollSemaphore,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream").field("id", &self.state.id).field("headers", &self.headers).finish()
    }
}

impl Stream {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.state.id
    }

    /// The SYN_STREAM's headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Resets the stream (RST_STREAM with `status`), discarding unsent and unread data, as
    /// spdystream's `Stream.Reset` (CANCEL).
    pub fn reset(self, status: u32) {
        reset_stream(&self.state, &self.shared, status);
    }

    fn writable(&self) -> io::Result<()> {
        let g = self.state.lock();
        if g.reset {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "SPDY stream reset"))
        } else if g.session_closed {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "SPDY session closed"))
        } else if g.local_close_queued {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "write after SPDY stream shutdown"))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut g = this.state.lock();
        let mut read = 0usize;
        while buf.remaining() > 0 {
            let Some(front) = g.recv.front_mut() else { break };
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                g.recv.pop_front();
            }
            read += n;
        }
        if read > 0 {
            g.recv_len -= read;
            if let Some(w) = g.space_waker.take() {
                w.wake();
            }
            if this.shared.config.send_window_updates {
                g.unacked += read;
                if g.unacked >= WINDOW_UPDATE_THRESHOLD {
                    let delta = u32::try_from(g.unacked).unwrap_or(0x7fff_ffff).min(0x7fff_ffff);
                    g.unacked = 0;
                    let id = this.state.id;
                    drop(g);
                    this.shared.send(Cmd::WindowUpdate { stream_id: id, delta }, 0);
                    this.shared.send(Cmd::WindowUpdate { stream_id: 0, delta }, 0);
                }
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() == 0 || g.remote_closed {
            return Poll::Ready(Ok(()));
        }
        if g.reset {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "SPDY stream reset")));
        }
        if g.session_closed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "SPDY session closed")));
        }
        g.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.writable()?;
        let n = buf.len().min(this.shared.config.max_write_frame);
        // n ≤ max_write_frame ≤ u32::MAX (Config::normalized).
        let permits = u32::try_from(n).unwrap_or(u32::MAX);
        let Some(permit) = ready!(this.sem.poll_acquire_many(cx, permits)) else {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "SPDY session closed")));
        };
        permit.forget();
        if let Err(e) = this.writable() {
            this.shared.budget.add_permits(n);
            return Poll::Ready(Err(e));
        }
        let data = Bytes::copy_from_slice(&buf[..n]);
        if !this.shared.send(Cmd::Data { stream: this.state.clone(), data, fin: false }, n) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "SPDY session closed")));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().finish();
        Poll::Ready(Ok(()))
    }
}

impl Stream {
    /// Queues FIN unless the stream is already closed on this side.
    fn finish(&mut self) {
        let mut g = self.state.lock();
        if g.local_close_queued || g.reset || g.session_closed {
            return;
        }
        g.local_close_queued = true;
        drop(g);
        self.shared.send(Cmd::Data { stream: self.state.clone(), data: Bytes::new(), fin: true }, 0);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        {
            let mut g = self.state.lock();
            g.discard = true;
            g.recv.clear();
            g.recv_len = 0;
            if let Some(w) = g.space_waker.take() {
                w.wake();
            }
        }
        self.finish();
    }
}

struct Reader<R> {
    rd: R,
    buf: BytesMut,
    dec: FrameDecoder,
    streams: StreamMap,
    shared: Arc<Shared>,
    /// `None` after the peer's GOAWAY or once the application dropped [`Incoming`].
    incoming: Option<mpsc::Sender<IncomingStream>>,
    last_remote_id: u32,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    async fn run(mut self) -> Result<(), Error> {
        loop {
            let frame = match self.dec.decode(&mut self.buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    self.buf.reserve(READ_CHUNK);
                    if self.rd.read_buf(&mut self.buf).await? == 0 {
                        if !self.buf.is_empty() {
                            tracing::debug!(bytes = self.buf.len(), "SPDY peer closed mid-frame");
                        }
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY protocol error, sending GOAWAY");
                    let goaway =
                        Cmd::GoAway { last_good_stream_id: self.last_remote_id, status: goaway_status::PROTOCOL_ERROR };
                    self.shared.send(goaway, 0);
                    return Err(Error::Protocol(e));
                }
            };
            self.handle(frame).await;
        }
    }

    async fn handle(&mut self, frame: Frame) {
        match frame {
            Frame::SynStream { stream_id, flags, headers, .. } => self.syn_stream(stream_id, flags, headers).await,
            Frame::Data { stream_id, flags, data } => self.data(stream_id, flags, data).await,
            Frame::RstStream { stream_id, status } => {
                tracing::trace!(stream_id, status, "SPDY RST_STREAM");
                let removed = lock_map(&self.streams).remove(&stream_id);
                if let Some(s) = removed {
                    let mut g = s.lock();
                    g.reset = true;
                    g.wake_all();
                }
            }
            Frame::Headers { stream_id, flags, .. } => {
                if flags & FLAG_FIN != 0 {
                    self.remote_fin(stream_id);
                }
            }
            Frame::SynReply { stream_id, .. } => {
                // This side opens no streams.
                tracing::debug!(stream_id, "SPDY SYN_REPLY for a stream this side never opened");
            }
            Frame::Settings { entries, .. } => tracing::trace!(?entries, "SPDY SETTINGS"),
            Frame::WindowUpdate { stream_id, delta } => {
                // spdystream never sends these and enforces no window; nothing waits on them.
                tracing::trace!(stream_id, delta, "SPDY WINDOW_UPDATE");
            }
            Frame::Ping { id } => {
                // Odd ids are the client's pings; even ones would answer ours (we send none).
                if id % 2 == 1 {
                    self.shared.send_control(Cmd::Ping(id)).await;
                }
            }
            Frame::GoAway { last_good_stream_id, status } => {
                tracing::debug!(last_good_stream_id, status, "SPDY GOAWAY from the peer");
                self.incoming = None;
            }
            Frame::Unknown { frame_type } => tracing::debug!(frame_type, "SPDY control frame of unknown type skipped"),
        }
    }

    async fn syn_stream(&mut self, stream_id: u32, flags: u8, headers: Headers) {
        if stream_id.is_multiple_of(2) || stream_id <= self.last_remote_id {
            let rst = Cmd::Rst { stream_id, status: rst_status::PROTOCOL_ERROR, stream: None };
            self.shared.send_control(rst).await;
            return;
        }
        self.last_remote_id = stream_id;
        let Some(incoming) = self.incoming.clone() else {
            let rst = Cmd::Rst { stream_id, status: rst_status::REFUSED_STREAM, stream: None };
            self.shared.send_control(rst).await;
            return;
        };
        let state = {
            let mut map = lock_map(&self.streams);
            if map.len() >= self.shared.config.max_concurrent_streams {
                map.retain(|_, s| !s.lock().finished());
            }
            if map.len() >= self.shared.config.max_concurrent_streams {
                None
            } else {
                let state = Arc::new(StreamState::new(stream_id, flags & FLAG_FIN != 0));
                map.insert(stream_id, state.clone());
                Some(state)
            }
        };
        let Some(state) = state else {
            tracing::debug!(stream_id, "SPDY stream refused: too many concurrent streams");
            let rst = Cmd::Rst { stream_id, status: rst_status::REFUSED_STREAM, stream: None };
            self.shared.send_control(rst).await;
            return;
        };
        let stream = IncomingStream { state, headers, shared: self.shared.clone(), answered: false };
        if incoming.send(stream).await.is_err() {
            // Nobody takes streams any more; the returned stream's drop refused it.
            self.incoming = None;
        }
    }

    async fn data(&mut self, stream_id: u32, flags: u8, data: Bytes) {
        let Some(state) = lock_map(&self.streams).get(&stream_id).cloned() else {
            // Unknown or finished stream: spdystream drops such frames too.
            return;
        };
        let limit = self.shared.config.stream_recv_buffer;
        poll_fn(|cx| {
            let mut g = state.lock();
            if g.discard || g.reset || g.session_closed || g.recv_len < limit {
                Poll::Ready(())
            } else {
                g.space_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let mut g = state.lock();
        if !(g.discard || g.reset || g.remote_closed || data.is_empty()) {
            g.recv_len += data.len();
            g.recv.push_back(data);
        }
        if flags & FLAG_FIN != 0 {
            g.remote_closed = true;
        }
        if let Some(w) = g.read_waker.take() {
            w.wake();
        }
        let finished = g.finished();
        drop(g);
        if finished {
            lock_map(&self.streams).remove(&stream_id);
        }
    }

    fn remote_fin(&mut self, stream_id: u32) {
        let Some(state) = lock_map(&self.streams).get(&stream_id).cloned() else { return };
        let mut g = state.lock();
        g.remote_closed = true;
        if let Some(w) = g.read_waker.take() {
            w.wake();
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    budget: Arc<Semaphore>,
) -> Result<(), Error> {
    let mut enc = FrameEncoder::new().map_err(Error::Encode)?;
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        let Some(first) = rx.recv().await else { return Ok(()) };
        let mut next = Some(first);
        let mut released = 0usize;
        let mut shutdown = false;
        while let Some(q) = next.take() {
            released += q.permits;
            if let Cmd::Shutdown = q.cmd {
                shutdown = true;
                break;
            }
            encode(&mut enc, q.cmd, &mut out).map_err(Error::Encode)?;
            if out.len() >= WRITE_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
            out.clear();
        }
        wr.flush().await?;
        budget.add_permits(released);
        if shutdown {
            let _ = wr.shutdown().await;
            return Ok(());
        }
    }
}

fn encode(enc: &mut FrameEncoder, cmd: Cmd, out: &mut BytesMut) -> Result<(), crate::FrameError> {
    let frame = match cmd {
        Cmd::Reply(stream) => {
            if stream.lock().reset {
                return Ok(());
            }
            Frame::SynReply { stream_id: stream.id, flags: 0, headers: Headers::new() }
        }
        Cmd::Data { stream, data, fin } => {
            let mut g = stream.lock();
            if g.reset || g.local_closed {
                return Ok(());
            }
            if fin {
                g.local_closed = true;
            }
            Frame::Data { stream_id: stream.id, flags: if fin { FLAG_FIN } else { 0 }, data }
        }
        Cmd::Rst { stream_id, status, stream } => {
            if let Some(stream) = stream {
                let mut g = stream.lock();
                if g.reset {
                    return Ok(());
                }
                g.reset = true;
                g.local_closed = true;
                g.wake_all();
            }
            Frame::RstStream { stream_id, status }
        }
        Cmd::Ping(id) => Frame::Ping { id },
        Cmd::GoAway { last_good_stream_id, status } => Frame::GoAway { last_good_stream_id, status },
        Cmd::WindowUpdate { stream_id, delta } => Frame::WindowUpdate { stream_id, delta },
        Cmd::Shutdown => return Ok(()),
    };
    enc.encode(&frame, out)
}
