//! A pod's log: a bounded ring of stdout/stderr lines, and the WASI streams that fill it.
//!
//! The ring is bounded twice, whatever a pod prints: in lines ([`LogBuffer::with_limits`]'s
//! `max_lines`) and in bytes, where each line costs its text plus [`LINE_OVERHEAD`] (what
//! holding it costs: its `LogLine` and its slot in the ring), so a pod printing `\n` in a
//! loop fills the ring as surely as one printing long lines. A partial line is held up to
//! [`MAX_LINE`] bytes per stream, then logged as a line of its own.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::sync::watch;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A partial line longer than this is logged as a line of its own.
const MAX_LINE: usize = 16 * 1024;

/// What one held line costs besides its text, in the byte bound: the `LogLine` itself
/// (sequence number, time, stream and the `String`'s header) as the ring stores it.
pub const LINE_OVERHEAD: usize = std::mem::size_of::<LogLine>();

/// The line bound of [`LogBuffer::new`].
pub const DEFAULT_MAX_LINES: usize = 10_000;

/// Which of a pod's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    fn index(self) -> usize {
        match self {
            LogStream::Stdout => 0,
            LogStream::Stderr => 1,
        }
    }
}

/// One line of a pod's output, without its trailing newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Position in the buffer's whole history, from 1; unique and increasing.
    pub seq: u64,
    pub time: SystemTime,
    pub stream: LogStream,
    pub line: String,
}

/// A pod's log: lines its stdout and stderr write, oldest dropped past a byte or a line
/// cap (see the module docs for how lines are counted).
///
/// Cheap to clone; clones share the buffer. A pod writes into it through [`LogBuffer::stdout`]
/// and [`LogBuffer::stderr`]; readers take snapshots ([`lines`](Self::lines),
/// [`since`](Self::since), [`tail`](Self::tail)) or follow it ([`next_after`](Self::next_after)).
#[derive(Debug, Clone)]
pub struct LogBuffer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cap_bytes: usize,
    max_lines: usize,
    state: Mutex<State>,
    /// The last `seq` written and whether the buffer is closed; followers wait on it.
    notify: watch::Sender<(u64, bool)>,
}

#[derive(Debug, Default)]
struct State {
    lines: VecDeque<LogLine>,
    /// What the held lines cost: their text plus [`LINE_OVERHEAD`] each.
    bytes: usize,
    last_seq: u64,
    closed: bool,
    /// Bytes written after the last newline, per stream.
    partial: [Vec<u8>; 2],
}

impl LogBuffer {
    /// A buffer holding lines that cost at most `cap_bytes` (text and [`LINE_OVERHEAD`]
    /// each), and at most [`DEFAULT_MAX_LINES`] of them; always at least the newest line.
    pub fn new(cap_bytes: usize) -> LogBuffer {
        LogBuffer::with_limits(cap_bytes, DEFAULT_MAX_LINES)
    }

    /// A buffer holding lines that cost at most `cap_bytes` (text and [`LINE_OVERHEAD`]
    /// each), and at most `max_lines` of them; always at least the newest line.
    pub fn with_limits(cap_bytes: usize, max_lines: usize) -> LogBuffer {
        let (notify, _) = watch::channel((0, false));
        LogBuffer { inner: Arc::new(Inner { cap_bytes, max_lines: max_lines.max(1), state: Mutex::default(), notify }) }
    }

    /// The stream a pod's stdout writes into.
    pub fn stdout(&self) -> LogWriter {
        LogWriter { buffer: self.clone(), stream: LogStream::Stdout }
    }

    /// The stream a pod's stderr writes into.
    pub fn stderr(&self) -> LogWriter {
        LogWriter { buffer: self.clone(), stream: LogStream::Stderr }
    }

    /// Appends one line (the host's own lines, e.g. why a pod ended, go here too).
    pub fn push(&self, stream: LogStream, line: impl Into<String>) {
        let mut state = self.lock();
        self.push_locked(&mut state, stream, line.into());
    }

