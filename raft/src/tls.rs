//! Cluster PKI: the cluster CA, node certificates, join tokens, and the rustls configs for QUIC.
//!
//! The first node creates a CA in `<data>/tls`. Every node holds a certificate signed by it; only
//! nodes with the control role also hold the CA key (they enrol the next nodes and mint join
//! tokens), so an edge host that is broken into cannot mint members. A node certificate names the
//! node (`CN=node-<id>`) and the roles it was enrolled with (`OU=bitriver-roles:<list>`), which
//! the members use to authorise each request (see [`crate::authz`]).
//!
//! Cluster QUIC uses mutual TLS 1.3 on ALPN [`ALPN`]: a peer is a member iff its certificate chains
//! to the CA. A peer without a certificate may only enrol, on its own ALPN [`ENROL_ALPN`] with
//! small limits, presenting a join token.
//!
//! Join token: `brj2.<ca fingerprint>.<expiry unix s>.<uses>.<nonce>.<mac>` (base64url parts),
//! where the MAC is HMAC-SHA256 keyed by a secret derived from the CA key. Anyone holding the CA
//! key can mint one offline (`bitriver cluster token`); its uses are counted in the replicated
//! catalog when it is presented. The joiner pins the CA by its fingerprint, so it never sends the
//! token to a server that is not a member of that cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use ring::{digest, hmac};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
};

use crate::NodeId;

/// The TLS server name every node certificate carries; nodes are told apart by node id, not DNS.
pub const SERVER_NAME: &str = "node.bitriver.cluster";
/// ALPN of the cluster protocol between members (client certificate required).
pub const ALPN: &[u8] = b"bitriver-cluster/1";
/// ALPN of enrolment: no client certificate, one small request (see [`crate::transport::PRE_AUTH_WINDOW`]).
pub const ENROL_ALPN: &[u8] = b"bitriver-enrol/1";
/// ALPN of the media relay between members (client certificate required; only roles that
/// package or transcode may subscribe, see [`crate::authz::may_subscribe`]).
pub const RELAY_ALPN: &[u8] = b"bitriver-relay/1";

const TOKEN_PREFIX: &str = "brj2";
/// Prefix of the organizational unit that lists a node certificate's roles.
const ROLES_OU_PREFIX: &str = "bitriver-roles:";
/// The role whose holders administer the cluster (hold the CA key, vote, write anything).
pub const CONTROL_ROLE: &str = "control";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("malformed join token: {0}")]
    MalformedToken(&'static str),
    #[error("join token was issued by another cluster")]
    TokenWrongCluster,
    #[error("join token expired")]
    TokenExpired,
    #[error("join token signature is invalid")]
    TokenInvalid,
    #[error("no cluster CA key in {0} (only control nodes hold it; mint tokens on one of those)")]
    NoCa(PathBuf),
    #[error("not a node certificate: {0}")]
    NotANodeCertificate(String),
    #[error("bad roles: {0}")]
    BadRoles(String),
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io { path: path.to_owned(), source })
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    let io = |source| TlsError::Io { path: path.to_owned(), source };
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(&tmp).map_err(io)?;
        file.write_all(contents.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    // Rename so that a crash never leaves a half-written key or certificate.
    std::fs::rename(&tmp, path).map_err(io)
}

/// SHA-256 of a DER certificate.
pub fn fingerprint(cert: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, cert);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_to_der(pem_text: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for block in pem_text.split("-----END CERTIFICATE-----") {
        let Some(start) = block.find("-----BEGIN CERTIFICATE-----") else { continue };
        let body: String = block[start + 27..].chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| TlsError::Certificate(rcgen::Error::CouldNotParseCertificate))?;
        out.push(CertificateDer::from(der));
    }
    if out.is_empty() {
        return Err(TlsError::Certificate(rcgen::Error::CouldNotParseCertificate));
    }
    Ok(out)
}

fn der_to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Paths of the PKI files inside a data dir.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    dir: PathBuf,
}

