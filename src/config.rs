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

/// Where the handle-signing key comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SigningConfig {
    /// The secret itself; `None` means "generate and keep one in the data dir".
    pub key: Option<Vec<u8>>,
    pub key_id: Option<String>,
}

/// The gateway's settings, validated.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub default_scheme: DefaultScheme,
    /// Roots for `file://`; empty means `<data-dir>/files`.
    pub file_roots: Vec<PathBuf>,
    pub memory: UploadConfig,
    pub signing: SigningConfig,
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
        if let Some(v) = raw.remove("memory.upload.min.part.size") {
            config.memory.part_size = parse_memory_size("memory.upload.min.part.size", &v)?;
            if config.memory.part_size == 0 {
                return Err(Error::InvalidArgument(
                    "memory.upload.min.part.size must be at least 1 byte".into(),
                ));
            }
        }
        if let Some(v) = raw.remove("memory.upload.max.concurrent.uploads") {
            config.memory.max_concurrent_uploads =
                parse_positive("memory.upload.max.concurrent.uploads", &v)?;
        }
        let key_file = raw.remove("handle.signing.key-file");
        let key = raw.remove("handle.signing.key");
        let key = match (key, key_file) {
            (Some(_), Some(_)) => {
                return Err(Error::InvalidArgument(
                    "set handle.signing.key or handle.signing.key-file, not both".into(),
                ));
            }
            (Some(k), None) => Some(k),
            (None, Some(path)) => Some(std::fs::read_to_string(&path).map_err(|e| {
                Error::InvalidArgument(format!("cannot read handle.signing.key-file {path}: {e}"))
            })?),
            (None, None) => None,
        };
        if let Some(key) = key {
            config.signing.key = Some(parse_signing_key(&key)?);
        }
        config.signing.key_id = raw.remove("handle.signing.key-id");
        config.unknown_keys = raw.into_keys().collect();
        Ok(config)
    }
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

/// Parses a Flink memory size: a number with an optional unit
/// (`b`, `k`/`kb`, `m`/`mb`, `g`/`gb`, `t`/`tb`, binary multiples).
pub fn parse_memory_size(key: &str, value: &str) -> Result<u64> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let bad = || {
        Error::InvalidArgument(format!(
            "{key}: {value:?} is not a memory size such as 5242880, 100kb or 5mb"
        ))
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
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
    fn bad_values_are_start_up_errors() {
        for bad in [
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
