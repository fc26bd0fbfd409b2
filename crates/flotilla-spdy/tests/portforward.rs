//! The port-forward server against a hand-rolled SPDY client that behaves as client-go's
//! `tools/portforward` does (error + data stream per connection, error stream half-closed at
//! once, data stream FIN at local EOF and RST once the server's side ended), over an
//! in-memory pipe, forwarding to TCP servers on loopback.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use flotilla_spdy::frame::{FLAG_FIN, Frame, FrameDecoder, FrameEncoder, Headers, Limits, goaway_status, rst_status};
use flotilla_spdy::{Config, Error, PortForwardOptions, accept, serve_port_forward};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const STEP: Duration = Duration::from_secs(20);

struct ClientWriter {
    wr: WriteHalf<DuplexStream>,
    enc: FrameEncoder,
}

impl ClientWriter {
    async fn send(&mut self, frame: Frame) {
        let mut buf = BytesMut::new();
        self.enc.encode(&frame, &mut buf).unwrap();
        self.wr.write_all(&buf).await.unwrap();
    }

    /// Closes the client's side of the connection (EOF for the server).
    async fn close(mut self) {
        self.wr.shutdown().await.unwrap();
    }

    async fn raw(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.unwrap();
    }

    async fn open(&mut self, stream_id: u32, headers: &[(&str, &str)]) {
        let headers: Headers = headers.iter().copied().collect();
        self.send(Frame::SynStream { stream_id, associated_to: 0, priority: 0, slot: 0, flags: 0, headers }).await;
    }

    /// What client-go sends for one forwarded connection: the error stream (closed at once,
    /// the client never writes to it) and the data stream.
    async fn open_pair(&mut self, first_id: u32, port: &str, request_id: &str) {
        self.open(first_id, &[("streamtype", "error"), ("port", port), ("requestid", request_id)]).await;
        self.data(first_id, b"", true).await;
        self.open(first_id + 2, &[("streamtype", "data"), ("port", port), ("requestid", request_id)]).await;
    }

    async fn data(&mut self, stream_id: u32, data: &[u8], fin: bool) {
        let flags = if fin { FLAG_FIN } else { 0 };
        self.send(Frame::Data { stream_id, flags, data: Bytes::copy_from_slice(data) }).await;
    }
}

struct ClientReader {
    rx: mpsc::UnboundedReceiver<Frame>,
    replied: Vec<u32>,
}

impl ClientReader {
    /// The next frame from the server, `None` at EOF.
    async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(STEP, self.rx.recv()).await.expect("server went silent")
    }

    /// Reads frames until every stream in `streams` has ended (FIN or RST); returns each
    /// stream's bytes, whether it got a SYN_REPLY, and its RST status if any.
    async fn collect(&mut self, streams: &[u32]) -> HashMap<u32, StreamResult> {
        let mut out: HashMap<u32, StreamResult> = streams.iter().map(|id| (*id, StreamResult::default())).collect();
        while out.values().any(|r| !r.ended()) {
            match self.next().await.expect("EOF before the streams ended") {
                Frame::SynReply { stream_id, .. } => self.replied.push(stream_id),
                Frame::Data { stream_id, flags, data } => {
                    let r = out.entry(stream_id).or_default();
                    assert!(!r.fin, "data after FIN on stream {stream_id}");
                    r.data.extend_from_slice(&data);
                    r.fin |= flags & FLAG_FIN != 0;
                }
                Frame::RstStream { stream_id, status } => out.entry(stream_id).or_default().rst = Some(status),
                other => panic!("unexpected frame {other:?}"),
            }
        }
        for (id, r) in out.iter_mut() {
            r.replied = self.replied.contains(id);
        }
        out
    }
}

#[derive(Debug, Default)]
struct StreamResult {
    replied: bool,
    data: Vec<u8>,
    fin: bool,
    rst: Option<u32>,
}