impl TlsPaths {
    pub fn new(data_dir: &Path) -> Self {
        TlsPaths { dir: data_dir.join("tls") }
    }
    fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    fn node_cert(&self) -> PathBuf {
        self.dir.join("node.pem")
    }
    fn node_key(&self) -> PathBuf {
        self.dir.join("node.key")
    }
    /// Whether this data dir already holds a node identity.
    pub fn has_identity(&self) -> bool {
        self.node_cert().exists() && self.node_key().exists() && self.ca_cert().exists()
    }
    fn ensure_dir(&self) -> Result<(), TlsError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| TlsError::Io { path: self.dir.clone(), source })
    }
}

/// The cluster certificate authority.
pub struct ClusterCa {
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").field("fingerprint", &hex::encode(self.fingerprint())).finish()
    }
}

impl ClusterCa {
    /// Create a new CA (bootstrap of a new cluster).
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("BitRiver Live cluster CA {}", hex::encode(rand::random::<[u8; 6]>())));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa { cert_der: cert.der().clone(), key })
    }

    /// Load the CA from a data dir.
    pub fn load(paths: &TlsPaths) -> Result<Self, TlsError> {
        if !paths.ca_key().exists() {
            return Err(TlsError::NoCa(paths.dir.clone()));
        }
        let cert_der = pem_to_der(&read(&paths.ca_cert())?)?.remove(0);
        let key = KeyPair::from_pem(&read(&paths.ca_key())?)?;
        Ok(ClusterCa { cert_der, key })
    }

    /// Build from material received during enrolment.
    pub fn from_parts(cert_der: Vec<u8>, key_pem: &str) -> Result<Self, TlsError> {
        Ok(ClusterCa { cert_der: CertificateDer::from(cert_der), key: KeyPair::from_pem(key_pem)? })
    }

    pub fn save(&self, paths: &TlsPaths) -> Result<(), TlsError> {
        paths.ensure_dir()?;
        write_private(&paths.ca_key(), &self.key.serialize_pem())?;
        write_private(&paths.ca_cert(), &der_to_pem(&self.cert_der))
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.cert_der)
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, TlsError> {
        Ok(Issuer::from_ca_cert_der(&self.cert_der, &self.key)?)
    }

    /// Sign a node's certificate request, naming it `node-<id>` with its `roles`.
    pub fn sign_node_csr(
        &self,
        node_id: NodeId,
        roles: &[String],
        csr_der: &[u8],
    ) -> Result<CertificateDer<'static>, TlsError> {
        let der = CertificateSigningRequestDer::from(csr_der.to_vec());
        let mut csr = CertificateSigningRequestParams::from_der(&der)?;
        csr.params = node_params(node_id, roles)?;
        let cert = csr.signed_by(&self.issuer()?)?;
        Ok(cert.der().clone())
    }

    /// Issue a certificate and key for this node directly (bootstrap).
    pub fn issue_node_identity(&self, node_id: NodeId, roles: &[String]) -> Result<NodeIdentity, TlsError> {
        let key = KeyPair::generate()?;
        let cert = node_params(node_id, roles)?.signed_by(&key, &self.issuer()?)?;
        Ok(NodeIdentity {
            node_id,
            cert: cert.der().clone(),
            key_pem: key.serialize_pem(),
            ca_cert: self.cert_der.clone(),
        })
    }

    fn token_key(&self) -> hmac::Key {
        let mut material = b"bitriver join token v1".to_vec();
        material.extend_from_slice(&self.key.serialize_der());
        let secret = digest::digest(&digest::SHA256, &material);
        hmac::Key::new(hmac::HMAC_SHA256, secret.as_ref())
    }

    /// Mint a join token valid until `expires_at` (Unix seconds) for `uses` enrolments.
    pub fn join_token(&self, expires_at: i64, uses: u32) -> String {
        let fp = self.fingerprint();
        let nonce: [u8; 16] = rand::random();
        let mac = hmac::sign(&self.token_key(), &token_message(&fp, expires_at, uses, &nonce));
        format!(
            "{TOKEN_PREFIX}.{}.{expires_at}.{uses}.{}.{}",
            URL_SAFE_NO_PAD.encode(fp),
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(mac.as_ref())
        )
    }

    /// Check a join token against this CA at time `now` (Unix seconds). Its uses are counted by
    /// the caller, in the catalog ([`crate::Command::UseJoinToken`]).
    pub fn verify_join_token(&self, token: &str, now: i64) -> Result<JoinToken, TlsError> {
        let parsed = JoinToken::parse(token)?;
        if parsed.ca_fingerprint != self.fingerprint() {
            return Err(TlsError::TokenWrongCluster);
        }
        hmac::verify(
            &self.token_key(),
            &token_message(&parsed.ca_fingerprint, parsed.expires_at, parsed.uses, &parsed.nonce),
            &parsed.mac,
        )
        .map_err(|_| TlsError::TokenInvalid)?;
        if parsed.expires_at < now {
            return Err(TlsError::TokenExpired);
        }
        Ok(parsed)
    }
}

