//! `--web.config.file`: TLS and basic auth on every endpoint, configured as the Prometheus
//! ecosystem configures its exporters (the exporter-toolkit's web config file:
//! https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert, VerifyClientCertIfGiven
//!   client_ca_file: ca.crt
//!   min_version: TLS12             # or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt
//! ```
//!
//! Everything is read and checked at start-up, before anything loads: an unreadable or bad
//! certificate, key or hash, or an unknown key, is an error there.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use base64::Engine as _;
use rustls::{
    RootCertStore, ServerConfig,
    server::WebPkiClientVerifier,
    version::{TLS12, TLS13},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("--web.config.file {path}: {problem}")]
pub struct WebConfigError {
    path: String,
    problem: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default = "no_client_cert")]
    client_auth_type: String,
    client_ca_file: Option<PathBuf>,
    #[serde(default = "tls12")]
    min_version: String,
}

fn no_client_cert() -> String {
    "NoClientCert".into()
}

fn tls12() -> String {
    "TLS12".into()
}

/// What the endpoints are served with.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// `None`: plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// `None`: no authentication.
    pub users: Option<Arc<Users>>,
}

/// The basic-auth users and their bcrypt hashes, and a hash no password matches, checked
/// for an unknown user so that it costs what a known one does.
pub struct Users {
    hashes: BTreeMap<String, String>,
    dummy: String,
}

impl WebConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let fail = |problem: String| WebConfigError {
            path: path.display().to_string(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let file: File = serde_norway::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = file
            .tls_server_config
            .map(|tls| server_config(&tls, dir))
            .transpose()
            .map_err(fail)?;
        let users = if file.basic_auth_users.is_empty() {
            None
        } else {
            Some(Arc::new(users(file.basic_auth_users).map_err(fail)?))
        };
        Ok(WebConfig { tls, users })
    }
}

