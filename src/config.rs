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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::location::DefaultScheme;

/// 5 MiB: S3's smallest non-final part, the default part size everywhere.
pub const DEFAULT_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Parts uploaded at once per session, unless configured.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: u32 = 4;

/// Every key sluice reads, with what it means (shown by `sluice keys`).
pub const KNOWN_KEYS: &[(&str, &str)] = &[
    (
        "fs.default-scheme",
        "scheme (and authority) for paths without one; default file:///",
    ),
    (
        "fs.file.allowed-roots",
        "directories file:// targets must lie under (list or comma-separated); default <data-dir>/files",
    ),
    (
        "memory.upload.min.part.size",
        "part size of memory:// uploads (Flink memory size, e.g. 5mb); default 5mb",
    ),
    (
        "memory.upload.max.concurrent.uploads",
        "parts of one memory:// session uploaded at once; default 4",
    ),
    (
        "s3.endpoint",
        "S3 endpoint URL (e.g. http://127.0.0.1:9000 for MinIO or moto); default AWS",
    ),
    (
        "s3.region",
        "S3 region; default from AWS_REGION or us-east-1",
    ),
    (
        "s3.access-key",
        "S3 access key id; default from AWS_ACCESS_KEY_ID",
    ),
    (
        "s3.secret-key",
        "S3 secret access key; default from AWS_SECRET_ACCESS_KEY",
    ),
    (
        "s3.path.style.access",
        "true: bucket in the path (MinIO, moto); false: virtual-hosted (AWS default)",
    ),
    (
        "s3.upload.min.part.size",
        "part size of s3:// uploads, at least 5mb (S3's minimum); default 5mb",
    ),
    (
        "s3.upload.max.concurrent.uploads",
        "parts of one s3:// session uploaded at once; default 4",
    ),
    (
        "s3.request.timeout",
        "longest wait for one S3 request (then it is retried), e.g. 10s; default 30s",
    ),
    (
        "s3.retry.max-retries",
        "retries of a failed S3 request before the client gets UNAVAILABLE; default 10",
    ),
    (
        "fs.oss.endpoint",
        "OSS endpoint, e.g. https://oss-cn-hangzhou.aliyuncs.com; buckets are reached virtual-hosted",
    ),
    ("fs.oss.accessKeyId", "OSS access key id"),
    ("fs.oss.accessKeySecret", "OSS access key secret"),
    (
        "fs.oss.region",
        "OSS region for request signing; default: the endpoint's first label (oss-cn-hangzhou)",
    ),
    (
        "fs.oss.proxy.host",
        "HTTP proxy host for OSS requests (with fs.oss.proxy.port)",
    ),
    ("fs.oss.proxy.port", "HTTP proxy port for OSS requests"),
    (
        "oss.upload.min.part.size",
        "part size of oss:// uploads, at least 100kb; default 5mb",
    ),
    (
        "oss.upload.max.concurrent.uploads",
        "parts of one oss:// session uploaded at once; default 4",
    ),
    (
        "gs.endpoint",
        "GCS base URL (an emulator such as http://127.0.0.1:9023); default Google",
    ),
    (
        "gs.service-account-file",
        "service account JSON file; default from GOOGLE_APPLICATION_CREDENTIALS",
    ),
    (
        "gs.upload.min.part.size",
        "part size of gs:// uploads (XML multipart API), at least 5mb; default 5mb",
    ),
    (
        "gs.upload.max.concurrent.uploads",
        "parts of one gs:// session uploaded at once; default 4",
    ),
    (
        "azure.account.name",
        "Azure storage account (az://, abfs://, abfss://)",
    ),
    ("azure.account.key", "Azure storage account key"),
    (
        "azure.endpoint",
        "Azure blob endpoint, e.g. http://127.0.0.1:10000/devstoreaccount1 for Azurite; default https://<account>.blob.core.windows.net",
    ),
    (
        "azure.upload.min.part.size",
        "block size of Azure uploads; default 5mb",
    ),
    (
        "azure.upload.max.concurrent.uploads",
        "blocks of one Azure session uploaded at once; default 4",
    ),
    (
        "fs.<scheme>.limit.total",
        "open read and write streams per scheme and authority at most (0 or -1: unlimited)",
    ),
    (
        "fs.<scheme>.limit.output",
        "open write sessions at most (0 or -1: unlimited)",
    ),
    (
        "fs.<scheme>.limit.input",
        "open read streams at most (0 or -1: unlimited)",
    ),
    (
        "fs.<scheme>.limit.timeout",
        "milliseconds to wait for a slot before RESOURCE_EXHAUSTED (0: wait forever)",
    ),
    (
        "fs.<scheme>.limit.stream-timeout",
        "milliseconds without progress after which a stream may be reclaimed (0: never)",
    ),
    (
        "<scheme>.entropy.key",
        "marker in paths of that scheme (e.g. s3.entropy.key: _entropy_) replaced by random characters when Open asks for entropy, removed otherwise",
    ),
    (
        "<scheme>.entropy.length",
        "how many random [0-9A-Za-z] characters replace the marker; default 4",
    ),
    (
        "rpc.max-concurrent-requests",
        "unary RPCs in flight at most; past it, calls are shed with RESOURCE_EXHAUSTED (health checks are never shed); default 1024",
    ),
    (
        "rpc.max-concurrent-streams",
        "streaming RPCs (Write, Read) in flight at most, apart from the unary bound; past it, shed with RESOURCE_EXHAUSTED; default 1024",
    ),
    (
        "rpc.max-connections",
        "client connections held at most; past it, new ones are closed at once; default 4096, and never more than half the open-file limit",
    ),
    (
        "rpc.handshake-timeout",
        "how long a new connection may take to send its first bytes (TLS or the HTTP/2 preface) before it is closed; default 10s",
    ),
    (
        "sessions.max-open",
        "write sessions open at most on this gateway, all principals together; past it, Open and Recover answer RESOURCE_EXHAUSTED; default 10000",
    ),
    (
        "rpc.unary-timeout",
        "deadline of unary RPCs (e.g. 30s); default 60s",
    ),
    (
        "rpc.write-idle-timeout",
        "longest pause between the messages of a Write call; default 60s",
    ),
    (
        "rpc.max-message-size",
        "largest gRPC message accepted (Flink memory size); default 16mb",
    ),
    (
        "shutdown.grace-period",
        "how long RPCs in flight may finish after SIGTERM before the gateway stops; default 30s",
    ),
    (
        "otel.exporter.otlp.endpoint",
        "OTLP/gRPC endpoint for traces (OTEL_EXPORTER_OTLP_ENDPOINT wins); unset: no tracing",
    ),
    (
        "otel.service.name",
        "service name in traces (OTEL_SERVICE_NAME wins); default sluice",
    ),
    (
        "janitor.ttl",
        "age after which abandoned uploads, tail objects and temp files are removed (e.g. 7d, 12h, 30min, 500ms); default 7d",
    ),
    (
        "janitor.interval",
        "how often the janitor looks; default 1h (or the TTL when shorter)",
    ),
    (
        "handle.signing.key",
        "secret that signs handles (hex, at least 32 bytes); default: a key generated in the data dir",
    ),
    (
        "handle.signing.key-file",
        "file holding handle.signing.key, e.g. a mounted Kubernetes secret",
    ),
    (
        "handle.signing.key-id",
        "name of the signing key, stored in every handle; default derived from the key",
    ),
    (
        "handle.verification.<key-id>.key",
        "a retired (or future) key whose handles are still accepted, by the id its handles carry (hex, at least 32 bytes)",
    ),
    (
        "handle.verification.<key-id>.key-file",
        "file holding handle.verification.<key-id>.key",
    ),
    (
        "rpc.tls.cert-file",
        "PEM certificate chain the gRPC port serves TLS with (with rpc.tls.key-file)",
    ),
    ("rpc.tls.key-file", "PEM private key of rpc.tls.cert-file"),
    (
        "rpc.tls.client-ca-file",
        "PEM CA certificates; when set, clients must present a certificate they signed (mutual TLS)",
    ),
    (
        "rpc.plaintext",
        "true: serve plaintext gRPC on a non-loopback address (without TLS sluice refuses to, unless told so); default false",
    ),
    (
        "auth.principals.<name>.token-sha256",
        "hex SHA-256 of the bearer token of principal <name> (`sluice token` makes one); any principal turns authentication on",
    ),
    (
        "auth.principals.<name>.prefixes",
        "URI prefixes <name> may open, read and change (list or comma-separated), e.g. s3://bucket/jobs/a/, file:///srv/data/a/",
    ),
    (
        "auth.principals.<name>.max-sessions",
        "open write sessions <name> may hold at once; default unlimited",
    ),
];

