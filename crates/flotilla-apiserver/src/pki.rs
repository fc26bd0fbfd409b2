//! The server's identity, made on first start as k3s does: a cluster CA, a serving
//! certificate signed by it, an admin bearer token, and a kubeconfig that carries all
//! three to clients. Later starts load the same files, so clients keep working.

use crate::error::{Error, Result};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The files under `DATA_DIR` that hold the server's identity.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub token: PathBuf,
    /// The node agents' secret, and the join token made from it (written for operators).
    pub node_token: PathBuf,
    pub join_token: PathBuf,
    pub kubeconfig: PathBuf,
}

impl PkiPaths {
    pub fn new(data_dir: &Path) -> Self {
        let tls = data_dir.join("tls");
        Self {
            ca_cert: tls.join("ca.crt"),
            ca_key: tls.join("ca.key"),
            server_cert: tls.join("server.crt"),
            server_key: tls.join("server.key"),
            token: data_dir.join("admin.token"),
            node_token: data_dir.join("node.token"),
            join_token: data_dir.join("join-token"),
            kubeconfig: data_dir.join("kubeconfig"),
        }
    }
}

/// What the server needs to serve HTTPS and check tokens.
#[derive(Debug, Clone)]
pub struct Identity {
    pub tls: Arc<rustls::ServerConfig>,
    pub admin_token: String,
    /// The secret node agents present (the part of the join token after `::node:`).
    pub node_token: String,
    pub ca_pem: String,
}

impl Identity {
    /// The token a node agent joins with, k3s-style: `K10<sha256 of the CA>::node:<secret>`,
    /// so the agent can check the CA it downloads before trusting it.
    pub fn join_token(&self) -> String {
        use sha2::Digest as _;
        let hash: String = sha2::Sha256::digest(self.ca_pem.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        format!("K10{hash}::node:{}", self.node_token)
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn tls_error(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::Tls(format!("{what}: {e}"))
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    std::fs::write(path, contents).map_err(io_error(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(path, private).map_err(io_error(path))?;
    }
    Ok(())
}

/// A fresh random token: 32 bytes from the OS, hex-encoded.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Tls(format!("no randomness: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Makes a CA and a serving certificate for `localhost`, the loopback addresses and
/// `extra_names`, and writes them with their keys.
fn generate_certificates(paths: &PkiPaths, extra_names: &[String]) -> Result<()> {
    let ca_key = KeyPair::generate().map_err(tls_error("generating the CA key"))?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name.push(DnType::CommonName, "flotilla-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_error("signing the CA"))?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let mut names = vec!["localhost".to_string(), "kubernetes".to_string(), "kubernetes.default".to_string()];
    names.extend(extra_names.iter().cloned());
    let mut server_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error("server names"))?;
    server_params.distinguished_name.push(DnType::CommonName, "flotilla-apiserver");
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.try_into().map_err(tls_error("a server name"))?),
        };
        server_params.subject_alt_names.push(san);
    }
    for ip in ["127.0.0.1", "::1"] {
        if let Ok(ip) = ip.parse::<IpAddr>() {
            server_params.subject_alt_names.push(SanType::IpAddress(ip));
        }
    }
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let server_key = KeyPair::generate().map_err(tls_error("generating the server key"))?;
    let server_cert =
        server_params.signed_by(&server_key, &issuer).map_err(tls_error("signing the server certificate"))?;

    write_private(&paths.ca_key, &ca_key.serialize_pem())?;
    write_private(&paths.ca_cert, &ca_cert.pem())?;
    write_private(&paths.server_key, &server_key.serialize_pem())?;
    write_private(&paths.server_cert, &server_cert.pem())?;
    Ok(())
}

/// Loads the server's identity from `data_dir`, making whatever is missing.
pub fn load_or_create(data_dir: &Path, extra_names: &[String]) -> Result<Identity> {
    let paths = PkiPaths::new(data_dir);
    if !paths.server_cert.exists() || !paths.server_key.exists() || !paths.ca_cert.exists() {
        generate_certificates(&paths, extra_names)?;
    }
    let admin_token = match std::fs::read_to_string(&paths.token) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
        _ => {
            let token = random_token()?;
            write_private(&paths.token, &token)?;
            token
        }
    };
    let node_token = match std::fs::read_to_string(&paths.node_token) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
        _ => {
            let token = random_token()?;
            write_private(&paths.node_token, &token)?;
            token
        }
    };
    let ca_pem = std::fs::read_to_string(&paths.ca_cert).map_err(io_error(&paths.ca_cert))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.server_cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| Error::Tls(format!("reading {}: {e}", paths.server_cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(&paths.server_key)
        .map_err(|e| Error::Tls(format!("reading {}: {e}", paths.server_key.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Tls(format!("the serving certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let identity = Identity { tls: Arc::new(config), admin_token, node_token, ca_pem };
    write_private(&paths.join_token, &format!("{}\n", identity.join_token()))?;
    Ok(identity)
}

/// Where a client should connect: an unspecified listen address (0.0.0.0) is reached
/// through loopback.
pub(crate) fn client_address(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let loopback: IpAddr =
            if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    }
}

/// Writes an admin kubeconfig, the file kubectl and every client library read.
pub fn write_kubeconfig(path: &Path, server: &str, ca_pem: &str, token: &str) -> Result<()> {
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "flotilla", "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "flotilla", "context": {"cluster": "flotilla", "user": "admin", "namespace": "default"}}],
        "current-context": "flotilla",
        "preferences": {},
    });
    let text =
        serde_yaml_ng::to_string(&kubeconfig).map_err(|e| Error::Tls(format!("encoding the kubeconfig: {e}")))?;
    write_private(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_made_once_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(dir.path(), &[]).expect("first start");
        let second = load_or_create(dir.path(), &[]).expect("second start");
        assert_eq!(first.admin_token, second.admin_token);
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_eq!(first.admin_token.len(), 64);
        let addr = client_address("0.0.0.0:6443".parse().expect("addr"));
        let path = dir.path().join("kubeconfig");
        write_kubeconfig(&path, &format!("https://{addr}"), &first.ca_pem, &first.admin_token).expect("write");
        let kubeconfig = std::fs::read_to_string(&path).expect("kubeconfig");
        assert!(kubeconfig.contains("server: https://127.0.0.1:6443"), "{kubeconfig}");
        assert!(kubeconfig.contains(&first.admin_token));
    }
}
