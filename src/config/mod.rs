//! Configuration: one YAML file with Apache Flink's keys, overridden by
//! environment variables.
//!
//! Keys are flat (`fs.default-scheme: file:///`) or nested the way Flink's
//! `config.yaml` allows (`fs: {default-scheme: ...}`); both flatten to the
//! same dotted keys. Every key can be overridden by an environment variable
//! named `SLUICE_` + the key in upper case with `.` and `-` as `_`
//! (`SLUICE_FS_DEFAULT_SCHEME`). Keys sluice does not know are reported at
//! start-up, so a typo never goes unnoticed. Secrets can be read from files
//! (`handle.signing.key-file`), as Kubernetes mounts them.
//!
//! This module reads what is generic (the RPC edge, limits, entropy, the
//! janitor, handle keys, TLS, principals); each backend reads its own
//! section through its [`crate::backend::BackendKind`], and
//! [`crate::settings`] holds the value syntaxes.

mod keys;
mod sections;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::backend::{BackendKind, ConfiguredBackend};
use crate::error::{StartError, StartResult as Result};
use crate::location::DefaultScheme;
use crate::settings::{
    RawKeys, parse_bool, parse_yaml, take_duration, take_memory_size, take_positive,
};
pub use crate::settings::{env_name, parse_duration, parse_memory_size};
pub use keys::GENERIC_KEYS;
pub use sections::parse_signing_key;

/// Every key sluice reads, the generic ones and every backend's, with what
/// it means (`sluice keys`).
pub fn known_keys() -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<(&str, &str)> = GENERIC_KEYS.to_vec();
    for kind in crate::backend::KINDS {
        all.extend_from_slice(kind.keys);
    }
    all
}

/// The RPC edge (see `edge.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeConfig {
    /// Unary RPCs in flight at most.
    pub max_concurrent_requests: usize,
    /// Streaming RPCs in flight at most.
    pub max_concurrent_streams: usize,
    /// Client connections held at most (before the open-file cap).
    pub max_connections: usize,
    pub handshake_timeout: std::time::Duration,
    pub unary_timeout: std::time::Duration,
    pub write_idle_timeout: std::time::Duration,
    pub max_message_size: usize,
    /// Write sessions open at most, all principals together.
    pub max_sessions: usize,
    /// Write sessions one principal may hold open, unless its own
    /// `auth.principals.<name>.max-sessions` says otherwise.
    pub max_sessions_per_principal: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            max_concurrent_requests: 1024,
            max_concurrent_streams: 1024,
            max_connections: 4096,
            handshake_timeout: std::time::Duration::from_secs(10),
            unary_timeout: std::time::Duration::from_secs(60),
            write_idle_timeout: std::time::Duration::from_secs(60),
            max_message_size: 16 * 1024 * 1024,
            max_sessions: 10_000,
            max_sessions_per_principal: 1_000,
        }
    }
}

/// `<scheme>.entropy.key` and `.length` (DESIGN.md 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntropyConfig {
    pub key: String,
    pub length: usize,
}

/// Characters an entropy key may not hold (they mean something in URIs or
/// globs).
const ENTROPY_FORBIDDEN: &str = "~#@*+%{}<>[]|\"\\`";

/// The janitor's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JanitorConfig {
    pub ttl: std::time::Duration,
    pub interval: std::time::Duration,
}

impl Default for JanitorConfig {
    fn default() -> Self {
        JanitorConfig {
            ttl: std::time::Duration::from_secs(7 * 24 * 3600),
            interval: std::time::Duration::from_secs(3600),
        }
    }
}

/// Where the handle-signing key comes from.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SigningConfig {
    /// The secret itself; `None` means "generate and keep one in the data dir".
    pub key: Option<Vec<u8>>,
    pub key_id: Option<String>,
    /// Keys that only verify, by key id (rotation: the previous signing key).
    pub verification: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for SigningConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        f.debug_struct("SigningConfig")
            .field("key", &self.key.as_ref().map(|_| "<secret>"))
            .field("key_id", &self.key_id)
            .field(
                "verification",
                &self.verification.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// TLS on the gRPC port (`rpc.tls.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Set: mutual TLS, clients must show a certificate this CA signed.
    pub client_ca_file: Option<PathBuf>,
}

/// One principal of `auth.principals.<name>.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalConfig {
    pub name: String,
    /// SHA-256 of its bearer token (the token itself is never configured).
    pub token_sha256: [u8; 32],
    /// URI prefixes it may use.
    pub prefixes: Vec<String>,
    pub max_sessions: Option<usize>,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub default_scheme: DefaultScheme,
    /// The backends to serve: those always served and those configured.
    pub backends: Vec<ConfiguredBackend>,
    pub janitor: JanitorConfig,
    pub edge: EdgeConfig,
    pub otel_endpoint: Option<String>,
    pub otel_service_name: Option<String>,
    pub shutdown_grace: std::time::Duration,
    pub limits: BTreeMap<String, crate::backend::StreamLimits>,
    pub entropy: BTreeMap<String, EntropyConfig>,
    pub signing: SigningConfig,
    pub tls: Option<TlsConfig>,
    pub plaintext: bool,
    pub principals: Vec<PrincipalConfig>,
    pub unknown_keys: Vec<String>,
}