/// Part size and upload concurrency of a multipart backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadConfig {
    pub part_size: u64,
    pub max_concurrent_uploads: u32,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            part_size: DEFAULT_PART_SIZE,
            max_concurrent_uploads: DEFAULT_MAX_CONCURRENT_UPLOADS,
        }
    }
}

/// An S3-compatible store (`s3://`, `s3a://`, and `oss://` through OSS's
/// S3 API).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Bucket in the path rather than in the host name.
    pub path_style: bool,
    /// Every bucket is reached at `<scheme>://<bucket>.<endpoint host>` (OSS).
    pub virtual_hosted: bool,
    pub proxy_url: Option<String>,
    pub upload: UploadConfig,
    /// `s3.request.timeout`; `None`: object_store's default.
    pub request_timeout: Option<std::time::Duration>,
    /// `s3.retry.max-retries`; `None`: object_store's default.
    pub max_retries: Option<usize>,
}

/// Google Cloud Storage (`gs://`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcsConfig {
    pub endpoint: Option<String>,
    pub service_account_file: Option<String>,
    pub upload: UploadConfig,
}

/// Azure Blob Storage (`az://`, `abfs://`, `abfss://`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AzureConfig {
    pub account: Option<String>,
    pub key: Option<String>,
    pub endpoint: Option<String>,
    pub upload: UploadConfig,
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