impl StreamResult {
    fn ended(&self) -> bool {
        self.fin || self.rst.is_some()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

fn client(io: DuplexStream) -> (ClientWriter, ClientReader) {
    let (rd, wr) = tokio::io::split(io);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(read_frames(rd, tx));
    (ClientWriter { wr, enc: FrameEncoder::new().unwrap() }, ClientReader { rx, replied: Vec::new() })
}

async fn read_frames(mut rd: ReadHalf<DuplexStream>, tx: mpsc::UnboundedSender<Frame>) {
    let mut dec = FrameDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    loop {
        while let Some(frame) = dec.decode(&mut buf).unwrap() {
            if tx.send(frame).is_err() {
                return;
            }
        }
        buf.reserve(64 * 1024);
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// An echo server (half-close aware) and a one-shot HTTP server on loopback.
async fn pod() -> (SocketAddr, SocketAddr) {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = http.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "hello from the pod";
                let resp =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (echo_addr, http_addr)
}

/// Starts the port-forward server on one end of a pipe: port 80 is the echo server, 8080
/// the HTTP server, anything else refuses.
async fn start(options: PortForwardOptions) -> (ClientWriter, ClientReader, JoinHandle<Result<(), Error>>) {
    let (echo, http) = pod().await;
    let (server_io, client_io) = tokio::io::duplex(256 * 1024);
    let connect = move |port: u16| {
        let target = match port {
            80 => Some(echo),
            8080 => Some(http),
            _ => None,
        };
        async move {
            match target {
                Some(addr) => TcpStream::connect(addr).await,
                None => Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("dial tcp4 127.0.0.1:{port}: connect: connection refused"),
                )),
            }
        }
    };
    let server = tokio::spawn(serve_port_forward(server_io, options, connect));
    let (w, r) = client(client_io);
    (w, r, server)
}

fn options() -> PortForwardOptions {
    PortForwardOptions::new("web-0", "8c0a7c4e-1111-2222-3333-444455556666")
}

async fn finish(w: ClientWriter, mut r: ClientReader, server: JoinHandle<Result<(), Error>>) {
    w.close().await;
    // The server ends its side once it saw EOF and its forwards finished.
    while r.next().await.is_some() {}
    tokio::time::timeout(STEP, server).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn two_concurrent_connections_to_two_ports() {
    let (mut w, mut r, server) = start(options()).await;
    w.open_pair(1, "80", "0").await;
    w.open_pair(5, "8080", "1").await;
    w.data(3, b"hello ", false).await;
    w.data(7, b"GET / HTTP/1.1\r\nHost: web-0\r\n\r\n", false).await;
    w.data(3, b"echo", true).await;
    // As kubectl: read each data stream to the server's FIN, then reset it; the error
    // streams end after that.
    let data = r.collect(&[3, 7]).await;
    w.send(Frame::RstStream { stream_id: 3, status: rst_status::CANCEL }).await;
    w.send(Frame::RstStream { stream_id: 7, status: rst_status::CANCEL }).await;
    let errors = r.collect(&[1, 5]).await;
    let res: HashMap<u32, StreamResult> = data.into_iter().chain(errors).collect();
    for id in [3, 7] {
        assert!(res[&id].replied, "stream {id} got no SYN_REPLY");
        assert_eq!(res[&id].rst, None, "stream {id} was reset");
    }
    assert_eq!(res[&3].text(), "hello echo");
    assert!(res[&7].text().starts_with("HTTP/1.1 200 OK\r\n"), "{}", res[&7].text());
    assert!(res[&7].text().ends_with("hello from the pod"));
    assert_eq!(res[&1].text(), "", "error stream of request 0");
    assert_eq!(res[&5].text(), "", "error stream of request 1");
    finish(w, r, server).await;
}

#[tokio::test]
async fn ten_mib_round_trip_through_the_echo_server() {
    const TOTAL: usize = 10 * 1024 * 1024;
    let (mut w, mut r, server) = start(options()).await;
    w.open_pair(1, "80", "0").await;
    let body: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    let sent = body.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(32 * 1024) {
            w.data(3, chunk, false).await;
        }
        w.data(3, b"", true).await;
        w
    });
    let res = tokio::time::timeout(Duration::from_secs(120), r.collect(&[1, 3])).await.unwrap();
    let w = writer.await.unwrap();
    assert_eq!(res[&3].data.len(), TOTAL);
    assert!(res[&3].data == body, "echoed bytes differ");
    assert_eq!(res[&1].text(), "");
    finish(w, r, server).await;
}

#[tokio::test]
async fn many_connections_multiplexed_on_one_session() {
    let (mut w, mut r, server) = start(options()).await;
    let n = 50u32;
    for i in 0..n {
        w.open_pair(1 + 4 * i, "80", &i.to_string()).await;
    }
    for i in 0..n {
        w.data(3 + 4 * i, format!("connection {i}").as_bytes(), true).await;
    }
    let ids: Vec<u32> = (0..n).flat_map(|i| [1 + 4 * i, 3 + 4 * i]).collect();
    let res = r.collect(&ids).await;
    for i in 0..n {
        assert_eq!(res[&(3 + 4 * i)].text(), format!("connection {i}"));
        assert_eq!(res[&(1 + 4 * i)].text(), "");
    }
    finish(w, r, server).await;
}

#[tokio::test]
async fn connect_failure_is_reported_on_the_error_stream_in_kubelet_words() {
    let (mut w, mut r, server) = start(options()).await;
    w.open_pair(1, "81", "0").await;
    let res = r.collect(&[1, 3]).await;
    assert_eq!(
        res[&1].text(),
        "error forwarding port 81 to pod web-0, uid 8c0a7c4e-1111-2222-3333-444455556666: \
         dial tcp4 127.0.0.1:81: connect: connection refused"
    );
    assert!(res[&1].fin && res[&3].fin);
    assert_eq!(res[&3].text(), "");
    finish(w, r, server).await;
}

#[tokio::test]
async fn streams_without_valid_port_or_type_are_reset() {
    let (mut w, mut r, server) = start(options()).await;
    w.open(1, &[("streamtype", "data"), ("requestid", "0")]).await;
    w.open(3, &[("streamtype", "data"), ("port", "0"), ("requestid", "0")]).await;
    w.open(5, &[("streamtype", "data"), ("port", "99999"), ("requestid", "0")]).await;
    w.open(7, &[("streamtype", "stdin"), ("port", "80"), ("requestid", "0")]).await;
    w.open(9, &[("port", "80"), ("requestid", "0")]).await;
    let res = r.collect(&[1, 3, 5, 7, 9]).await;
    for id in [1, 3, 5, 7, 9] {
        assert_eq!(res[&id].rst, Some(rst_status::CANCEL), "stream {id}");
        assert!(!res[&id].replied);
    }
    finish(w, r, server).await;
}

#[tokio::test]
async fn a_lone_stream_times_out_waiting_for_its_pair() {
    let mut opts = options();
    opts.stream_creation_timeout = Duration::from_millis(200);
    let (mut w, mut r, server) = start(opts).await;
    w.open(1, &[("streamtype", "error"), ("port", "80"), ("requestid", "7")]).await;
    w.data(1, b"", true).await;
    let res = r.collect(&[1]).await;
    assert_eq!(res[&1].text(), "(conn=spdy, request=7) timed out waiting for streams");
    finish(w, r, server).await;
}

#[tokio::test]
async fn requests_without_request_id_pair_by_stream_id() {
    let (mut w, mut r, server) = start(options()).await;
    w.open(1, &[("streamtype", "error"), ("port", "80")]).await;
    w.data(1, b"", true).await;
    w.open(3, &[("streamtype", "data"), ("port", "80")]).await;
    w.data(3, b"old client", true).await;
    let res = r.collect(&[1, 3]).await;
    assert_eq!(res[&3].text(), "old client");
    finish(w, r, server).await;
}

#[tokio::test]
async fn ping_is_answered() {
    let (mut w, mut r, server) = start(options()).await;
    // An even id would be the answer to a server ping: not echoed.
    w.send(Frame::Ping { id: 2 }).await;
    w.send(Frame::Ping { id: 1 }).await;
    assert_eq!(r.next().await, Some(Frame::Ping { id: 1 }));
    w.send(Frame::Ping { id: 3 }).await;
    assert_eq!(r.next().await, Some(Frame::Ping { id: 3 }));
    finish(w, r, server).await;
}

#[tokio::test]
async fn settings_window_update_and_unknown_frames_are_tolerated() {
    let (mut w, mut r, server) = start(options()).await;
    w.send(Frame::Settings {
        flags: 0,
        entries: vec![flotilla_spdy::frame::Setting { flags: 0, id: 7, value: 65536 }],
    })
    .await;
    w.send(Frame::WindowUpdate { stream_id: 0, delta: 1 << 20 }).await;
    w.raw(&[0x80, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x02, 0xab, 0xcd]).await; // type 10: unknown
    w.open_pair(1, "80", "0").await;
    w.data(3, b"still fine", true).await;
    let res = r.collect(&[1, 3]).await;
    assert_eq!(res[&3].text(), "still fine");
    finish(w, r, server).await;
}

async fn expect_goaway(bytes: &[u8]) {
    let (mut w, mut r, server) = start(options()).await;
    w.raw(bytes).await;
    match r.next().await {
        Some(Frame::GoAway { status, .. }) => assert_eq!(status, goaway_status::PROTOCOL_ERROR),
        other => panic!("expected GOAWAY for {bytes:02x?}, got {other:?}"),
    }
    assert_eq!(r.next().await, None, "the server closes after GOAWAY");
    let result = tokio::time::timeout(STEP, server).await.unwrap().unwrap();
    assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
}

#[tokio::test]
async fn malformed_frames_end_the_session_with_goaway() {
    // SPDY/2 control frame.
    expect_goaway(&[0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1]).await;
    // RST_STREAM of the wrong length.
    expect_goaway(&[0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1]).await;
    // DATA on stream 0.
    expect_goaway(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x42]).await;
    // SYN_STREAM whose header block is not zlib.
    expect_goaway(&[0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0e, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]).await;
    // Control frame longer than any header block may be.
    expect_goaway(&[0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff]).await;
}