fn token_message(fp: &[u8; 32], expires_at: i64, uses: u32, nonce: &[u8]) -> Vec<u8> {
    let mut m = fp.to_vec();
    m.extend_from_slice(&expires_at.to_be_bytes());
    m.extend_from_slice(&uses.to_be_bytes());
    m.extend_from_slice(nonce);
    m
}

/// Most roles a certificate may carry, and the longest role name.
const MAX_ROLES: usize = 16;
const MAX_ROLE_LEN: usize = 32;

/// Check roles requested for a certificate: short lowercase names, no separators.
pub fn validate_roles(roles: &[String]) -> Result<(), TlsError> {
    if roles.len() > MAX_ROLES {
        return Err(TlsError::BadRoles(format!("at most {MAX_ROLES} roles")));
    }
    for role in roles {
        if role.is_empty() || role.len() > MAX_ROLE_LEN || !role.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
            return Err(TlsError::BadRoles(format!("{role:?} is not a role name")));
        }
    }
    Ok(())
}

fn node_params(node_id: NodeId, roles: &[String]) -> Result<CertificateParams, TlsError> {
    validate_roles(roles)?;
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("node-{node_id}"));
    dn.push(DnType::OrganizationalUnitName, format!("{ROLES_OU_PREFIX}{}", roles.join(",")));
    params.distinguished_name = dn;
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// The parts of a join token the joiner can read without the CA key.
#[derive(Debug, Clone)]
pub struct JoinToken {
    pub ca_fingerprint: [u8; 32],
    pub expires_at: i64,
    /// How many enrolments the token allows.
    pub uses: u32,
    nonce: Vec<u8>,
    mac: Vec<u8>,
}

impl JoinToken {
    pub fn parse(token: &str) -> Result<Self, TlsError> {
        let parts: Vec<&str> = token.trim().split('.').collect();
        let [prefix, fp, expiry, uses, nonce, mac] = parts.as_slice() else {
            return Err(TlsError::MalformedToken("expected 6 dot-separated parts"));
        };
        if *prefix != TOKEN_PREFIX {
            return Err(TlsError::MalformedToken("unknown token version"));
        }
        let fp = URL_SAFE_NO_PAD.decode(fp).map_err(|_| TlsError::MalformedToken("bad CA fingerprint"))?;
        let ca_fingerprint: [u8; 32] = fp.try_into().map_err(|_| TlsError::MalformedToken("bad CA fingerprint"))?;
        let expires_at = expiry.parse().map_err(|_| TlsError::MalformedToken("bad expiry"))?;
        let uses = uses.parse().map_err(|_| TlsError::MalformedToken("bad use count"))?;
        let nonce = URL_SAFE_NO_PAD.decode(nonce).map_err(|_| TlsError::MalformedToken("bad nonce"))?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| TlsError::MalformedToken("bad signature"))?;
        Ok(JoinToken { ca_fingerprint, expires_at, uses, nonce, mac })
    }

    /// The id under which the catalog counts this token's uses (hex of its nonce).
    pub fn id(&self) -> String {
        hex::encode(&self.nonce)
    }
}