/// The gateway's settings, validated.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub default_scheme: DefaultScheme,
    /// Roots for `file://`; empty means `<data-dir>/files`.
    pub file_roots: Vec<PathBuf>,
    pub memory: UploadConfig,
    /// Cloud stores: `None` when their keys are absent (the scheme is then
    /// not served).
    pub s3: Option<S3Config>,
    pub oss: Option<S3Config>,
    pub gcs: Option<GcsConfig>,
    pub azure: Option<AzureConfig>,
    pub janitor: JanitorConfig,
    pub edge: EdgeConfig,
    /// `otel.exporter.otlp.endpoint` and `otel.service.name`.
    pub otel_endpoint: Option<String>,
    pub otel_service_name: Option<String>,
    /// `shutdown.grace-period`.
    pub shutdown_grace: std::time::Duration,
    /// `fs.<scheme>.limit.*` by scheme.
    pub limits: BTreeMap<String, crate::limit::StreamLimits>,
    /// Entropy injection by scheme.
    pub entropy: BTreeMap<String, EntropyConfig>,
    pub signing: SigningConfig,
    /// `rpc.tls.*`; `None`: plaintext.
    pub tls: Option<TlsConfig>,
    /// `rpc.plaintext`: plaintext allowed on a non-loopback address.
    pub plaintext: bool,
    /// `auth.principals.*`; empty: no authentication.
    pub principals: Vec<PrincipalConfig>,
    /// Keys present but not understood, reported at start-up.
    pub unknown_keys: Vec<String>,
}