fn server_config(tls: &TlsFile, dir: &Path) -> Result<Arc<ServerConfig>, String> {
    // A CA and no policy: whoever wrote it meant clients to be verified (exporter-toolkit
    // refuses this too).
    if tls.client_auth_type == "NoClientCert" && tls.client_ca_file.is_some() {
        return Err(
            "client_ca_file without client_auth_type: client certificates would not be checked; set \
             client_auth_type RequireAndVerifyClientCert (or VerifyClientCertIfGiven), or remove client_ca_file"
                .into(),
        );
    }
    let at = |p: &Path| dir.join(p);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(at(&tls.cert_file))
        .and_then(Iterator::collect)
        .map_err(|e| format!("cert_file {}: {e}", at(&tls.cert_file).display()))?;
    if certs.is_empty() {
        return Err(format!(
            "cert_file {}: no certificate in it",
            at(&tls.cert_file).display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(at(&tls.key_file))
        .map_err(|e| format!("key_file {}: {e}", at(&tls.key_file).display()))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version.as_str() {
        "TLS12" => &[&TLS13, &TLS12],
        "TLS13" => &[&TLS13],
        other => {
            return Err(format!(
                "min_version {other}: TLS12 or TLS13 (nothing older is offered)"
            ));
        }
    };
    // ring: rustls deprecates its provider for lacking post-quantum key exchange; the other
    // (aws-lc-rs) builds a C library with cmake on every machine, for a scrape endpoint.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let roots = || -> Result<Arc<RootCertStore>, String> {
        let path = tls
            .client_ca_file
            .as_ref()
            .ok_or_else(|| format!("client_auth_type {} needs client_ca_file", tls.client_auth_type))?;
        let path = at(path);
        let mut roots = RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(&path).map_err(|e| format!("client_ca_file {}: {e}", path.display()))?
        {
            let cert = cert.map_err(|e| format!("client_ca_file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("client_ca_file {}: {e}", path.display()))?;
        }
        Ok(Arc::new(roots))
    };
    let verifier = |optional: bool| -> Result<_, String> {
        let builder = WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone());
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder.build().map_err(|e| format!("client_ca_file: {e}"))
    };
    let builder = match tls.client_auth_type.as_str() {
        "NoClientCert" => builder.with_no_client_auth(),
        "VerifyClientCertIfGiven" => builder.with_client_cert_verifier(verifier(true)?),
        "RequireAndVerifyClientCert" => builder.with_client_cert_verifier(verifier(false)?),
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(format!(
                "client_auth_type {}: not supported (it accepts certificates nobody verified); use \
                 VerifyClientCertIfGiven or RequireAndVerifyClientCert",
                tls.client_auth_type
            ));
        }
        other => {
            return Err(format!(
                "client_auth_type {other}: one of NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
            ));
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert_file and key_file: {e}"))?;
    // Offered in ALPN: what scrapers and curl speak to an exporter.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn users(hashes: BTreeMap<String, String>) -> Result<Users, String> {
    let mut cost = 0;
    for (user, hash) in &hashes {
        // A malformed hash is refused here, not at the first login.
        bcrypt::verify("", hash).map_err(|e| format!("basic_auth_users {user}: not a bcrypt hash ({e})"))?;
        cost = cost.max(
            hash.get(4..6)
                .and_then(|c| c.parse().ok())
                .unwrap_or(bcrypt::DEFAULT_COST),
        );
    }
    let dummy = bcrypt::hash("no password matches this", cost).map_err(|e| e.to_string())?;
    Ok(Users { hashes, dummy })
}

impl Users {
    /// The user and password of an `Authorization: Basic` header; `None` without one (no
    /// bcrypt is spent on a request that names no user: that says nothing of who exists).
    pub fn credentials(authorization: Option<&[u8]>) -> Option<(String, String)> {
        let decoded = authorization
            .and_then(|h| h.strip_prefix(b"Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|d| String::from_utf8(d).ok())?;
        let (user, password) = decoded.split_once(':')?;
        Some((user.to_owned(), password.to_owned()))
    }

    /// Whether `password` is `user`'s. As slow for an unknown user (checked against a hash of
    /// the highest cost in the file) as for a known one of that cost: timing says nothing of
    /// who exists. bcrypt is meant to be slow: call it off the async workers.
    pub fn allow(&self, user: &str, password: &str) -> bool {
        let known = self.hashes.get(user);
        let hash = known.unwrap_or(&self.dummy);
        bcrypt::verify(password, hash).unwrap_or(false) && known.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn users_are_checked_and_an_unknown_one_is_refused() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let (_dir, path) = file(&format!("basic_auth_users:\n  alice: {hash}\n"));
        let config = WebConfig::load(&path).unwrap();
        let users = config.users.unwrap();
        let header = |c: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(c));
        let pair = |u: &str, p: &str| Some((u.to_owned(), p.to_owned()));
        assert_eq!(
            Users::credentials(Some(header("alice:se:cret").as_bytes())),
            pair("alice", "se:cret")
        );
        assert_eq!(Users::credentials(Some(b"Bearer x")), None);
        assert_eq!(Users::credentials(None), None);
        assert!(users.allow("alice", "secret"));
        assert!(!users.allow("alice", "wrong"));
        assert!(!users.allow("bob", "secret"));
        assert!(config.tls.is_none());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        for (text, needle) in [
            (
                "basic_auth_users:\n  alice: notahash\n",
                "basic_auth_users alice: not a bcrypt hash",
            ),
            (
                "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n",
                "/a.crt: ",
            ),
            (
                "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_ca_file: ca.crt\n",
                "client_ca_file without client_auth_type",
            ),
            ("colour: red\n", "unknown field `colour`"),
            (
                "tls_server_config:\n  cert_file: a\n  key_fil: b\n",
                "unknown field `key_fil`",
            ),
        ] {
            let (_dir, path) = file(text);
            let Err(e) = WebConfig::load(&path) else {
                panic!("{text} was accepted")
            };
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
        let Err(e) = WebConfig::load(Path::new("/nonexistent/web.yml")) else {
            panic!("a missing file was accepted")
        };
        assert!(e.to_string().contains("cannot read it"), "{e}");
    }
}
