//! TLS termination for Ingress: certificates from `kubernetes.io/tls` Secrets, chosen by
//! SNI from the current snapshot (so a changed Secret is served from the next handshake).

use crate::ingress::TlsRef;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use base64::Engine as _;
use flotilla_client::ObjectKey;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The certificates by server name.
#[derive(Debug, Default)]
pub(crate) struct TlsTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` under `example.com`.
    wildcards: HashMap<String, Arc<CertifiedKey>>,
    /// The first usable certificate, for names no entry lists (and clients without SNI).
    fallback: Option<Arc<CertifiedKey>>,
}

impl TlsTable {
    pub(crate) fn resolve(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name {
            let name = crate::dispatch::lowercase(name);
            let name = name.as_ref();
            if let Some(cert) = self.exact.get(name) {
                return Some(cert.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(cert) = self.wildcards.get(parent)
            {
                return Some(cert.clone());
            }
        }
        self.fallback.clone()
    }
}

/// Parsed Secrets, kept while their `resourceVersion` stays, so a rebuild parses only
/// what changed.
#[derive(Debug)]
pub(crate) struct CertCache {
    provider: Arc<CryptoProvider>,
    parsed: HashMap<ObjectKey, (String, Result<Arc<CertifiedKey>, String>)>,
}

impl Default for CertCache {
    fn default() -> Self {
        CertCache { provider: Arc::new(rustls::crypto::ring::default_provider()), parsed: HashMap::new() }
    }
}

impl CertCache {
    /// The table of these entries; a missing or bad Secret is a warning and its hosts
    /// get the fallback certificate.
    pub(crate) fn table(
        &mut self,
        refs: &[TlsRef],
        secrets: &HashMap<ObjectKey, &Value>,
        warnings: &mut Vec<String>,
    ) -> TlsTable {
        let mut table = TlsTable::default();
        let mut parsed = HashMap::new();
        for entry in refs {
            let key = ObjectKey::new(entry.namespace.as_str(), entry.secret.as_str());
            let Some(secret) = secrets.get(&key) else {
                warnings.push(format!(
                    "ingress {}: TLS secret {key} not found (or not of type kubernetes.io/tls)",
                    entry.ingress
                ));
                continue;
            };
            let version = secret["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
            let cert = match parsed.get(&key).or_else(|| self.parsed.get(&key)) {
                Some((seen, cert)) if *seen == version => cert.clone(),
                _ => parse(secret, &self.provider),
            };
            parsed.insert(key.clone(), (version, cert.clone()));
            let cert = match cert {
                Ok(cert) => cert,
                Err(why) => {
                    warnings.push(format!("ingress {}: TLS secret {key}: {why}", entry.ingress));
                    continue;
                }
            };
            if table.fallback.is_none() {
                table.fallback = Some(cert.clone());
            }
            for host in &entry.hosts {
                match host.strip_prefix("*.") {
                    Some(parent) => table.wildcards.entry(parent.to_string()).or_insert_with(|| cert.clone()),
                    None => table.exact.entry(host.clone()).or_insert_with(|| cert.clone()),
                };
            }
        }
        self.parsed = parsed;
        table
    }
}

/// One of a Secret's keys, from `data` (base64) or `stringData`.
fn secret_field(secret: &Value, key: &str) -> Result<Vec<u8>, String> {
    if let Some(encoded) = secret["data"][key].as_str() {
        return base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|e| format!("{key}: {e}"));
    }
    match secret["stringData"][key].as_str() {
        Some(text) => Ok(text.as_bytes().to_vec()),
        None => Err(format!("has no {key}")),
    }
}

/// The certificate chain and key of a `kubernetes.io/tls` Secret.
fn parse(secret: &Value, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
    let chain = secret_field(secret, "tls.crt")?;
    let key = secret_field(secret, "tls.key")?;
    let chain =
        CertificateDer::pem_slice_iter(&chain).collect::<Result<Vec<_>, _>>().map_err(|e| format!("tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("tls.key: {e}"))?;
    CertifiedKey::from_der(chain, key, provider).map(Arc::new).map_err(|e| format!("tls.key: {e}"))
}

/// Picks the certificate of each handshake from the current snapshot.
#[derive(Debug)]
struct Resolver(Arc<ArcSwap<Snapshot>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load().tls.resolve(hello.server_name())
    }
}

/// The HTTPS listener's configuration: certificates by SNI, HTTP/2 and HTTP/1.1 by ALPN.
pub(crate) fn server_config(snapshot: Arc<ArcSwap<Snapshot>>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(snapshot)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A CA and certificates it signs, for tests.
    pub(crate) struct TestCa {
        pub(crate) pem: String,
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    impl TestCa {
        pub(crate) fn new() -> TestCa {
            let key = rcgen::KeyPair::generate().expect("a CA key");
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name.push(rcgen::DnType::CommonName, "flotilla-proxy test CA");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
            let cert = params.self_signed(&key).expect("a CA certificate");
            TestCa { pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
        }

        /// A certificate for `names` and its key, both PEM.
        pub(crate) fn issue(&self, names: &[&str]) -> (String, String) {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let params = rcgen::CertificateParams::new(names).expect("names");
            let key = rcgen::KeyPair::generate().expect("a key");
            let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
            (cert.pem(), key.serialize_pem())
        }

        /// A `kubernetes.io/tls` Secret of a certificate for `names`.
        pub(crate) fn secret(&self, name: &str, names: &[&str]) -> Value {
            let (cert, key) = self.issue(names);
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                   "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
                   "data": {"tls.crt": b64(&cert), "tls.key": b64(&key)}})
        }
    }

    fn tls_ref(secret: &str, hosts: &[&str]) -> TlsRef {
        TlsRef {
            ingress: "default/ing".into(),
            namespace: "default".into(),
            secret: secret.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn certificates_by_name_wildcard_and_fallback() {
        let ca = TestCa::new();
        let a = ca.secret("a", &["a.test"]);
        let wild = ca.secret("wild", &["*.wild.test"]);
        let mut bad = ca.secret("bad", &["bad.test"]);
        bad["data"]["tls.key"] = json!("bm90IGEga2V5");
        let secrets: Vec<(ObjectKey, &Value)> = [&a, &wild, &bad].iter().map(|s| (ObjectKey::of(s), *s)).collect();
        let secrets: HashMap<_, _> = secrets.into_iter().collect();
        let refs = [
            tls_ref("missing", &["missing.test"]),
            tls_ref("bad", &["bad.test"]),
            tls_ref("a", &["a.test"]),
            tls_ref("wild", &["*.wild.test"]),
        ];
        let mut cache = CertCache::default();
        let mut warnings = Vec::new();
        let table = cache.table(&refs, &secrets, &mut warnings);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("default/missing not found"), "{warnings:?}");
        assert!(warnings[1].contains("default/bad: tls.key"), "{warnings:?}");

        let cert = |name: Option<&str>| table.resolve(name).map(|c| c.cert[0].clone());
        let a_cert = cert(Some("a.test")).expect("a.test has a certificate");
        let wild_cert = cert(Some("x.wild.test")).expect("x.wild.test has a certificate");
        assert_ne!(a_cert, wild_cert);
        assert_eq!(cert(Some("A.TEST")), Some(a_cert.clone()));
        // Hosts without a usable certificate get the first usable one.
        assert_eq!(cert(Some("bad.test")), Some(a_cert.clone()));
        assert_eq!(cert(Some("y.x.wild.test")), Some(a_cert.clone()));
        assert_eq!(cert(None), Some(a_cert));

        // Nothing usable: no certificate, the handshake fails.
        let table = cache.table(&refs[..2], &secrets, &mut Vec::new());
        assert!(table.resolve(Some("bad.test")).is_none());
    }
}