impl Config {
    /// Reads the YAML file (if any), applies `SLUICE_*` overrides from `env`,
    /// and validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let mut raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "cannot read the config file {}: {e}",
                        path.display()
                    ))
                })?;
                parse_yaml(&text).map_err(|e| {
                    Error::InvalidArgument(format!("config file {}: {e}", path.display()))
                })?
            }
            None => BTreeMap::new(),
        };
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for (key, _) in KNOWN_KEYS {
            if let Some(value) = env.get(&env_name(key)) {
                raw.insert((*key).to_string(), value.clone());
            }
        }
        Config::from_map(raw)
    }

    /// Parses YAML text alone (no environment).
    pub fn from_yaml(text: &str) -> Result<Config> {
        Config::from_map(parse_yaml(text).map_err(|e| Error::InvalidArgument(e.to_string()))?)
    }

    /// Validates flattened keys.
    pub fn from_map(mut raw: BTreeMap<String, String>) -> Result<Config> {
        let mut config = Config::default();
        if let Some(v) = raw.remove("fs.default-scheme") {
            config.default_scheme = DefaultScheme::parse(&v)?;
        }
        if let Some(v) = raw.remove("fs.file.allowed-roots") {
            config.file_roots = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect();
            if let Some(bad) = config.file_roots.iter().find(|p| !p.is_absolute()) {
                return Err(Error::InvalidArgument(format!(
                    "fs.file.allowed-roots: {} is not an absolute path",
                    bad.display()
                )));
            }
        }
        // Before the scheme sections: `s3.entropy.key` alone must not make
        // s3:// a configured scheme.
        config.entropy = entropy_config(&mut raw)?;
        config.limits = limit_config(&mut raw)?;
        config.memory = upload_config(&mut raw, "memory", 1)?;
        if has_prefix(&raw, &["s3."]) {
            config.s3 = Some(S3Config {
                endpoint: raw.remove("s3.endpoint"),
                region: raw.remove("s3.region"),
                access_key: raw.remove("s3.access-key"),
                secret_key: raw.remove("s3.secret-key"),
                path_style: parse_bool(&mut raw, "s3.path.style.access")?.unwrap_or(false),
                virtual_hosted: false,
                proxy_url: None,
                upload: upload_config(&mut raw, "s3", S3_MIN_PART_SIZE)?,
                request_timeout: raw
                    .remove("s3.request.timeout")
                    .map(|v| parse_duration("s3.request.timeout", &v))
                    .transpose()?,
                max_retries: raw
                    .remove("s3.retry.max-retries")
                    .map(|v| {
                        v.trim().parse::<usize>().map_err(|_| {
                            Error::InvalidArgument(format!(
                                "s3.retry.max-retries: {v:?} is not a whole number (0 turns retries off)"
                            ))
                        })
                    })
                    .transpose()?,
            });
        }
        if has_prefix(&raw, &["fs.oss.", "oss."]) {
            let endpoint = raw.remove("fs.oss.endpoint").ok_or_else(|| {
                Error::InvalidArgument(
                    "oss:// needs fs.oss.endpoint, e.g. https://oss-cn-hangzhou.aliyuncs.com"
                        .into(),
                )
            })?;
            let proxy_url = match (
                raw.remove("fs.oss.proxy.host"),
                raw.remove("fs.oss.proxy.port"),
            ) {
                (Some(host), Some(port)) => Some(format!("http://{host}:{port}")),
                (None, None) => None,
                _ => {
                    return Err(Error::InvalidArgument(
                        "set both fs.oss.proxy.host and fs.oss.proxy.port, or neither".into(),
                    ));
                }
            };
            config.oss = Some(S3Config {
                region: raw.remove("fs.oss.region"),
                endpoint: Some(endpoint),
                access_key: raw.remove("fs.oss.accessKeyId"),
                secret_key: raw.remove("fs.oss.accessKeySecret"),
                path_style: false,
                virtual_hosted: true,
                proxy_url,
                upload: upload_config(&mut raw, "oss", OSS_MIN_PART_SIZE)?,
                request_timeout: None,
                max_retries: None,
            });
        }
        if has_prefix(&raw, &["gs."]) {
            config.gcs = Some(GcsConfig {
                endpoint: raw.remove("gs.endpoint"),
                service_account_file: raw.remove("gs.service-account-file"),
                upload: upload_config(&mut raw, "gs", S3_MIN_PART_SIZE)?,
            });
        }
        if has_prefix(&raw, &["azure."]) {
            config.azure = Some(AzureConfig {
                account: raw.remove("azure.account.name"),
                key: raw.remove("azure.account.key"),
                endpoint: raw.remove("azure.endpoint"),
                upload: upload_config(&mut raw, "azure", 1)?,
            });
        }
        if let Some(v) = raw.remove("rpc.max-concurrent-requests") {
            config.edge.max_concurrent_requests =
                parse_positive("rpc.max-concurrent-requests", &v)? as usize;
        }
        if let Some(v) = raw.remove("rpc.max-concurrent-streams") {
            config.edge.max_concurrent_streams =
                parse_positive("rpc.max-concurrent-streams", &v)? as usize;
        }
        if let Some(v) = raw.remove("rpc.max-connections") {
            config.edge.max_connections = parse_positive("rpc.max-connections", &v)? as usize;
        }
        if let Some(v) = raw.remove("rpc.handshake-timeout") {
            config.edge.handshake_timeout = parse_duration("rpc.handshake-timeout", &v)?;
        }
        if let Some(v) = raw.remove("sessions.max-open") {
            config.edge.max_sessions = parse_positive("sessions.max-open", &v)? as usize;
        }
        if let Some(v) = raw.remove("rpc.unary-timeout") {
            config.edge.unary_timeout = parse_duration("rpc.unary-timeout", &v)?;
        }
        if let Some(v) = raw.remove("rpc.write-idle-timeout") {
            config.edge.write_idle_timeout = parse_duration("rpc.write-idle-timeout", &v)?;
        }
        if let Some(v) = raw.remove("rpc.max-message-size") {
            let size = parse_memory_size("rpc.max-message-size", &v)?;
            if !(1024..=(1 << 30)).contains(&size) {
                return Err(Error::InvalidArgument(format!(
                    "rpc.max-message-size must lie between 1kb and 1gb, not {size} bytes"
                )));
            }
            config.edge.max_message_size = size as usize;
        }
        config.otel_endpoint = raw.remove("otel.exporter.otlp.endpoint");
        config.otel_service_name = raw.remove("otel.service.name");
        config.shutdown_grace = match raw.remove("shutdown.grace-period") {
            Some(v) => parse_duration("shutdown.grace-period", &v)?,
            None => std::time::Duration::from_secs(30),
        };
        if let Some(v) = raw.remove("janitor.ttl") {
            config.janitor.ttl = parse_duration("janitor.ttl", &v)?;
        }
        match raw.remove("janitor.interval") {
            Some(v) => config.janitor.interval = parse_duration("janitor.interval", &v)?,
            None => config.janitor.interval = config.janitor.interval.min(config.janitor.ttl),
        }
        let key = secret(&mut raw, "handle.signing.key")?;
        if let Some(key) = key {
            config.signing.key = Some(parse_signing_key(&key)?);
        }
        config.signing.key_id = raw.remove("handle.signing.key-id");
        config.signing.verification = verification_keys(&mut raw)?;
        config.tls = tls_config(&mut raw)?;
        config.plaintext = parse_bool(&mut raw, "rpc.plaintext")?.unwrap_or(false);
        config.principals = principals(&mut raw)?;
        config.unknown_keys = raw.into_keys().collect();
        Ok(config)
    }
}

/// A key given inline (`<key>`) or in a file (`<key>-file`), not both.
fn secret(raw: &mut BTreeMap<String, String>, key: &str) -> Result<Option<String>> {
    let file_key = format!("{key}-file");
    match (raw.remove(key), raw.remove(&file_key)) {
        (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
            "set {key} or {file_key}, not both"
        ))),
        (Some(k), None) => Ok(Some(k)),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(Some)
            .map_err(|e| Error::InvalidArgument(format!("cannot read {file_key} {path}: {e}"))),
        (None, None) => Ok(None),
    }
}