/// Who a node certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSubject {
    pub node_id: NodeId,
    /// The roles it was enrolled with; `None` for certificates issued before roles were recorded
    /// (treated as full members).
    pub roles: Option<Vec<String>>,
}

impl CertSubject {
    /// Whether the holder administers the cluster: the control role, an empty role list (a
    /// library-embedded catalog), or a certificate from before roles were recorded.
    pub fn is_control(&self) -> bool {
        self.roles.as_ref().is_none_or(|r| r.is_empty() || r.iter().any(|r| r == CONTROL_ROLE))
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.is_control() || self.roles.as_ref().is_some_and(|r| r.iter().any(|r| r == role))
    }
}

/// Read the node id and roles out of a node certificate (already verified against the CA).
pub fn cert_subject(der: &[u8]) -> Result<CertSubject, TlsError> {
    let bad = |why: &str| TlsError::NotANodeCertificate(why.to_owned());
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(&e.to_string()))?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next().and_then(|a| a.as_str().ok()).ok_or_else(|| bad("no common name"))?;
    let node_id = cn
        .strip_prefix("node-")
        .and_then(|id| id.parse::<NodeId>().ok())
        .ok_or_else(|| bad("common name is not node-<id>"))?;
    let roles = subject
        .iter_organizational_unit()
        .filter_map(|a| a.as_str().ok())
        .find_map(|ou| ou.strip_prefix(ROLES_OU_PREFIX))
        .map(|list| list.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect());
    Ok(CertSubject { node_id, roles })
}

/// A node's certificate, private key, and the CA it chains to.
#[derive(Clone)]
pub struct NodeIdentity {
    pub node_id: NodeId,
    pub cert: CertificateDer<'static>,
    pub key_pem: String,
    pub ca_cert: CertificateDer<'static>,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

/// A key pair and certificate request made by a node that wants to join.
pub struct PendingEnrolment {
    key: KeyPair,
    pub csr_der: Vec<u8>,
}

impl PendingEnrolment {
    pub fn new() -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let csr = CertificateParams::new(vec![SERVER_NAME.to_owned()])?.serialize_request(&key)?;
        Ok(PendingEnrolment { key, csr_der: csr.der().to_vec() })
    }

    /// Combine with what the cluster sent back.
    pub fn complete(self, node_id: NodeId, cert: Vec<u8>, ca_cert: Vec<u8>) -> NodeIdentity {
        NodeIdentity {
            node_id,
            cert: CertificateDer::from(cert),
            key_pem: self.key.serialize_pem(),
            ca_cert: CertificateDer::from(ca_cert),
        }
    }
}

impl NodeIdentity {
    pub fn load(paths: &TlsPaths, node_id: NodeId) -> Result<Self, TlsError> {
        let cert = pem_to_der(&read(&paths.node_cert())?)?.remove(0);
        let key_pem = read(&paths.node_key())?;
        let ca_cert = pem_to_der(&read(&paths.ca_cert())?)?.remove(0);
        Ok(NodeIdentity { node_id, cert, key_pem, ca_cert })
    }

    pub fn save(&self, paths: &TlsPaths) -> Result<(), TlsError> {
        paths.ensure_dir()?;
        write_private(&paths.node_key(), &self.key_pem)?;
        write_private(&paths.node_cert(), &der_to_pem(&self.cert))?;
        if !paths.ca_cert().exists() {
            write_private(&paths.ca_cert(), &der_to_pem(&self.ca_cert))?;
        }
        Ok(())
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone(), self.ca_cert.clone()]
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_cert.clone())?;
        Ok(roots)
    }

    /// Server side of cluster QUIC. A certificate, if presented, must chain to the CA. rustls
    /// cannot make it mandatory for one ALPN only, so the listener closes a connection on
    /// [`ALPN`] without one as soon as the handshake completes, before reading any stream;
    /// anonymous clients get no further than one small enrolment request on [`ENROL_ALPN`].
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain(), self.private_key()?)?;
        config.alpn_protocols = vec![ALPN.to_vec(), ENROL_ALPN.to_vec(), RELAY_ALPN.to_vec()];
        Ok(config)
    }

    /// Client side of cluster QUIC between members: verify the peer against the CA, present ours.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain(), self.private_key()?)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// Client side of the media relay: as [`NodeIdentity::client_config`], on [`RELAY_ALPN`].
    pub fn relay_client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut config = self.client_config()?;
        config.alpn_protocols = vec![RELAY_ALPN.to_vec()];
        Ok(config)
    }
}

