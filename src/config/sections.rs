//! The generic sections with structure of their own: stream limits,
//! entropy, handle keys, TLS and principals.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::{ENTROPY_FORBIDDEN, EntropyConfig, PrincipalConfig, SigningConfig, TlsConfig};
use crate::backend::StreamLimits;
use crate::error::{StartError, StartResult as Result};
use crate::settings::{RawKeys, parse_positive, secret};

/// `handle.signing.*` and `handle.verification.*`.
pub(super) fn signing(raw: &mut RawKeys) -> Result<SigningConfig> {
    Ok(SigningConfig {
        key: secret(raw, "handle.signing.key")?
            .map(|key| parse_signing_key(&key))
            .transpose()?,
        key_id: raw.remove("handle.signing.key-id"),
        verification: verification_keys(raw)?,
    })
}

/// `handle.verification.<key-id>.key` (or `.key-file`).
fn verification_keys(raw: &mut RawKeys) -> Result<BTreeMap<String, Vec<u8>>> {
    let ids: BTreeSet<String> = raw
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
            return Err(StartError::Config(format!(
                "handle.verification.{id}: give the key as {key} or {key}-file"
            )));
        };
        if id.is_empty() || id.contains('.') {
            return Err(StartError::Config(format!(
                "{key}: {id:?} is not a key id (the id handles carry, without dots)"
            )));
        }
        let parsed =
            parse_signing_key(&text).map_err(|e| StartError::Config(format!("{key}: {e}")))?;
        out.insert(id, parsed);
    }
    Ok(out)
}

/// `rpc.tls.cert-file`, `rpc.tls.key-file`, `rpc.tls.client-ca-file`.
pub(super) fn tls(raw: &mut RawKeys) -> Result<Option<TlsConfig>> {
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
        (None, None) => Err(StartError::Config(
            "rpc.tls.client-ca-file needs TLS: set rpc.tls.cert-file and rpc.tls.key-file too"
                .into(),
        )),
        _ => Err(StartError::Config(
            "set both rpc.tls.cert-file and rpc.tls.key-file, or neither".into(),
        )),
    }
}

/// `auth.principals.<name>.{token-sha256,prefixes,max-sessions}`.
pub(super) fn principals(raw: &mut RawKeys) -> Result<Vec<PrincipalConfig>> {
    const FIELDS: [&str; 3] = ["token-sha256", "prefixes", "max-sessions"];
    let keys: Vec<String> = raw
        .keys()
        .filter(|k| k.starts_with("auth."))
        .cloned()
        .collect();
    let mut names = BTreeSet::new();
    for key in &keys {
        let parsed = key
            .strip_prefix("auth.principals.")
            .and_then(|rest| rest.rsplit_once('.'))
            .filter(|(name, field)| !name.is_empty() && FIELDS.contains(field));
        match parsed {
            Some((name, _)) => names.insert(name.to_string()),
            None => {
                return Err(StartError::Config(format!(
                    "{key}: not an auth key; they are auth.principals.<name>.{{{}}}",
                    FIELDS.join(",")
                )));
            }
        };
    }
    let mut out = Vec::new();
    let mut hashes = BTreeSet::new();
    for name in names {
        let key = |field: &str| format!("auth.principals.{name}.{field}");
        let hash = raw.remove(&key("token-sha256")).ok_or_else(|| {
            StartError::Config(format!(
                "{}: missing; `sluice token` prints a token and its hash",
                key("token-sha256")
            ))
        })?;
        let token_sha256: [u8; 32] = hex::decode(hash.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                StartError::Config(format!(
                    "{}: not 64 hex digits (the SHA-256 of the token, not the token)",
                    key("token-sha256")
                ))
            })?;
        if !hashes.insert(token_sha256) {
            return Err(StartError::Config(format!(
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
            return Err(StartError::Config(format!(
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

pub(super) fn limits(raw: &mut RawKeys) -> Result<BTreeMap<String, StreamLimits>> {
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
    let mut out: BTreeMap<String, StreamLimits> = BTreeMap::new();
    for (key, scheme, what) in keys {
        let (scheme, what) = (scheme.as_str(), what.as_str());
        let value = raw.remove(&key).unwrap_or_default();
        let n: i64 = value
            .trim()
            .parse()
            .map_err(|_| StartError::Config(format!("{key}: {value:?} is not a whole number")))?;
        if n < -1 {
            return Err(StartError::Config(format!(
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
                return Err(StartError::Config(format!(
                    "{key}: unknown limit; the limits are total, output, input, timeout and stream-timeout"
                )));
            }
        }
    }
    Ok(out)
}

pub(super) fn entropy(raw: &mut RawKeys) -> Result<BTreeMap<String, EntropyConfig>> {
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
            return Err(StartError::Config(format!(
                "{scheme}.entropy.key must be a non-empty marker without '/', such as _entropy_"
            )));
        }
        if let Some(c) = key
            .chars()
            .find(|c| ENTROPY_FORBIDDEN.contains(*c) || c.is_control())
        {
            return Err(StartError::Config(format!(
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
        return Err(StartError::Config(format!(
            "{orphan} is set but its .entropy.key is not"
        )));
    }
    Ok(out)
}

/// Parses a hex secret of at least 32 bytes.
pub fn parse_signing_key(text: &str) -> Result<Vec<u8>> {
    let key = hex::decode(text.trim()).map_err(|_| {
        StartError::Config(
            "handle.signing.key must be hex; generate one with `openssl rand -hex 32`".into(),
        )
    })?;
    if key.len() < 32 {
        return Err(StartError::Config(format!(
            "handle.signing.key has {} bytes; use at least 32 (`openssl rand -hex 32`)",
            key.len()
        )));
    }
    Ok(key)
}
