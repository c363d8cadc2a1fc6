//! Target paths: parsing URIs, applying the default scheme, rejecting what
//! could escape or confuse.
//!
//! Parsing is deliberately strict and does not normalise: a `..` or `.`
//! segment, an empty segment, a NUL or other control character is refused
//! rather than resolved, so the path a client names is the path written.

use std::fmt;

use crate::error::{Error, Result};

/// The longest path accepted, in bytes (Linux's PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;

/// A resolved target: `scheme://authority/path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// Lower-case URI scheme, such as `file` or `memory`.
    pub scheme: String,
    /// Bucket, container, store name; empty for `file`.
    pub authority: String,
    /// The path inside the authority, without a leading `/`, never empty.
    pub path: String,
}

impl Location {
    /// Parses `raw`, taking the scheme and authority of `default` when `raw`
    /// has none. It must name a file.
    pub fn resolve(raw: &str, default: &DefaultScheme) -> Result<Location> {
        Location::parse(raw, default, false)
    }

    /// Parses a path that may name a directory: a trailing `/` is dropped,
    /// and the path may be empty (the bucket or the root itself).
    pub fn resolve_dir(raw: &str, default: &DefaultScheme) -> Result<Location> {
        Location::parse(raw, default, true)
    }

    fn parse(raw: &str, default: &DefaultScheme, dir: bool) -> Result<Location> {
        if raw.is_empty() {
            return Err(Error::InvalidArgument(
                "the path is empty: name a target such as file:///data/out/part-0".into(),
            ));
        }
        if raw.len() > MAX_PATH_LEN {
            return Err(Error::InvalidArgument(format!(
                "the path is {} bytes long; at most {MAX_PATH_LEN} are accepted",
                raw.len()
            )));
        }
        if let Some(c) = raw.chars().find(|c| c.is_control()) {
            return Err(Error::InvalidArgument(format!(
                "the path {raw:?} contains the control character {c:?}; remove it"
            )));
        }
        let (scheme, rest) = match split_scheme(raw) {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None if raw.contains("://") => {
                return Err(Error::InvalidArgument(format!(
                    "{raw:?} is not a valid URI: a scheme is a letter followed by letters, digits, '+', '-' or '.'"
                )));
            }
            None => {
                if !raw.starts_with('/') {
                    return Err(Error::InvalidArgument(format!(
                        "{raw:?} is a relative path: give an absolute path or a full URI (relative paths are not guessed)"
                    )));
                }
                return Location::from_parts(
                    &default.scheme,
                    &default.authority,
                    &join_prefix(&default.prefix, &raw[1..]),
                    raw,
                    dir,
                );
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        Location::from_parts(&scheme, authority, path, raw, dir)
    }

    fn from_parts(
        scheme: &str,
        authority: &str,
        path: &str,
        raw: &str,
        dir: bool,
    ) -> Result<Location> {
        // abfs[s]://container@account.dfs.core.windows.net is the one
        // scheme whose authority legitimately holds an '@'.
        let user_info = authority.contains('@') && !matches!(scheme, "abfs" | "abfss");
        if user_info || authority.contains(['?', '#']) || path.contains(['?', '#']) {
            return Err(Error::InvalidArgument(format!(
                "{raw:?}: user info, queries and fragments are not part of a target path; remove them"
            )));
        }
        if scheme == "file" && !(authority.is_empty() || authority == "localhost") {
            return Err(Error::InvalidArgument(format!(
                "{raw:?}: a file URI has no host; write file:///absolute/path"
            )));
        }
        let path = if dir {
            path.strip_suffix('/').unwrap_or(path)
        } else {
            path
        };
        if !dir && (path.is_empty() || path.ends_with('/')) {
            return Err(Error::InvalidArgument(format!(
                "{raw:?} names a directory, not a file: add a file name"
            )));
        }
        for segment in path.split('/').filter(|_| !path.is_empty()) {
            match segment {
                "" => {
                    return Err(Error::InvalidArgument(format!(
                        "{raw:?} has an empty path segment ('//'); remove it"
                    )));
                }
                "." | ".." => {
                    return Err(Error::InvalidArgument(format!(
                        "{raw:?} has a {segment:?} segment; dot segments are refused, give the path without them"
                    )));
                }
                _ => {}
            }
        }
        let location = Location {
            scheme: scheme.to_string(),
            authority: if scheme == "file" {
                String::new()
            } else {
                authority.to_string()
            },
            path: path.to_string(),
        };
        // The limit holds for the resolved URI too: a path under it can
        // pass it once the default scheme's prefix is added (cargo fuzz
        // found such a path, which then did not parse back).
        let resolved = location.to_string().len();
        if resolved > MAX_PATH_LEN {
            return Err(Error::InvalidArgument(format!(
                "{raw:?} resolves to a URI of {resolved} bytes (with the default scheme); at most {MAX_PATH_LEN} are accepted"
            )));
        }
        Ok(location)
    }

    /// The same store, another path in it.
    pub fn with_path(&self, path: String) -> Location {
        Location {
            path,
            ..self.clone()
        }
    }

    /// The last segment of the path.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// The path without its last segment (empty at the top).
    pub fn parent(&self) -> &str {
        self.path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}/{}", self.scheme, self.authority, self.path)
    }
}

/// `fs.default-scheme`: where paths without a scheme go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultScheme {
    pub scheme: String,
    pub authority: String,
    /// A path prefix inside the authority (`s3://bucket/prefix/`), may be empty.
    pub prefix: String,
}

