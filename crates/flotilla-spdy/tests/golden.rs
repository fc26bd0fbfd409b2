//! Golden bytes from Go: what client-go's port-forward sends for one connection, framed and
//! compressed with Go's `compress/zlib` exactly as spdystream's Framer does
//! (`NewWriterLevelDict(BestCompression, dictionary)`, a sync `Flush` per header block, one
//! compression context for the session). Produced by `testdata/go-interop` (`go run . gen`).
//! The second SYN_STREAM's 12-byte block only inflates with the first one's context.
//!
//! With `FLOTILLA_SPDY_DUMP=<path>` the test also writes the server's raw answer there, for
//! `go run . check < <path>` to parse it the way spdystream reads frames.
#![allow(clippy::unwrap_used)]

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use flotilla_spdy::frame::{FLAG_FIN, Frame, FrameDecoder, Headers, Limits};
use flotilla_spdy::{PortForwardOptions, serve_port_forward};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[rustfmt::skip]
const GO_CLIENT: &[u8] = &[
    0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3d, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0x25, 0x3a, 0x48, 0xf9, 0x5b, 0x04, 0x4a,
    0xab, 0x4c, 0x16, 0x06, 0x0c, 0x0c, 0x0c, 0x9c, 0x45, 0x90, 0xd8, 0xca, 0x04, 0xa5, 0x62, 0x46,
    0x03, 0x70, 0x3a, 0x2c, 0x29, 0x4a, 0x4d, 0xcc, 0x85, 0x16, 0x35, 0xac, 0xa9, 0xa0, 0x88, 0x00,
    0x00, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x80, 0x03, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x22,
    0x4b, 0x2b, 0xa8, 0x94, 0x4a, 0x04, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x03, 0x00,
    0x00, 0x00, 0x06, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x00, 0x00, 0x00, 0x03, 0x01, 0x00, 0x00,
    0x0a, 0x73, 0x70, 0x64, 0x79, 0x73, 0x74, 0x72, 0x65, 0x61, 0x6d, 0x80, 0x03, 0x00, 0x06, 0x00,
    0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01,
];

#[test]
fn go_zlib_client_frames_decode() {
    let mut dec = FrameDecoder::new(Limits::default());
    let mut buf = BytesMut::from(GO_CLIENT);
    let mut frames = Vec::new();
    while let Some(f) = dec.decode(&mut buf).unwrap() {
        frames.push(f);
    }
    assert!(buf.is_empty());
    let headers = |t| -> Headers { [("port", "80"), ("requestid", "0"), ("streamtype", t)].into_iter().collect() };
    assert_eq!(
        frames[0],
        Frame::SynStream { stream_id: 1, associated_to: 0, priority: 0, slot: 0, flags: 0, headers: headers("error") }
    );
    assert_eq!(
        frames[2],
        Frame::SynStream { stream_id: 3, associated_to: 0, priority: 0, slot: 0, flags: 0, headers: headers("data") }
    );
    assert_eq!(frames.len(), 6);
    assert_eq!(frames[5], Frame::Ping { id: 1 });
}

#[tokio::test]
async fn go_zlib_client_session_is_served() {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = echo.accept().await {
            let (mut r, mut w) = conn.into_split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        }
    });
    let (server_io, mut client) = tokio::io::duplex(64 * 1024);
    let connect = move |port: u16| async move {
        if port == 80 { TcpStream::connect(echo_addr).await } else { Err(io::Error::other("no such port")) }
    };
    let server = tokio::spawn(serve_port_forward(server_io, PortForwardOptions::new("web-0", "uid-0"), connect));
    client.write_all(GO_CLIENT).await.unwrap();

    // Read raw bytes until both streams ended, then close and read to EOF.
    let mut raw = Vec::new();
    let mut dec = FrameDecoder::new(Limits::default());
    let mut pending = BytesMut::new();
    let mut frames = Vec::new();
    let (mut fin1, mut fin3) = (false, false);
    let mut chunk = [0u8; 4096];
    while !(fin1 && fin3) {
        let n = tokio::time::timeout(Duration::from_secs(20), client.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "EOF before both streams ended");
        raw.extend_from_slice(&chunk[..n]);
        pending.extend_from_slice(&chunk[..n]);
        while let Some(f) = dec.decode(&mut pending).unwrap() {
            if let Frame::Data { stream_id, flags, .. } = &f
                && flags & FLAG_FIN != 0
            {
                fin1 |= *stream_id == 1;
                fin3 |= *stream_id == 3;
            }
            frames.push(f);
        }
    }
    client.shutdown().await.unwrap();
    client.read_to_end(&mut raw).await.unwrap();
    server.await.unwrap().unwrap();

    let replies: Vec<u32> = frames
        .iter()
        .filter_map(|f| if let Frame::SynReply { stream_id, .. } = f { Some(*stream_id) } else { None })
        .collect();
    assert_eq!(replies, [1, 3]);
    assert!(frames.contains(&Frame::Ping { id: 1 }));
    let echoed: Vec<u8> = frames
        .iter()
        .filter_map(|f| if let Frame::Data { stream_id: 3, data, .. } = f { Some(data.to_vec()) } else { None })
        .flatten()
        .collect();
    assert_eq!(echoed, b"hello spdystream");
    if let Ok(path) = std::env::var("FLOTILLA_SPDY_DUMP") {
        std::fs::write(path, &raw).unwrap();
    }
}

/// With `FLOTILLA_SPDY_DUMP_HEADERS=<path>`, writes SYN_REPLY and HEADERS frames with real
/// header blocks (sharing one compression context) for `go run . check < <path>`.
#[test]
fn header_blocks_for_the_go_check() {
    use flotilla_spdy::FrameEncoder;
    let mut enc = FrameEncoder::new().unwrap();
    let mut out = BytesMut::new();
    let big = "v".repeat(20_000);
    let blocks: [&[(&str, &str)]; 4] = [
        &[("streamtype", "data"), ("port", "8080"), ("requestid", "12")],
        &[("streamtype", "error"), ("port", "8080"), ("requestid", "12"), ("x-multi", "a"), ("x-multi", "b")],
        &[("content-type", "text/plain"), ("big", big.as_str())],
        &[],
    ];
    for (i, block) in blocks.iter().enumerate() {
        let headers: Headers = block.iter().copied().collect();
        let stream_id = 2 * i as u32 + 1;
        let frame = if i % 2 == 0 {
            Frame::SynReply { stream_id, flags: 0, headers }
        } else {
            Frame::Headers { stream_id, flags: FLAG_FIN, headers }
        };
        enc.encode(&frame, &mut out).unwrap();
    }
    let mut dec = FrameDecoder::new(Limits::default());
    let mut copy = out.clone();
    let mut n = 0;
    while dec.decode(&mut copy).unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 4);
    if let Ok(path) = std::env::var("FLOTILLA_SPDY_DUMP_HEADERS") {
        std::fs::write(path, &out).unwrap();
    }
}
