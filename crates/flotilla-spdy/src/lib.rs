//! The server side of a SPDY/3.1 session, as kube's spdystream peer (kubectl, client-go)
//! speaks it, and kubelet's port-forward protocol over it.
//!
//! This crate owns the bytes *inside* an upgraded connection and nothing around it: no HTTP,
//! no upgrade handshake, no WebSocket. The integrator hands it any
//! `AsyncRead + AsyncWrite` byte stream — the connection after a legacy
//! `Upgrade: SPDY/3.1` response, or the concatenated binary messages of a
//! `SPDY/3.1+portforward.k8s.io` WebSocket — and gets:
//!
//! - [`frame`]: the SPDY/3 frame codec (all control frames, DATA, zlib header blocks with
//!   the SPDY/3 [`dictionary`]), usable from either side;
//! - [`session`]: a server session — [`session::accept`] returns a driver future and a
//!   receiver of [`session::IncomingStream`]s; an accepted stream is an
//!   `AsyncRead + AsyncWrite` ([`session::Stream`]) whose writes are DATA frames and whose
//!   shutdown is FIN;
//! - [`portforward`]: kubelet's port-forward handler over a session
//!   ([`portforward::serve_port_forward`]): pairs the `error` and `data` streams by
//!   `requestid`, connects to the port, copies both ways, reports failures on the error
//!   stream in kubelet's words.
//!
//! Everything from the peer is bounded (frame size, decompressed header block, header count,
//! concurrent streams, bytes buffered per stream, bytes queued for writing); a malformed
//! frame ends the session with GOAWAY(PROTOCOL_ERROR) and an [`Error`], never a panic.
//!
//! Flow control follows spdystream, which implements none (moby/spdystream issue #2, open
//! since 2014): it never sends WINDOW_UPDATE and ignores the ones it receives. So this side
//! does not wait for send windows (it would stall forever), and backpressure is the byte
//! stream's own: when a stream's receive buffer is full the session stops reading from the
//! connection until the stream's reader catches up, as spdystream's unbuffered channels do.
//! WINDOW_UPDATE frames can still be sent as data is consumed ([`session::Config`]), for a
//! peer that does flow control. The flip side: a stream the application accepted but neither
//! reads nor drops stalls the whole session once its buffer is full, as it would with kubelet.
//!
//! Wiring it up, once the integrator has upgraded the request and holds the byte stream:
//!
//! ```no_run
//! # async fn example(upgraded: tokio::io::DuplexStream) -> Result<(), flotilla_spdy::Error> {
//! use flotilla_spdy::{PortForwardOptions, serve_port_forward};
//!
//! let options = PortForwardOptions::new("web-0", "8c0a7c4e-0000-0000-0000-000000000000");
//! serve_port_forward(upgraded, options, |port| async move {
//!     // However the node reaches the pod's port.
//!     tokio::net::TcpStream::connect(("127.0.0.1", port)).await
//! })
//! .await
//! # }
//! ```

pub mod dictionary;
pub mod frame;
pub mod portforward;
pub mod session;

pub use frame::{Frame, FrameDecoder, FrameEncoder, FrameError, Headers, Limits};
pub use portforward::{PortForwardOptions, serve_port_forward};
pub use session::{Config, Incoming, IncomingStream, SessionDriver, Stream, accept};

/// Why a session ended other than by the peer closing it cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the underlying byte stream failed.
    #[error("SPDY connection i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol or a limit; GOAWAY(PROTOCOL_ERROR) was sent.
    #[error("SPDY protocol error from the peer: {0}")]
    Protocol(#[from] FrameError),
    /// This side failed to encode a frame (header compression).
    #[error("SPDY frame encoding failed: {0}")]
    Encode(FrameError),
}