/// `handle.verification.<key-id>.key` (or `.key-file`).
fn verification_keys(raw: &mut BTreeMap<String, String>) -> Result<BTreeMap<String, Vec<u8>>> {
    let ids: std::collections::BTreeSet<String> = raw
        .keys()
        .filter_map(|k| k.strip_prefix("handle.verification."))
        .map(|rest| {
            rest.strip_suffix(".key-file")
                .or_else(|| rest.strip_suffix(".key"))
                .unwrap_or(rest)
                .to_string()
        })
        .collect();
    let mut out = BTreeMap::new();
    for id in ids {
        let key = format!("handle.verification.{id}.key");
        let Some(text) = secret(raw, &key)? else {
            return Err(Error::InvalidArgument(format!(
                "handle.verification.{id}: give the key as {key} or {key}-file"
            )));
        };
        if id.is_empty() || id.contains('.') {
            return Err(Error::InvalidArgument(format!(
                "{key}: {id:?} is not a key id (the id handles carry, without dots)"
            )));
        }
        let parsed =
            parse_signing_key(&text).map_err(|e| Error::InvalidArgument(format!("{key}: {e}")))?;
        out.insert(id, parsed);
    }
    Ok(out)
}

/// `rpc.tls.cert-file`, `rpc.tls.key-file`, `rpc.tls.client-ca-file`.
fn tls_config(raw: &mut BTreeMap<String, String>) -> Result<Option<TlsConfig>> {
    let cert = raw.remove("rpc.tls.cert-file");
    let key = raw.remove("rpc.tls.key-file");
    let ca = raw.remove("rpc.tls.client-ca-file");
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsConfig {
            cert_file: cert.into(),
            key_file: key.into(),
            client_ca_file: ca.map(PathBuf::from),
        })),
        (None, None) if ca.is_none() => Ok(None),
        (None, None) => Err(Error::InvalidArgument(
            "rpc.tls.client-ca-file needs TLS: set rpc.tls.cert-file and rpc.tls.key-file too"
                .into(),
        )),
        _ => Err(Error::InvalidArgument(
            "set both rpc.tls.cert-file and rpc.tls.key-file, or neither".into(),
        )),
    }
}

/// `auth.principals.<name>.{token-sha256,prefixes,max-sessions}`.
fn principals(raw: &mut BTreeMap<String, String>) -> Result<Vec<PrincipalConfig>> {
    const FIELDS: [&str; 3] = ["token-sha256", "prefixes", "max-sessions"];
    let keys: Vec<String> = raw
        .keys()
        .filter(|k| k.starts_with("auth."))
        .cloned()
        .collect();
    let mut names = std::collections::BTreeSet::new();
    for key in &keys {
        let parsed = key
            .strip_prefix("auth.principals.")
            .and_then(|rest| rest.rsplit_once('.'))
            .filter(|(name, field)| !name.is_empty() && FIELDS.contains(field));
        match parsed {
            Some((name, _)) => names.insert(name.to_string()),
            None => {
                return Err(Error::InvalidArgument(format!(
                    "{key}: not an auth key; they are auth.principals.<name>.{{{}}}",
                    FIELDS.join(",")
                )));
            }
        };
    }
    let mut out = Vec::new();
    let mut hashes = std::collections::BTreeSet::new();
    for name in names {
        let key = |field: &str| format!("auth.principals.{name}.{field}");
        let hash = raw.remove(&key("token-sha256")).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: missing; `sluice token` prints a token and its hash",
                key("token-sha256")
            ))
        })?;
        let token_sha256: [u8; 32] = hex::decode(hash.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{}: not 64 hex digits (the SHA-256 of the token, not the token)",
                    key("token-sha256")
                ))
            })?;
        if !hashes.insert(token_sha256) {
            return Err(Error::InvalidArgument(format!(
                "{}: another principal has the same token",
                key("token-sha256")
            )));
        }
        let prefixes: Vec<String> = raw
            .remove(&key("prefixes"))
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        if prefixes.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{}: give at least one URI prefix, e.g. s3://bucket/jobs/{name}/",
                key("prefixes")
            )));
        }
        let max_sessions = match raw.remove(&key("max-sessions")) {
            Some(v) => Some(parse_positive(&key("max-sessions"), &v)? as usize),
            None => None,
        };
        out.push(PrincipalConfig {
            name,
            token_sha256,
            prefixes,
            max_sessions,
        });
    }
    Ok(out)
}

/// S3 refuses non-final parts under 5 MiB (GCS's XML API too).
pub const S3_MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// OSS refuses non-final parts under 100 KB.
pub const OSS_MIN_PART_SIZE: u64 = 100 * 1024;

fn has_prefix(raw: &BTreeMap<String, String>, prefixes: &[&str]) -> bool {
    raw.keys()
        .any(|k| prefixes.iter().any(|p| k.starts_with(p)))
}

