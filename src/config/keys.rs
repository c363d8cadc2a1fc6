//! The keys that are not any one backend's, with what they mean (`sluice
//! keys`); each backend lists its own (`backend::BackendKind::keys`).

/// Every generic key sluice reads.
pub const GENERIC_KEYS: &[(&str, &str)] = &[
    (
        "fs.default-scheme",
        "scheme (and authority) for paths without one; default file:///",
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
        "sessions.max-open-per-principal",
        "write sessions one principal may hold open when authentication is on, unless auth.principals.<name>.max-sessions sets its own; past it, that principal's Open and Recover answer RESOURCE_EXHAUSTED; default 1000",
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