#[tokio::test]
async fn oversized_header_block_is_refused_with_goaway() {
    let big = "x".repeat(300 * 1024);
    let headers: Headers = [("streamtype", "data"), ("port", "80"), ("junk", big.as_str())].into_iter().collect();
    let mut enc = FrameEncoder::new().unwrap();
    let mut buf = BytesMut::new();
    enc.encode(&Frame::SynStream { stream_id: 1, associated_to: 0, priority: 0, slot: 0, flags: 0, headers }, &mut buf)
        .unwrap();
    assert!(buf.len() < 16 * 1024, "the block compresses well; only its inflated size is over");
    expect_goaway(&buf).await;
}

/// The session layer alone: concurrency limit, stream ids, reads, writes and resets.
#[tokio::test]
async fn session_limits_and_stream_lifecycle() {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let config = Config { max_concurrent_streams: 2, ..Config::default() };
    let (driver, mut incoming) = accept(server_io, config);
    let driver = tokio::spawn(driver);
    let (mut w, mut r) = client(client_io);

    w.open(1, &[("a", "1")]).await;
    w.open(3, &[("a", "3")]).await;
    w.open(5, &[("a", "5")]).await; // over the limit
    w.open(3, &[("a", "3 again")]).await; // id not increasing
    assert_eq!(r.next().await, Some(Frame::RstStream { stream_id: 5, status: rst_status::REFUSED_STREAM }));
    assert_eq!(r.next().await, Some(Frame::RstStream { stream_id: 3, status: rst_status::PROTOCOL_ERROR }));

    let s1 = incoming.next().await.unwrap();
    assert_eq!((s1.id(), s1.headers().get("A")), (1, Some("1")));
    let mut s1 = s1.accept();
    let s3 = incoming.next().await.unwrap();
    s3.reject(rst_status::CANCEL);
    assert_eq!(r.next().await, Some(Frame::SynReply { stream_id: 1, flags: 0, headers: Headers::new() }));
    assert_eq!(r.next().await, Some(Frame::RstStream { stream_id: 3, status: rst_status::CANCEL }));

    // Reads, writes, FIN both ways.
    w.data(1, b"ping", true).await;
    let mut got = String::new();
    s1.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "ping");
    s1.write_all(b"pong").await.unwrap();
    s1.shutdown().await.unwrap();
    assert_eq!(r.next().await, Some(Frame::Data { stream_id: 1, flags: 0, data: Bytes::from_static(b"pong") }));
    assert_eq!(r.next().await, Some(Frame::Data { stream_id: 1, flags: FLAG_FIN, data: Bytes::new() }));
    assert!(s1.write_all(b"late").await.is_err(), "write after shutdown");
    drop(s1);

    // Stream 1 finished and 3 was reset: room for two more.
    w.open(7, &[]).await;
    w.open(9, &[]).await;
    let mut s7 = incoming.next().await.unwrap().accept();
    let s9 = incoming.next().await.unwrap();
    drop(s9); // unanswered: refused
    assert_eq!(r.next().await, Some(Frame::SynReply { stream_id: 7, flags: 0, headers: Headers::new() }));
    assert_eq!(r.next().await, Some(Frame::RstStream { stream_id: 9, status: rst_status::REFUSED_STREAM }));

    // The peer resets a stream: reads and writes fail.
    w.send(Frame::RstStream { stream_id: 7, status: rst_status::CANCEL }).await;
    let mut buf = [0u8; 8];
    let err = s7.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(s7.write_all(b"x").await.unwrap_err().kind(), io::ErrorKind::ConnectionReset);

    // GOAWAY: no more streams.
    w.send(Frame::GoAway { last_good_stream_id: 0, status: goaway_status::OK }).await;
    assert!(incoming.next().await.is_none());
    w.open(11, &[]).await;
    assert_eq!(r.next().await, Some(Frame::RstStream { stream_id: 11, status: rst_status::REFUSED_STREAM }));

    w.close().await;
    tokio::time::timeout(STEP, driver).await.unwrap().unwrap().unwrap();
    // The session is gone: a live stream's writes fail instead of hanging.
    assert!(s7.write_all(b"x").await.is_err());
}