    /// Every line still held, oldest first.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lock().lines.iter().cloned().collect()
    }

    /// The lines written at or after `time`.
    pub fn since(&self, time: SystemTime) -> Vec<LogLine> {
        self.lock().lines.iter().filter(|l| l.time >= time).cloned().collect()
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let state = self.lock();
        state.lines.iter().skip(state.lines.len().saturating_sub(n)).cloned().collect()
    }

    /// The lines held whose `seq` is after `seq`.
    pub fn after(&self, seq: u64) -> Vec<LogLine> {
        self.lock().lines.iter().filter(|l| l.seq > seq).cloned().collect()
    }

    /// Waits for lines after `seq` and returns them; an empty result means the buffer is
    /// closed and has nothing after `seq` (the pod ended): stop following.
    pub async fn next_after(&self, seq: u64) -> Vec<LogLine> {
        let mut rx = self.inner.notify.subscribe();
        loop {
            let (last, closed) = *rx.borrow_and_update();
            if last > seq {
                let lines = self.after(seq);
                if !lines.is_empty() {
                    return lines;
                }
            }
            if closed || rx.changed().await.is_err() {
                return self.after(seq);
            }
        }
    }

    /// Flushes partial lines and marks the log finished: followers drain and stop.
    pub fn close(&self) {
        let mut state = self.lock();
        self.flush_partial_locked(&mut state);
        state.closed = true;
        let last = state.last_seq;
        self.inner.notify.send_replace((last, true));
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Logs whatever was written after the last newline, as a line of its own.
    pub fn flush_partial(&self) {
        let mut state = self.lock();
        self.flush_partial_locked(&mut state);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, stream: LogStream, bytes: &[u8]) {
        let mut state = self.lock();
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut state.partial[stream.index()]);
            line.extend_from_slice(&rest[..pos]);
            rest = &rest[pos + 1..];
            self.push_bytes_locked(&mut state, stream, &line);
        }
        state.partial[stream.index()].extend_from_slice(rest);
        if state.partial[stream.index()].len() >= MAX_LINE {
            let line = std::mem::take(&mut state.partial[stream.index()]);
            self.push_bytes_locked(&mut state, stream, &line);
        }
    }

    fn flush_partial_locked(&self, state: &mut State) {
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let line = std::mem::take(&mut state.partial[stream.index()]);
            if !line.is_empty() {
                self.push_bytes_locked(state, stream, &line);
            }
        }
    }

    fn push_bytes_locked(&self, state: &mut State, stream: LogStream, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.push_locked(state, stream, String::from_utf8_lossy(line).into_owned());
    }

    fn push_locked(&self, state: &mut State, stream: LogStream, line: String) {
        state.last_seq = state.last_seq.saturating_add(1);
        state.bytes = state.bytes.saturating_add(cost(&line));
        state.lines.push_back(LogLine { seq: state.last_seq, time: SystemTime::now(), stream, line });
        while (state.bytes > self.inner.cap_bytes || state.lines.len() > self.inner.max_lines) && state.lines.len() > 1
        {
            if let Some(old) = state.lines.pop_front() {
                state.bytes = state.bytes.saturating_sub(cost(&old.line));
            }
        }
        let closed = state.closed;
        self.inner.notify.send_replace((state.last_seq, closed));
    }
}

/// What holding `line` counts against the byte cap.
fn cost(line: &str) -> usize {
    line.len().saturating_add(LINE_OVERHEAD)
}

/// A pod's stdout or stderr, writing lines into a [`LogBuffer`]; a WASI [`StdoutStream`].
#[derive(Debug, Clone)]
pub struct LogWriter {
    buffer: LogBuffer,
    stream: LogStream,
}

impl IsTerminal for LogWriter {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogWriter {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogWriter {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.buffer.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for LogWriter {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.buffer.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_per_stream_and_keeps_partials() {
        let logs = LogBuffer::new(1024);
        logs.write(LogStream::Stdout, b"one\ntw");
        logs.write(LogStream::Stderr, b"err\r\n");
        logs.write(LogStream::Stdout, b"o\nthree");
        let lines: Vec<_> = logs.lines().into_iter().map(|l| (l.stream, l.line)).collect();
        assert_eq!(
            lines,
            [
                (LogStream::Stdout, "one".to_owned()),
                (LogStream::Stderr, "err".to_owned()),
                (LogStream::Stdout, "two".to_owned())
            ]
        );
        logs.close();
        assert_eq!(logs.tail(1)[0].line, "three");
        assert!(logs.is_closed());
    }

    #[test]
    fn drops_oldest_past_the_cap() {
        let logs = LogBuffer::new(10);
        for i in 0..10 {
            logs.push(LogStream::Stdout, format!("line {i}"));
        }
        let lines = logs.lines();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].line, "line 9");
        assert_eq!(lines[0].seq, 10);
        assert_eq!(logs.after(9).len(), 1);
        assert!(logs.since(SystemTime::now() + std::time::Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn empty_lines_count_against_the_byte_cap() {
        let cap = 64 * 1024;
        let logs = LogBuffer::new(cap);
        // A pod printing `\n` in a loop: a million empty lines.
        logs.write(LogStream::Stdout, &vec![b'\n'; 1 << 20]);
        let held = logs.lines().len();
        assert_eq!(held, cap / LINE_OVERHEAD, "empty lines held under a {cap}-byte cap");
        assert_eq!(logs.lines().last().map(|l| l.seq), Some(1 << 20), "the newest are kept");
        let accounted = logs.lock().bytes;
        assert!(accounted <= cap, "{accounted} bytes accounted");
    }

    #[test]
    fn the_line_cap_holds_whatever_the_bytes() {
        let logs = LogBuffer::with_limits(usize::MAX, 100);
        for i in 0..1000 {
            logs.push(LogStream::Stderr, format!("{i}"));
        }
        let lines = logs.lines();
        assert_eq!(lines.len(), 100);
        assert_eq!(lines[0].line, "900");
        // The default line cap holds too.
        let logs = LogBuffer::new(usize::MAX);
        for _ in 0..DEFAULT_MAX_LINES * 2 {
            logs.push(LogStream::Stdout, "");
        }
        assert_eq!(logs.lines().len(), DEFAULT_MAX_LINES);
    }

    #[tokio::test]
    async fn followers_wake_on_new_lines_and_stop_on_close() {
        let logs = LogBuffer::new(1024);
        let follower = tokio::spawn({
            let logs = logs.clone();
            async move {
                let mut seen = Vec::new();
                let mut seq = 0;
                loop {
                    let lines = logs.next_after(seq).await;
                    let Some(last) = lines.last() else { break };
                    seq = last.seq;
                    seen.extend(lines.into_iter().map(|l| l.line));
                }
                seen
            }
        });
        logs.push(LogStream::Stdout, "a");
        tokio::task::yield_now().await;
        logs.push(LogStream::Stdout, "b");
        logs.close();
        assert_eq!(follower.await.expect("follower"), ["a", "b"]);
    }
}
