//! Ingress over HTTPS: certificates by SNI from Secrets, verified by a client that
//! trusts only the test CA; reloads; HTTP/2 by ALPN.

use super::*;
use crate::tls::tests::TestCa;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};

/// What one HTTPS request saw.
#[derive(Debug)]
struct Seen {
    alpn: Option<Vec<u8>>,
    certificate: CertificateDer<'static>,
    version: http::Version,
    body: String,
    forwarded_proto: String,
}

/// `GET /` over TLS to `addr` with SNI `name`, trusting only `ca_pem`, offering `alpn`.
async fn https_get(addr: SocketAddr, name: &str, ca_pem: &str, alpn: &[&[u8]]) -> Result<Seen, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("the CA")).expect("a root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let stream = connector.connect(server_name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let (_, connection) = stream.get_ref();
    let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
    let certificate = connection.peer_certificates().and_then(|c| c.first()).cloned().ok_or("no certificate")?;

    let request =
        |uri: String| Request::get(uri).header("host", name).body(Full::<Bytes>::default()).expect("a request");
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = request(format!("https://{name}/"));
        request.headers_mut().remove("host");
        sender.send_request(request).await.map_err(|e| e.to_string())?
    } else {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        sender.send_request(request("/".into())).await.map_err(|e| e.to_string())?
    };
    let version = response.version();
    let forwarded_proto =
        response.headers().get("x-seen-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Seen { alpn, certificate, version, body: String::from_utf8_lossy(&body).into_owned(), forwarded_proto })
}

fn leaf(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a certificate")
}

async fn tls_ingress(env: &Env, ca: &TestCa) -> (String, String) {
    for name in ["a", "b"] {
        env.service(name, json!([{"port": 80}])).await;
        env.endpoints(name, &format!("{name}-abc"), &[(&format!("{name}-pod"), true)]).await;
    }
    let (a_cert, a_key) = ca.issue(&["a.example.com"]);
    let (b_cert, b_key) = ca.issue(&["b.example.com"]);
    for (secret, cert, key) in [("a-tls", &a_cert, &a_key), ("b-tls", &b_cert, &b_key)] {
        env.create(json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": secret, "namespace": "default"},
            "stringData": {"tls.crt": cert, "tls.key": key}}))
            .await;
    }
    let rule = |host: &str, service: &str| {
        json!({"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": service, "port": {"number": 80}}}}]}})
    };
    env.create(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "secure", "namespace": "default"},
        "spec": {"ingressClassName": "flotilla",
            "tls": [{"hosts": ["a.example.com"], "secretName": "a-tls"},
                    {"hosts": ["b.example.com"], "secretName": "b-tls"},
                    {"hosts": ["c.example.com"], "secretName": "missing-tls"}],
            "rules": [rule("a.example.com", "a"), rule("b.example.com", "b"), rule("c.example.com", "a")]}}))
        .await;
    (a_cert, b_cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_chosen_by_sni_and_reloaded_when_the_secret_changes() {
    let env = start(test_config()).await;
    let ca = TestCa::new();
    let (a_cert, b_cert) = tls_ingress(&env, &ca).await;
    let addr = env.proxy.https_addr().expect("an HTTPS listener");
    let alpn: &[&[u8]] = &[b"http/1.1"];
    let a = wait_for("a.example.com over TLS", || async {
        https_get(addr, "a.example.com", &ca.pem, alpn).await.ok().filter(|seen| seen.body == "a-pod")
    })
    .await;
    assert_eq!(a.certificate, leaf(&a_cert));
    assert_eq!(a.version, http::Version::HTTP_11);
    assert_eq!(a.forwarded_proto, "https");
    let b = wait_for("b.example.com over TLS", || async {
        https_get(addr, "b.example.com", &ca.pem, alpn).await.ok().filter(|seen| seen.body == "b-pod")
    })
    .await;
    assert_eq!(b.certificate, leaf(&b_cert));

    // c.example.com's Secret is missing: it gets the first usable certificate, which
    // the client rejects for that name.
    let error = https_get(addr, "c.example.com", &ca.pem, alpn).await.expect_err("a certificate for another name");
    assert!(error.contains("handshake"), "{error}");

    // A new certificate in the Secret is served from the next handshake.
    let (renewed, renewed_key) = ca.issue(&["a.example.com"]);
    env.patch("v1", "Secret", "a-tls", json!({"stringData": {"tls.crt": renewed, "tls.key": renewed_key}})).await;
    let seen = wait_for("the renewed certificate", || async {
        https_get(addr, "a.example.com", &ca.pem, alpn).await.ok().filter(|seen| seen.certificate == leaf(&renewed))
    })
    .await;
    assert_eq!(seen.body, "a-pod");

    // A client that trusts another CA refuses the proxy's certificate.
    let other = TestCa::new();
    assert!(https_get(addr, "a.example.com", &other.pem, alpn).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_negotiated_by_alpn() {
    let env = start(test_config()).await;
    let ca = TestCa::new();
    let (_, b_cert) = tls_ingress(&env, &ca).await;
    let addr = env.proxy.https_addr().expect("an HTTPS listener");
    let alpn: &[&[u8]] = &[b"h2", b"http/1.1"];
    let seen = wait_for("b.example.com over HTTP/2", || async {
        https_get(addr, "b.example.com", &ca.pem, alpn).await.ok().filter(|seen| seen.body == "b-pod")
    })
    .await;
    assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.certificate, leaf(&b_cert));
    assert_eq!(seen.forwarded_proto, "https");
}