/// A stream whose reader does not read holds the session at its buffer limit (backpressure),
/// and releases it as it reads.
#[tokio::test]
async fn a_slow_reader_applies_backpressure_without_losing_data() {
    let (server_io, client_io) = tokio::io::duplex(16 * 1024);
    let config = Config { stream_recv_buffer: 64 * 1024, ..Config::default() };
    let (driver, mut incoming) = accept(server_io, config);
    let driver = tokio::spawn(driver);
    let (mut w, mut r) = client(client_io);
    w.open(1, &[]).await;
    let mut s = incoming.next().await.unwrap().accept();
    assert!(matches!(r.next().await, Some(Frame::SynReply { stream_id: 1, .. })));
    const TOTAL: usize = 2 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        for i in 0..TOTAL / 4096 {
            w.data(1, &[i as u8; 4096], false).await;
        }
        w.data(1, b"", true).await;
        w
    });
    // The writer cannot finish while nobody reads: the pipe and the stream buffer fill up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writer.is_finished(), "2 MiB fit in a 64 KiB stream buffer and a 16 KiB pipe?");
    let mut got = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got.len(), TOTAL);
    assert!(got.chunks(4096).enumerate().all(|(i, c)| c.iter().all(|b| *b == i as u8)));
    writer.await.unwrap().close().await;
    drop(s);
    tokio::time::timeout(STEP, driver).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn window_updates_are_sent_when_enabled() {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let config = Config { send_window_updates: true, ..Config::default() };
    let (driver, mut incoming) = accept(server_io, config);
    let driver = tokio::spawn(driver);
    let (mut w, mut r) = client(client_io);
    w.open(1, &[]).await;
    let mut s = incoming.next().await.unwrap().accept();
    assert!(matches!(r.next().await, Some(Frame::SynReply { stream_id: 1, .. })));
    w.data(1, &[7u8; 40 * 1024], true).await;
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), 40 * 1024);
    let mut updates = [r.next().await.unwrap(), r.next().await.unwrap()];
    updates.sort_by_key(|f| matches!(f, Frame::WindowUpdate { stream_id: 0, .. }));
    assert!(matches!(updates[0], Frame::WindowUpdate { stream_id: 1, delta } if delta >= 32 * 1024));
    assert!(matches!(updates[1], Frame::WindowUpdate { stream_id: 0, delta } if delta >= 32 * 1024));
    drop(s);
    w.close().await;
    tokio::time::timeout(STEP, driver).await.unwrap().unwrap().unwrap();
}