/// `<prefix>.upload.min.part.size` (at least `min`) and
/// `<prefix>.upload.max.concurrent.uploads`.
fn upload_config(
    raw: &mut BTreeMap<String, String>,
    prefix: &str,
    min: u64,
) -> Result<UploadConfig> {
    let mut upload = UploadConfig::default();
    let size_key = format!("{prefix}.upload.min.part.size");
    if let Some(v) = raw.remove(&size_key) {
        upload.part_size = parse_memory_size(&size_key, &v)?;
        if upload.part_size < min.max(1) {
            return Err(Error::InvalidArgument(format!(
                "{size_key} is {} bytes; this store needs at least {} bytes per part",
                upload.part_size,
                min.max(1)
            )));
        }
    }
    let count_key = format!("{prefix}.upload.max.concurrent.uploads");
    if let Some(v) = raw.remove(&count_key) {
        upload.max_concurrent_uploads = parse_positive(&count_key, &v)?;
    }
    Ok(upload)
}

/// `fs.<scheme>.limit.{total,output,input,timeout,stream-timeout}`.
fn limit_config(
    raw: &mut BTreeMap<String, String>,
) -> Result<BTreeMap<String, crate::limit::StreamLimits>> {
    use std::time::Duration;
    // `fs.<scheme>.limit.<what>`; `fs.limit.total` (no scheme) is left
    // alone and reported as unknown (cargo fuzz found it panicking here).
    let keys: Vec<(String, String, String)> = raw
        .keys()
        .filter_map(|k| {
            let (scheme, what) = k.strip_prefix("fs.")?.split_once(".limit.")?;
            Some((k.clone(), scheme.to_string(), what.to_string()))
        })
        .collect();
    let mut out: BTreeMap<String, crate::limit::StreamLimits> = BTreeMap::new();
    for (key, scheme, what) in keys {
        let (scheme, what) = (scheme.as_str(), what.as_str());
        let value = raw.remove(&key).unwrap_or_default();
        let n: i64 = value.trim().parse().map_err(|_| {
            Error::InvalidArgument(format!("{key}: {value:?} is not a whole number"))
        })?;
        if n < -1 {
            return Err(Error::InvalidArgument(format!(
                "{key} is {n}; use a positive number, or 0 or -1 for no limit"
            )));
        }
        let count = (n > 0).then_some(n as usize);
        let millis = (n > 0).then(|| Duration::from_millis(n as u64));
        let limits = out.entry(scheme.to_string()).or_default();
        match what {
            "total" => limits.total = count,
            "output" => limits.output = count,
            "input" => limits.input = count,
            "timeout" => limits.timeout = millis,
            "stream-timeout" => limits.stream_timeout = millis,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "{key}: unknown limit; the limits are total, output, input, timeout and stream-timeout"
                )));
            }
        }
    }
    Ok(out)
}

fn entropy_config(raw: &mut BTreeMap<String, String>) -> Result<BTreeMap<String, EntropyConfig>> {
    let schemes: Vec<String> = raw
        .keys()
        .filter_map(|k| k.strip_suffix(".entropy.key").map(str::to_string))
        .collect();
    let mut out = BTreeMap::new();
    for scheme in schemes {
        let key = raw
            .remove(&format!("{scheme}.entropy.key"))
            .unwrap_or_default();
        if key.is_empty() || key.contains('/') {
            return Err(Error::InvalidArgument(format!(
                "{scheme}.entropy.key must be a non-empty marker without '/', such as _entropy_"
            )));
        }
        if let Some(c) = key
            .chars()
            .find(|c| ENTROPY_FORBIDDEN.contains(*c) || c.is_control())
        {
            return Err(Error::InvalidArgument(format!(
                "{scheme}.entropy.key {key:?} contains {c:?}; none of {ENTROPY_FORBIDDEN} may appear in it"
            )));
        }
        let length_key = format!("{scheme}.entropy.length");
        let length = match raw.remove(&length_key) {
            Some(v) => parse_positive(&length_key, &v)? as usize,
            None => 4,
        };
        out.insert(scheme, EntropyConfig { key, length });
    }
    if let Some(orphan) = raw.keys().find(|k| k.ends_with(".entropy.length")) {
        return Err(Error::InvalidArgument(format!(
            "{orphan} is set but its .entropy.key is not"
        )));
    }
    Ok(out)
}

fn parse_bool(raw: &mut BTreeMap<String, String>, key: &str) -> Result<Option<bool>> {
    match raw.remove(key).as_deref().map(str::trim) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(Error::InvalidArgument(format!(
            "{key}: {other:?} is not true or false"
        ))),
    }
}