impl DefaultScheme {
    /// Parses a value such as `file:///` or `s3://bucket/`.
    pub fn parse(value: &str) -> Result<DefaultScheme> {
        let (scheme, rest) = split_scheme(value).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "fs.default-scheme {value:?} is not a URI such as file:/// or s3://bucket/"
            ))
        })?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i + 1..].trim_end_matches('/')),
            None => (rest, ""),
        };
        Ok(DefaultScheme {
            scheme: scheme.to_ascii_lowercase(),
            authority: authority.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl Default for DefaultScheme {
    fn default() -> Self {
        DefaultScheme {
            scheme: "file".into(),
            authority: String::new(),
            prefix: String::new(),
        }
    }
}

fn join_prefix(prefix: &str, path: &str) -> String {
    if prefix.is_empty() {
        path.to_string()
    } else {
        format!("{prefix}/{path}")
    }
}

/// Splits `scheme://rest`; `None` unless the scheme is well formed.
fn split_scheme(raw: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = raw.split_once("://")?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(raw: &str) -> Result<Location> {
        Location::resolve(raw, &DefaultScheme::default())
    }

    #[test]
    fn parses_full_uris() {
        let l = resolve("memory://demo/a/b.txt").unwrap();
        assert_eq!(
            (l.scheme.as_str(), l.authority.as_str()),
            ("memory", "demo")
        );
        assert_eq!(l.path, "a/b.txt");
        assert_eq!(l.file_name(), "b.txt");
        assert_eq!(l.parent(), "a");
        assert_eq!(l.to_string(), "memory://demo/a/b.txt");
        let f = resolve("FILE:///tmp/x").unwrap();
        assert_eq!(f.to_string(), "file:///tmp/x");
    }

    /// Found by cargo fuzz: a path under the limit that the default
    /// scheme's prefix takes over it.
    #[test]
    fn the_length_limit_holds_after_the_default_prefix() {
        let d = DefaultScheme::parse("s3://bucket/base/").unwrap();
        let raw = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        assert_eq!(raw.len(), MAX_PATH_LEN);
        let err = Location::resolve(&raw, &d).unwrap_err().to_string();
        assert!(err.contains("resolves to a URI"), "{err}");
        let fits = format!("/{}", "a".repeat(MAX_PATH_LEN - 40));
        let l = Location::resolve(&fits, &d).unwrap();
        assert_eq!(Location::resolve(&l.to_string(), &d).unwrap(), l);
    }

    #[test]
    fn default_scheme_applies_to_absolute_paths_only() {
        let d = DefaultScheme::parse("s3://bucket/base/").unwrap();
        let l = Location::resolve("/a/b", &d).unwrap();
        assert_eq!(l.to_string(), "s3://bucket/base/a/b");
        assert!(matches!(
            Location::resolve("a/b", &d),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn directories_may_be_named() {
        let d = DefaultScheme::default();
        let l = Location::resolve_dir("memory://m/dir/", &d).unwrap();
        assert_eq!(l.path, "dir");
        let root = Location::resolve_dir("memory://m/", &d).unwrap();
        assert_eq!(root.path, "");
        assert!(Location::resolve_dir("memory://m/a//b/", &d).is_err());
        assert!(Location::resolve_dir("memory://m/a/../b", &d).is_err());
    }

    #[test]
    fn refuses_what_could_escape_or_confuse() {
        for bad in [
            "",
            "file:///a/../b",
            "file:///a/./b",
            "file:///a//b",
            "file:///a/",
            "file://host/a",
            "memory://x",
            "memory://x/a\0b",
            "1abc://x/y",
            "s3://user@bucket/k",
            "s3://bucket/k?x=1",
        ] {
            assert!(
                matches!(resolve(bad), Err(Error::InvalidArgument(_))),
                "{bad:?} was accepted"
            );
        }
        let long = format!("file:///{}", "a".repeat(MAX_PATH_LEN));
        assert!(resolve(&long).is_err());
    }
}