/// Client config for enrolment: no client certificate; the server must present a chain that
/// includes the CA named by the token's fingerprint, and its certificate must verify against it.
pub fn enrol_client_config(ca_fingerprint: [u8; 32]) -> Result<rustls::ClientConfig, TlsError> {
    let verifier = Arc::new(PinnedCaVerifier { ca_fingerprint, provider: provider() });
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ENROL_ALPN.to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct PinnedCaVerifier {
    ca_fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.ca_fingerprint)
            .ok_or_else(|| rustls::Error::General("server is not a member of the token's cluster".into()))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_refusals() {
        let ca = ClusterCa::generate().unwrap();
        let other = ClusterCa::generate().unwrap();
        let token = ca.join_token(2_000, 1);
        assert_eq!(ca.verify_join_token(&token, 1_000).unwrap().uses, 1);
        assert!(matches!(ca.verify_join_token(&token, 3_000), Err(TlsError::TokenExpired)));
        assert!(matches!(other.verify_join_token(&token, 1_000), Err(TlsError::TokenWrongCluster)));
        // Tamper with the expiry: the MAC no longer matches.
        let forged = token.replace(".2000.", ".9999.");
        assert!(matches!(ca.verify_join_token(&forged, 1_000), Err(TlsError::TokenInvalid)));
        // Raising the use count breaks the MAC too.
        let more = token.replace(".2000.1.", ".2000.5.");
        assert!(matches!(ca.verify_join_token(&more, 1_000), Err(TlsError::TokenInvalid)));
        assert!(matches!(ca.verify_join_token("garbage", 1_000), Err(TlsError::MalformedToken(_))));
        assert_eq!(JoinToken::parse(&token).unwrap().ca_fingerprint, ca.fingerprint());
    }

    #[test]
    fn csr_is_signed_and_configs_build() {
        let ca = ClusterCa::generate().unwrap();
        let pending = PendingEnrolment::new().unwrap();
        let cert = ca.sign_node_csr(7, &["edge".to_owned()], &pending.csr_der).unwrap();
        let subject = cert_subject(&cert).unwrap();
        assert_eq!(subject, CertSubject { node_id: 7, roles: Some(vec!["edge".to_owned()]) });
        assert!(!subject.is_control() && subject.has_role("edge") && !subject.has_role("ingest"));
        assert!(ca.sign_node_csr(8, &["a,b".to_owned()], &pending.csr_der).is_err());
        let control = ca.issue_node_identity(1, &["control".to_owned(), "edge".to_owned()]).unwrap();
        assert!(cert_subject(&control.cert).unwrap().is_control());
        let identity = pending.complete(7, cert.to_vec(), ca.cert_der().to_vec());
        identity.server_config().unwrap();
        identity.client_config().unwrap();
        enrol_client_config(ca.fingerprint()).unwrap();
    }

    #[test]
    fn ca_and_identity_persist() {
        let dir = tempfile::tempdir().unwrap();
        let paths = TlsPaths::new(dir.path());
        let ca = ClusterCa::generate().unwrap();
        ca.save(&paths).unwrap();
        let identity = ca.issue_node_identity(1, &[]).unwrap();
        identity.save(&paths).unwrap();
        assert!(paths.has_identity());
        let loaded = ClusterCa::load(&paths).unwrap();
        assert_eq!(loaded.fingerprint(), ca.fingerprint());
        let token = loaded.join_token(10, 3);
        ca.verify_join_token(&token, 0).unwrap();
        let id2 = NodeIdentity::load(&paths, 1).unwrap();
        assert_eq!(id2.cert, identity.cert);
    }
}