/// Parses a duration: a number and a unit (`ms`, `s`, `min`/`m`, `h`, `d`).
pub fn parse_duration(key: &str, value: &str) -> Result<std::time::Duration> {
    let bad = || {
        Error::InvalidArgument(format!(
            "{key}: {value:?} is not a duration such as 500ms, 30s, 10min, 12h or 7d"
        ))
    };
    let (n, unit) = number_and_unit(value).ok_or_else(bad)?;
    let millis = match unit {
        "ms" => 1,
        "s" | "" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let total = n.checked_mul(millis).filter(|ms| *ms > 0).ok_or_else(bad)?;
    Ok(std::time::Duration::from_millis(total))
}

/// The environment variable that overrides `key`.
pub fn env_name(key: &str) -> String {
    let mut name = String::from("SLUICE_");
    name.extend(key.chars().map(|c| match c {
        '.' | '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    name
}

/// Parses a hex secret of at least 32 bytes.
pub fn parse_signing_key(text: &str) -> Result<Vec<u8>> {
    let key = hex::decode(text.trim()).map_err(|_| {
        Error::InvalidArgument(
            "handle.signing.key must be hex; generate one with `openssl rand -hex 32`".into(),
        )
    })?;
    if key.len() < 32 {
        return Err(Error::InvalidArgument(format!(
            "handle.signing.key has {} bytes; use at least 32 (`openssl rand -hex 32`)",
            key.len()
        )));
    }
    Ok(key)
}

/// Splits `"12 kb"` into 12 and `"kb"`; `None` without leading digits.
fn number_and_unit(value: &str) -> Option<(u64, &str)> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    Some((digits.parse().ok()?, unit.trim()))
}

/// Parses a Flink memory size: a number with an optional unit
/// (`b`, `k`/`kb`, `m`/`mb`, `g`/`gb`, `t`/`tb`, binary multiples).
pub fn parse_memory_size(key: &str, value: &str) -> Result<u64> {
    let bad = || {
        Error::InvalidArgument(format!(
            "{key}: {value:?} is not a memory size such as 5242880, 100kb or 5mb"
        ))
    };
    let (n, unit) = number_and_unit(value).ok_or_else(bad)?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 0,
        "k" | "kb" | "kibibytes" => 10,
        "m" | "mb" | "mebibytes" => 20,
        "g" | "gb" | "gibibytes" => 30,
        "t" | "tb" | "tebibytes" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(bad)
}

fn parse_positive(key: &str, value: &str) -> Result<u32> {
    match value.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::InvalidArgument(format!(
            "{key}: {value:?} is not a whole number of at least 1"
        ))),
    }
}

/// Flattens a YAML document into dotted keys with string values.
fn parse_yaml(text: &str) -> std::result::Result<BTreeMap<String, String>, String> {
    let doc: serde_norway::Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    match doc {
        serde_norway::Value::Null => {}
        serde_norway::Value::Mapping(map) => flatten("", &map, &mut out)?,
        _ => return Err("the config must be a mapping of keys to values".into()),
    }
    Ok(out)
}

fn flatten(
    prefix: &str,
    map: &serde_norway::Mapping,
    out: &mut BTreeMap<String, String>,
) -> std::result::Result<(), String> {
    use serde_norway::Value;
    for (k, v) in map {
        let k = scalar(k).ok_or_else(|| format!("a key under {prefix:?} is not a scalar"))?;
        let key = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Mapping(inner) => flatten(&key, inner, out)?,
            Value::Sequence(items) => {
                let items: Option<Vec<String>> = items.iter().map(scalar).collect();
                let items = items.ok_or_else(|| format!("{key}: list items must be scalars"))?;
                out.insert(key, items.join(","));
            }
            v => {
                let v = scalar(v).ok_or_else(|| format!("{key}: unsupported value"))?;
                if out.insert(key.clone(), v).is_some() {
                    return Err(format!("{key} is given twice"));
                }
            }
        }
    }
    Ok(())
}

