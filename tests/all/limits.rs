//! Connections are bounded: a client that is slow to finish its TLS handshake or to send
//! its headers is disconnected, a listener holds at most `--max-connections`
//! connections, and requests past `--max-mutating-requests-inflight` get kube-apiserver's
//! 429 with `Retry-After`. Each server is started with small limits so that the tests
//! run in seconds.

use crate::support::Server;
use anyhow::{Context as _, Result, bail};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The API server's address and the admin token, from the server's kubeconfig and data
/// directory.
fn api(server: &Server) -> Result<(SocketAddr, String)> {
    let kubeconfig = std::fs::read_to_string(&server.kubeconfig)?;
    let url = kubeconfig
        .lines()
        .find_map(|line| line.trim().strip_prefix("server:"))
        .context("the kubeconfig names no server")?
        .trim();
    let addr = url.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/').parse()?;
    let token = std::fs::read_to_string(server.data_dir().join("admin.token"))?.trim().to_string();
    Ok((addr, token))
}

/// Waits up to `within` for the server to close `stream` (read gives end of file or an
/// error), and says how long it took; fails when it stays open.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Ok(started.elapsed()),
            // Whatever the server answers first (an error page), then it closes.
            Ok(Ok(_)) => continue,
            Err(_) => bail!("the connection is still open after {within:?}"),
        }
    }
}

/// Sends `request` on a fresh connection and reads the answer's head and what came of
/// its body until the server closes the connection (`Connection: close`) or `within`.
async fn exchange(addr: SocketAddr, request: &str, within: Duration) -> Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut answer)).await.context("no answer in time")??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn get_version(token: &str) -> String {
    format!("GET /version HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn clients_that_send_nothing_or_half_a_header_are_disconnected() -> Result<()> {
    let server = Server::start_with(&["--controllers=", "--insecure-http", "--header-read-timeout=1s"])?;
    let (addr, token) = api(&server)?;

    // Connected, and nothing sent.
    let mut silent = TcpStream::connect(addr).await?;
    let took = closed_within(&mut silent, Duration::from_secs(10)).await.context("a silent client")?;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}, before the timeout");

    // Half a header.
    let mut half = TcpStream::connect(addr).await?;
    half.write_all(b"GET /version HTTP/1.1\r\nHost: api\r\nAuthorization: Bear").await?;
    closed_within(&mut half, Duration::from_secs(10)).await.context("a client sending half a header")?;

    // A header trickled a byte at a time is cut off too, however busy it keeps the line.
    let mut trickle = TcpStream::connect(addr).await?;
    let started = Instant::now();
    let mut cut_off = false;
    for byte in b"GET /version HTTP/1.1\r\nHost: api\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if trickle.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cut_off = cut_off || closed_within(&mut trickle, Duration::from_secs(5)).await.is_ok();
    assert!(cut_off, "a trickling client was still connected after {:?}", started.elapsed());

    // The server serves the clients that do send.
    let answer = exchange(addr, &get_version(&token), Duration::from_secs(10)).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The Ingress listener has the same bound.
    let mut silent = TcpStream::connect(server.ingress_http()?).await?;
    closed_within(&mut silent, Duration::from_secs(10)).await.context("a silent Ingress client")?;
    Ok(())
}

#[tokio::test]
async fn a_tls_client_that_never_finishes_its_handshake_is_disconnected() -> Result<()> {
    let server = Server::start_with(&["--controllers=", "--tls-handshake-timeout=1s"])?;
    let (addr, _) = api(&server)?;

    let mut silent = TcpStream::connect(addr).await?;
    closed_within(&mut silent, Duration::from_secs(10)).await.context("a client that sends no ClientHello")?;

    // The start of a ClientHello record (TLS 1.2 handshake, 512 bytes announced), then
    // nothing.
    let mut stalled = TcpStream::connect(addr).await?;
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]).await?;
    closed_within(&mut stalled, Duration::from_secs(10)).await.context("a client stalled in its ClientHello")?;

    // A real client still gets through.
    let version = server.client.get("/version").await?.ok()?;
    assert!(version["gitVersion"].is_string(), "{version}");
    Ok(())
}

#[tokio::test]
async fn a_listener_serves_no_more_than_max_connections_at_once() -> Result<()> {
    let server = Server::start_with(&["--controllers=", "--insecure-http", "--max-connections=2"])?;
    let (addr, token) = api(&server)?;

    // Two clients hold the two connections (connected, sending nothing yet).
    let mut holders = vec![TcpStream::connect(addr).await?, TcpStream::connect(addr).await?];
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A third is not served while they are open…
    let mut third = TcpStream::connect(addr).await?;
    third.write_all(get_version(&token).as_bytes()).await?;
    let mut answer = Vec::new();
    let early = tokio::time::timeout(Duration::from_secs(2), third.read_to_end(&mut answer)).await;
    assert!(early.is_err(), "served past the cap: {}", String::from_utf8_lossy(&answer));

    // …and is, as soon as one of them closes.
    holders.pop();
    tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut answer))
        .await
        .context("not served after a connection closed")??;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Ok(())
}

#[tokio::test]
async fn mutating_requests_past_the_inflight_cap_get_429_with_retry_after() -> Result<()> {
    let server = Server::start_with(&[
        "--controllers=",
        "--insecure-http",
        "--max-mutating-requests-inflight=1",
        "--max-requests-inflight=1",
    ])?;
    let (addr, token) = api(&server)?;
    let create = |name: &str| {
        let body = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}}}}"#);
        format!(
            "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };

    // One create in flight: its body is announced and half sent.
    let whole = create("held");
    let (head, rest) = whole.split_at(whole.len() - 20);
    let mut held = TcpStream::connect(addr).await?;
    held.write_all(head.as_bytes()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The next is refused at once, as kube-apiserver refuses it.
    let refused = exchange(addr, &create("refused"), Duration::from_secs(10)).await?;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"), "{refused}");
    assert!(refused.contains(r#""reason":"TooManyRequests""#), "{refused}");

    // Reads have their own cap, and watches are not counted.
    let answer = exchange(addr, &get_version(&token), Duration::from_secs(10)).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut watch = TcpStream::connect(addr).await?;
    let watch_request = format!(
        "GET /api/v1/namespaces/default/configmaps?watch=true HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    watch.write_all(watch_request.as_bytes()).await?;
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), watch.read_exact(&mut head)).await??;
    assert_eq!(&head, b"HTTP/1.1 200");
    let answer = exchange(addr, &get_version(&token), Duration::from_secs(10)).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "a watch took the read cap: {answer}");

    // Once the first is done, writes go through again.
    held.write_all(rest.as_bytes()).await?;
    let mut first = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), held.read_to_end(&mut first)).await??;
    assert!(first.starts_with(b"HTTP/1.1 201"), "{}", String::from_utf8_lossy(&first));
    let created = exchange(addr, &create("after"), Duration::from_secs(10)).await?;
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");

    let metrics = server.client.get("/metrics").await?;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(text.contains("apiserver_dropped_requests_total{request_kind=\"mutating\"} 1"), "{text}");
    Ok(())
}