/// Random but well-formed frame sequences (streams opened out of order, data and resets for
/// unknown streams, FINs twice, pings, settings, GOAWAY) against a session whose application
/// accepts, reads, writes and drops streams: the session ends cleanly or with an error, and
/// nothing panics or hangs.
#[tokio::test]
async fn random_frame_sequences_never_panic_or_hang() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..40 {
        let (server_io, client_io) = tokio::io::duplex(8 * 1024);
        let config = Config { max_concurrent_streams: 8, stream_recv_buffer: 4096, ..Config::default() };
        let (driver, mut incoming) = accept(server_io, config);
        let driver = tokio::spawn(driver);
        let app = tokio::spawn(async move {
            let mut n = 0u32;
            while let Some(s) = incoming.next().await {
                n += 1;
                match n % 3 {
                    0 => s.reject(rst_status::CANCEL),
                    1 => drop(s),
                    _ => {
                        let mut s = s.accept();
                        tokio::spawn(async move {
                            let mut buf = [0u8; 512];
                            let _ = s.write_all(b"hi").await;
                            let _ = tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await;
                        });
                    }
                }
            }
        });
        let (mut w, mut r) = client(client_io);
        let drain = tokio::spawn(async move { while r.next().await.is_some() {} });
        for _ in 0..200 {
            let id = (next() % 40) as u32 + 1;
            let frame = match next() % 9 {
                0 | 1 => Frame::SynStream {
                    stream_id: id,
                    associated_to: 0,
                    priority: (next() % 8) as u8,
                    slot: 0,
                    flags: (next() % 4) as u8,
                    headers: [("port", "80"), ("streamtype", "data")].into_iter().collect(),
                },
                2 | 3 => Frame::Data {
                    stream_id: id,
                    flags: (next() % 2) as u8,
                    data: Bytes::from(vec![0u8; (next() % 3000) as usize]),
                },
                4 => Frame::RstStream { stream_id: id, status: (next() % 11) as u32 + 1 },
                5 => Frame::Ping { id: next() as u32 },
                6 => Frame::Settings { flags: 0, entries: vec![] },
                7 => Frame::WindowUpdate { stream_id: id, delta: (next() % 1000) as u32 + 1 },
                _ => Frame::Headers { stream_id: id, flags: (next() % 2) as u8, headers: Headers::new() },
            };
            w.send(frame).await;
        }
        if round % 2 == 0 {
            w.send(Frame::GoAway { last_good_stream_id: 0, status: 0 }).await;
        }
        w.close().await;
        tokio::time::timeout(STEP, driver).await.expect("session hung").unwrap().unwrap();
        tokio::time::timeout(STEP, app).await.unwrap().unwrap();
        tokio::time::timeout(STEP, drain).await.unwrap().unwrap();
    }
}