impl Default for Config {
    /// The embedded defaults: what an empty configuration means.
    fn default() -> Config {
        Config::from_map(RawKeys::new()).expect("the empty configuration is valid")
    }
}

impl Config {
    /// Reads `file` (if any), then the environment's `SLUICE_*` overrides.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let mut raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    StartError::Config(format!(
                        "cannot read the config file {}: {e}",
                        path.display()
                    ))
                })?;
                parse_yaml(&text).map_err(|e| {
                    StartError::Config(format!("config file {}: {e}", path.display()))
                })?
            }
            None => RawKeys::new(),
        };
        let known: Vec<&str> = known_keys().into_iter().map(|(k, _)| k).collect();
        for (name, value) in env {
            if let Some(key) = crate::settings::key_for_env(&name, &known) {
                raw.insert(key, value);
            }
        }
        Config::from_map(raw)
    }

    pub fn from_yaml(text: &str) -> Result<Config> {
        Config::from_map(parse_yaml(text).map_err(|e| StartError::Config(e.to_string()))?)
    }

    pub fn from_map(mut raw: RawKeys) -> Result<Config> {
        let default_scheme = match raw.remove("fs.default-scheme") {
            Some(v) => DefaultScheme::parse(&v).map_err(|e| StartError::Config(e.to_string()))?,
            None => DefaultScheme::default(),
        };
        // Before the backends: `s3.entropy.key` or `fs.s3.limit.*` alone
        // must not make s3:// a configured scheme.
        let entropy = sections::entropy(&mut raw)?;
        let limits = sections::limits(&mut raw)?;
        let backends = configure_backends(&mut raw)?;
        let edge = edge(&mut raw)?;
        let otel_endpoint = raw.remove("otel.exporter.otlp.endpoint");
        let otel_service_name = raw.remove("otel.service.name");
        let shutdown_grace = take_duration(&mut raw, "shutdown.grace-period")?
            .unwrap_or(std::time::Duration::from_secs(30));
        let mut janitor = JanitorConfig::default();
        if let Some(ttl) = take_duration(&mut raw, "janitor.ttl")? {
            janitor.ttl = ttl;
        }
        janitor.interval = match take_duration(&mut raw, "janitor.interval")? {
            Some(interval) => interval,
            None => janitor.interval.min(janitor.ttl),
        };
        let signing = sections::signing(&mut raw)?;
        let tls = sections::tls(&mut raw)?;
        let plaintext = parse_bool(&mut raw, "rpc.plaintext")?.unwrap_or(false);
        let principals = sections::principals(&mut raw)?;
        Ok(Config {
            default_scheme,
            backends,
            janitor,
            edge,
            otel_endpoint,
            otel_service_name,
            shutdown_grace,
            limits,
            entropy,
            signing,
            tls,
            plaintext,
            principals,
            unknown_keys: raw.into_keys().collect(),
        })
    }

    /// The configured backend of `scheme`, if it is served.
    pub fn backend(&self, scheme: &str) -> Option<&ConfiguredBackend> {
        self.backends
            .iter()
            .find(|b| b.kind.schemes.contains(&scheme))
    }
}

/// Every backend that is always served or has a key of its own set.
fn configure_backends(raw: &mut RawKeys) -> Result<Vec<ConfiguredBackend>> {
    let mut out = Vec::new();
    for kind in crate::backend::KINDS {
        let kind: &'static BackendKind = kind;
        let own: Vec<&str> = kind.keys.iter().map(|(k, _)| *k).collect();
        if kind.always || crate::settings::has_any(raw, &own) {
            out.push(ConfiguredBackend {
                kind,
                settings: (kind.configure)(raw)?,
            });
        }
    }
    Ok(out)
}

/// `rpc.*` and `sessions.max-open`.
fn edge(raw: &mut RawKeys) -> Result<EdgeConfig> {
    let mut edge = EdgeConfig::default();
    let count = |raw: &mut RawKeys, key: &str| -> Result<Option<usize>> {
        Ok(take_positive(raw, key)?.map(|n| n as usize))
    };
    if let Some(n) = count(raw, "rpc.max-concurrent-requests")? {
        edge.max_concurrent_requests = n;
    }
    if let Some(n) = count(raw, "rpc.max-concurrent-streams")? {
        edge.max_concurrent_streams = n;
    }
    if let Some(n) = count(raw, "rpc.max-connections")? {
        edge.max_connections = n;
    }
    if let Some(n) = count(raw, "sessions.max-open")? {
        edge.max_sessions = n;
    }
    if let Some(n) = count(raw, "sessions.max-open-per-principal")? {
        edge.max_sessions_per_principal = n;
    }
    if let Some(d) = take_duration(raw, "rpc.handshake-timeout")? {
        edge.handshake_timeout = d;
    }
    if let Some(d) = take_duration(raw, "rpc.unary-timeout")? {
        edge.unary_timeout = d;
    }
    if let Some(d) = take_duration(raw, "rpc.write-idle-timeout")? {
        edge.write_idle_timeout = d;
    }
    if let Some(size) = take_memory_size(raw, "rpc.max-message-size")? {
        if !(1024..=(1 << 30)).contains(&size) {
            return Err(StartError::Config(format!(
                "rpc.max-message-size must lie between 1kb and 1gb, not {size} bytes"
            )));
        }
        edge.max_message_size = size as usize;
    }
    Ok(edge)
}
