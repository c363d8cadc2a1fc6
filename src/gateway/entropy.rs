//! Entropy injection (DESIGN.md 4).

use crate::config::EntropyConfig;
use crate::error::{Error, Result};
use crate::location::Location;

/// Replaces the first occurrence of the entropy key in the path with random
/// `[0-9A-Za-z]` characters, or removes it (and the empty segment that
/// leaves) when no entropy is asked for, as Flink's `EntropyInjector` does.
pub(super) fn apply_entropy(
    target: &Location,
    entropy: &EntropyConfig,
    inject: bool,
) -> Result<Location> {
    if !target.path.contains(&entropy.key) {
        return Ok(target.clone());
    }
    let replacement = if inject {
        random_alphanumeric(entropy.length)?
    } else {
        String::new()
    };
    let path = target.path.replacen(&entropy.key, &replacement, 1);
    let path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if path.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{target} is nothing but its entropy marker; name a file"
        )));
    }
    Ok(target.with_path(path.join("/")))
}

fn random_alphanumeric(n: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
        // 248 = 4 × 62: rejecting the rest keeps every character equally likely.
        out.extend(
            bytes
                .iter()
                .filter(|b| **b < 248)
                .map(|b| ALPHABET[(*b % 62) as usize] as char)
                .take(n - out.len()),
        );
    }
    Ok(out)
}