fn scalar(v: &serde_norway::Value) -> Option<String> {
    use serde_norway::Value;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_nested_keys_are_the_same() {
        let flat = Config::from_yaml(
            "fs.default-scheme: memory://demo/\nmemory.upload.min.part.size: 100kb\n",
        )
        .unwrap();
        let nested = Config::from_yaml(
            "fs:\n  default-scheme: memory://demo/\nmemory:\n  upload:\n    min:\n      part:\n        size: 100kb\n",
        )
        .unwrap();
        assert_eq!(flat.default_scheme, nested.default_scheme);
        assert_eq!(flat.memory.part_size, 100 * 1024);
        assert_eq!(nested.memory.part_size, 100 * 1024);
    }

    /// Found by cargo fuzz: `fs.limit.<what>` (no scheme) panicked.
    #[test]
    fn a_limit_key_without_a_scheme_is_unknown_not_a_panic() {
        let c = Config::from_yaml(
            "fs.limit.total: 3
fs.limit.: x
",
        )
        .unwrap();
        assert_eq!(c.unknown_keys, ["fs.limit.", "fs.limit.total"]);
        assert!(c.limits.is_empty());
    }

    #[test]
    fn unknown_keys_are_reported() {
        let c =
            Config::from_yaml("fs.defualt-scheme: file:///\ntaskmanager.numberOfTaskSlots: 4\n")
                .unwrap();
        assert_eq!(
            c.unknown_keys,
            vec!["fs.defualt-scheme", "taskmanager.numberOfTaskSlots"]
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "fs.default-scheme: file:///\n").unwrap();
        let env = [(
            "SLUICE_FS_DEFAULT_SCHEME".to_string(),
            "memory://x/".to_string(),
        )];
        let c = Config::load(Some(&file), env).unwrap();
        assert_eq!(c.default_scheme.scheme, "memory");
    }

    #[test]
    fn memory_sizes_follow_flink() {
        assert_eq!(parse_memory_size("k", "5mb").unwrap(), 5 << 20);
        assert_eq!(parse_memory_size("k", "100 kb").unwrap(), 100 << 10);
        assert_eq!(parse_memory_size("k", "42").unwrap(), 42);
        assert!(parse_memory_size("k", "5 parsecs").is_err());
        assert!(parse_memory_size("k", "-1").is_err());
        assert!(parse_memory_size("k", "99999999999t").is_err());
    }

    #[test]
    fn cloud_schemes_are_served_only_when_configured() {
        let none = Config::from_yaml("").unwrap();
        assert!(
            none.s3.is_none() && none.oss.is_none() && none.gcs.is_none() && none.azure.is_none()
        );
        let c = Config::from_yaml(
            "s3.endpoint: http://127.0.0.1:9000\ns3.path.style.access: true\ns3.upload.min.part.size: 8mb\n\
             fs.oss.endpoint: https://oss-cn-hangzhou.aliyuncs.com\noss.upload.min.part.size: 100kb\n",
        )
        .unwrap();
        let s3 = c.s3.unwrap();
        assert!(s3.path_style && !s3.virtual_hosted);
        assert_eq!(s3.upload.part_size, 8 << 20);
        let oss = c.oss.unwrap();
        assert!(oss.virtual_hosted);
        assert_eq!(oss.upload.part_size, 100 << 10);
    }

    #[test]
    fn limit_keys() {
        let c = Config::from_yaml(
            "fs.s3.limit.output: 2\nfs.s3.limit.total: -1\nfs.s3.limit.timeout: 200\nfs.oss.limit.input: 0\n",
        )
        .unwrap();
        assert!(
            c.s3.is_none() && c.oss.is_none(),
            "limits alone do not configure a scheme"
        );
        let s3 = c.limits["s3"];
        assert_eq!((s3.output, s3.total, s3.input), (Some(2), None, None));
        assert_eq!(s3.timeout, Some(std::time::Duration::from_millis(200)));
        assert_eq!(c.limits["oss"].input, None);
        for bad in [
            "fs.s3.limit.output: -2",
            "fs.s3.limit.output: many",
            "fs.s3.limit.speed: 1",
        ] {
            assert!(Config::from_yaml(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn entropy_keys() {
        let c = Config::from_yaml(
            "s3.entropy.key: _entropy_\nmemory.entropy.key: __e\nmemory.entropy.length: 8\n",
        )
        .unwrap();
        assert!(
            c.s3.is_none(),
            "an entropy key alone does not configure s3://"
        );
        assert_eq!(
            c.entropy["s3"],
            EntropyConfig {
                key: "_entropy_".into(),
                length: 4
            }
        );
        assert_eq!(c.entropy["memory"].length, 8);
        for bad in [
            "s3.entropy.key: a*b",
            "s3.entropy.key: '%e'",
            "s3.entropy.key: a/b",
            "s3.entropy.key: ''",
            "s3.entropy.key: _e_\ns3.entropy.length: 0",
            "s3.entropy.length: 4",
        ] {
            assert!(Config::from_yaml(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("k", "7d").unwrap().as_secs(), 7 * 86_400);
        assert_eq!(parse_duration("k", "500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("k", "10 min").unwrap().as_secs(), 600);
        assert!(parse_duration("k", "0s").is_err());
        assert!(parse_duration("k", "soon").is_err());
        let c = Config::from_yaml("janitor.ttl: 2s\n").unwrap();
        assert_eq!(
            c.janitor.interval.as_secs(),
            2,
            "interval defaults to at most the TTL"
        );
    }

    #[test]
    fn bad_values_are_start_up_errors() {
        for bad in [
            "s3.upload.min.part.size: 1mb",
            "oss.upload.min.part.size: 99kb",
            "fs.oss.accessKeyId: x",
            "fs.oss.endpoint: https://e\nfs.oss.proxy.host: h",
            "s3.path.style.access: maybe",
            "janitor.ttl: forever",
            "fs.default-scheme: nowhere",
            "memory.upload.min.part.size: 0",
            "memory.upload.max.concurrent.uploads: 0",
            "fs.file.allowed-roots: relative/dir",
            "handle.signing.key: abcd",
            "handle.signing.key: not-hex",
        ] {
            assert!(Config::from_yaml(bad).is_err(), "{bad} was accepted");
        }
    }
}
