//! Reading configuration values: the flat key map every section is read
//! from, the value syntaxes (Flink memory sizes, durations, booleans,
//! counts, secrets inline or in a file), YAML flattening and the names of
//! environment overrides. Nothing here knows a particular key.

use std::collections::BTreeMap;

use crate::error::{StartError, StartResult as Result};

/// The configuration as flat dotted keys and string values. Each reader
/// removes the keys it reads, so what is left at the end is unknown.
pub type RawKeys = BTreeMap<String, String>;

/// Whether any of `keys` is set.
pub fn has_any(raw: &RawKeys, keys: &[&str]) -> bool {
    keys.iter().any(|k| raw.contains_key(*k))
}

/// Takes `key` as a duration.
pub fn take_duration(raw: &mut RawKeys, key: &str) -> Result<Option<std::time::Duration>> {
    raw.remove(key).map(|v| parse_duration(key, &v)).transpose()
}

/// Takes `key` as a whole number of at least 1.
pub fn take_positive(raw: &mut RawKeys, key: &str) -> Result<Option<u32>> {
    raw.remove(key).map(|v| parse_positive(key, &v)).transpose()
}

/// Takes `key` as a Flink memory size.
pub fn take_memory_size(raw: &mut RawKeys, key: &str) -> Result<Option<u64>> {
    raw.remove(key)
        .map(|v| parse_memory_size(key, &v))
        .transpose()
}

/// Takes `key` as a comma-separated list (YAML lists flatten to one).
pub fn take_list(raw: &mut RawKeys, key: &str) -> Option<Vec<String>> {
    raw.remove(key).map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
}

/// A key given inline (`<key>`) or in a file (`<key>-file`), not both.
pub fn secret(raw: &mut RawKeys, key: &str) -> Result<Option<String>> {
    let file_key = format!("{key}-file");
    match (raw.remove(key), raw.remove(&file_key)) {
        (Some(_), Some(_)) => Err(StartError::Config(format!(
            "set {key} or {file_key}, not both"
        ))),
        (Some(k), None) => Ok(Some(k)),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(Some)
            .map_err(|e| StartError::Config(format!("cannot read {file_key} {path}: {e}"))),
        (None, None) => Ok(None),
    }
}

pub fn parse_bool(raw: &mut RawKeys, key: &str) -> Result<Option<bool>> {
    match raw.remove(key).as_deref().map(str::trim) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(StartError::Config(format!(
            "{key}: {other:?} is not true or false"
        ))),
    }
}

/// Parses a duration: a number and a unit (`ms`, `s`, `min`/`m`, `h`, `d`).
pub fn parse_duration(key: &str, value: &str) -> Result<std::time::Duration> {
    let bad = || {
        StartError::Config(format!(
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

/// The key that environment variable `name` overrides, when it is the
/// [`env_name`] of one of `keys`. A key with a `<placeholder>`
/// (`fs.<scheme>.limit.total`) matches any variable with its fixed parts
/// around a non-empty middle, which becomes the placeholder in lower case
/// (`SLUICE_FS_S3_LIMIT_TOTAL` is `fs.s3.limit.total`).
pub fn key_for_env(name: &str, keys: &[&str]) -> Option<String> {
    if let Some(key) = keys
        .iter()
        .find(|k| !k.contains('<') && env_name(k) == name)
    {
        return Some((*key).to_string());
    }
    keys.iter().find_map(|pattern| {
        let (before, rest) = pattern.split_once('<')?;
        let (_, after) = rest.split_once('>')?;
        let head = env_name(before);
        let tail = &env_name(after)["SLUICE_".len()..];
        let middle = name.strip_prefix(head.as_str())?.strip_suffix(tail)?;
        (!middle.is_empty() && !middle.starts_with('_') && !middle.ends_with('_'))
            .then(|| format!("{before}{}{after}", middle.to_ascii_lowercase()))
    })
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
        StartError::Config(format!(
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

/// Parses a whole number of at least 1.
pub fn parse_positive(key: &str, value: &str) -> Result<u32> {
    match value.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(StartError::Config(format!(
            "{key}: {value:?} is not a whole number of at least 1"
        ))),
    }
}

/// Flattens a YAML document into dotted keys with string values.
pub fn parse_yaml(text: &str) -> std::result::Result<RawKeys, String> {
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
    out: &mut RawKeys,
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
    fn memory_sizes_follow_flink() {
        assert_eq!(parse_memory_size("k", "5mb").unwrap(), 5 << 20);
        assert_eq!(parse_memory_size("k", "100 kb").unwrap(), 100 << 10);
        assert_eq!(parse_memory_size("k", "42").unwrap(), 42);
        assert!(parse_memory_size("k", "5 parsecs").is_err());
        assert!(parse_memory_size("k", "-1").is_err());
        assert!(parse_memory_size("k", "99999999999t").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("k", "7d").unwrap().as_secs(), 7 * 86_400);
        assert_eq!(parse_duration("k", "500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("k", "10 min").unwrap().as_secs(), 600);
        assert!(parse_duration("k", "0s").is_err());
        assert!(parse_duration("k", "soon").is_err());
    }

    #[test]
    fn environment_names_map_back_to_keys_patterns_included() {
        let keys = [
            "fs.default-scheme",
            "fs.<scheme>.limit.timeout",
            "fs.<scheme>.limit.stream-timeout",
            "<scheme>.entropy.key",
            "handle.verification.<key-id>.key",
            "handle.verification.<key-id>.key-file",
        ];
        let key = |name: &str| key_for_env(name, &keys);
        assert_eq!(
            key("SLUICE_FS_DEFAULT_SCHEME").as_deref(),
            Some("fs.default-scheme")
        );
        assert_eq!(
            key("SLUICE_FS_S3_LIMIT_TIMEOUT").as_deref(),
            Some("fs.s3.limit.timeout")
        );
        assert_eq!(
            key("SLUICE_FS_S3_LIMIT_STREAM_TIMEOUT").as_deref(),
            Some("fs.s3.limit.stream-timeout")
        );
        assert_eq!(
            key("SLUICE_OSS_ENTROPY_KEY").as_deref(),
            Some("oss.entropy.key")
        );
        assert_eq!(
            key("SLUICE_HANDLE_VERIFICATION_OLD_KEY_FILE").as_deref(),
            Some("handle.verification.old.key-file")
        );
        assert_eq!(key("SLUICE_FS__LIMIT_TIMEOUT"), None);
        assert_eq!(key("SLUICE_FS_LIMIT_TIMEOUT"), None);
        assert_eq!(key("SLUICE_DATA_DIR"), None);
    }
}
