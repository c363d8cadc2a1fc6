//! Who may do what: bearer tokens mapped to principals, each allowed a set
//! of URI prefixes and, optionally, a number of open sessions.
//!
//! The configuration holds SHA-256 hashes of the tokens, never the tokens.
//! A request's `authorization: Bearer <token>` metadata is hashed and looked
//! up; the [`Caller`] that results goes with every gateway call, which
//! checks each path it touches ([`Caller::check`]) and that sessions and
//! handles belong to the caller. With no principal configured every caller
//! is [`Caller::Anyone`] and nothing is checked.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::config::PrincipalConfig;
use crate::error::{Error, Result};
use crate::location::{DefaultScheme, Location};

/// One configured principal.
#[derive(Debug)]
pub struct Principal {
    pub name: String,
    prefixes: Vec<Location>,
    /// Shown in errors, as configured.
    prefix_text: Vec<String>,
    max_sessions: usize,
    /// Which key set `max_sessions`, for the refusal's text.
    max_sessions_key: String,
    open_sessions: Mutex<usize>,
}

impl Principal {
    /// Whether `location` lies under one of the prefixes, segment-wise:
    /// `s3://b/jobs/a` covers `s3://b/jobs/a/x` but not `s3://b/jobs/ab`.
    fn covers(&self, location: &Location) -> bool {
        self.prefixes.iter().any(|p| {
            p.scheme == location.scheme
                && p.authority == location.authority
                && (p.path.is_empty()
                    || location.path == p.path
                    || location
                        .path
                        .strip_prefix(p.path.as_str())
                        .is_some_and(|rest| rest.starts_with('/')))
        })
    }
}

/// The principal of a call, or anyone when authentication is off.
#[derive(Debug, Clone)]
pub enum Caller {
    Anyone,
    Principal(Arc<Principal>),
}

impl Caller {
    /// The name stored with sessions and in handles; empty for anyone.
    pub fn name(&self) -> &str {
        match self {
            Caller::Anyone => "",
            Caller::Principal(p) => &p.name,
        }
    }

    /// Refuses a path outside the caller's prefixes.
    pub fn check(&self, location: &Location) -> Result<()> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::Principal(p) if p.covers(location) => Ok(()),
            Caller::Principal(p) => Err(Error::PermissionDenied(format!(
                "principal {:?} may not use {location}: its prefixes are {}",
                p.name,
                p.prefix_text.join(", ")
            ))),
        }
    }

    /// Refuses a session or handle that another principal owns. `owner` is
    /// the name recorded with it; empty means it was made with
    /// authentication off, and then only the path decides.
    pub fn check_owner(&self, owner: &str, what: &str) -> Result<()> {
        match self {
            Caller::Principal(p) if !owner.is_empty() && owner != p.name => {
                Err(Error::PermissionDenied(format!(
                    "{what} belongs to another principal, not to {:?}",
                    p.name
                )))
            }
            _ => Ok(()),
        }
    }

    /// Takes one of the caller's session slots, held until the returned
    /// guard drops (with the session).
    pub fn take_session_slot(&self) -> Result<SessionSlot> {
        let Caller::Principal(p) = self else {
            return Ok(SessionSlot(None));
        };
        let mut open = p.open_sessions.lock().unwrap();
        if *open >= p.max_sessions {
            return Err(Error::ResourceExhausted(format!(
                "principal {:?} has {open} sessions open, its limit ({}); close or abort one first",
                p.name, p.max_sessions_key
            )));
        }
        *open += 1;
        Ok(SessionSlot(Some(p.clone())))
    }
}

/// One open session counted against its principal's cap.
#[derive(Debug)]
pub struct SessionSlot(Option<Arc<Principal>>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            *p.open_sessions.lock().unwrap() -= 1;
        }
    }
}

/// The configured principals, by token hash.
#[derive(Debug, Default)]
pub struct Authenticator {
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
}

impl Authenticator {
    /// `None` when no principal is configured (authentication off).
    /// `default_max_sessions` caps each principal that sets no
    /// `max-sessions` of its own (`sessions.max-open-per-principal`).
    pub fn new(
        principals: &[PrincipalConfig],
        default: &DefaultScheme,
        default_max_sessions: usize,
    ) -> Result<Option<Authenticator>> {
        if principals.is_empty() {
            return Ok(None);
        }
        let mut by_hash = HashMap::new();
        for p in principals {
            let prefixes = p
                .prefixes
                .iter()
                .map(|raw| {
                    Location::resolve_dir(raw, default).map_err(|e| {
                        Error::InvalidArgument(format!(
                            "auth.principals.{}.prefixes: {raw:?}: {e}",
                            p.name
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            by_hash.insert(
                p.token_sha256,
                Arc::new(Principal {
                    name: p.name.clone(),
                    prefixes,
                    prefix_text: p.prefixes.clone(),
                    max_sessions: p.max_sessions.unwrap_or(default_max_sessions),
                    max_sessions_key: match p.max_sessions {
                        Some(_) => format!("auth.principals.{}.max-sessions", p.name),
                        None => "sessions.max-open-per-principal".into(),
                    },
                    open_sessions: Mutex::new(0),
                }),
            );
        }
        Ok(Some(Authenticator { by_hash }))
    }

    /// The principal whose token the `authorization` metadata carries.
    pub fn authenticate(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Caller> {
        let value = metadata.get("authorization").ok_or_else(|| {
            Error::Unauthenticated(
                "this gateway requires a bearer token: send the metadata `authorization: Bearer <token>`".into(),
            )
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::Unauthenticated("the authorization metadata is not `Bearer <token>`".into())
            })?;
        self.by_hash
            .get(&token_hash(token))
            .map(|p| Caller::Principal(p.clone()))
            .ok_or_else(|| {
                Error::Unauthenticated(
                    "the bearer token is not known to this gateway (revoked, or for another deployment)".into(),
                )
            })
    }
}

/// SHA-256 of a token, as `auth.principals.<name>.token-sha256` holds it.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token (32 bytes, hex) and its hash, for `sluice token`.
pub fn new_token() -> Result<(String, String)> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Internal(format!("no randomness for a token: {e}")))?;
    let token = hex::encode(bytes);
    let hash = hex::encode(token_hash(&token));
    Ok((token, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(prefixes: &[&str]) -> Caller {
        principal_capped(prefixes, Some(1), 1000)
    }

    fn principal_capped(prefixes: &[&str], own: Option<usize>, default: usize) -> Caller {
        let config = PrincipalConfig {
            name: "a".into(),
            token_sha256: token_hash("t"),
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            max_sessions: own,
        };
        let auth = Authenticator::new(&[config], &DefaultScheme::default(), default)
            .unwrap()
            .unwrap();
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("authorization", "Bearer t".parse().unwrap());
        auth.authenticate(&md).unwrap()
    }

    fn at(raw: &str) -> Location {
        Location::resolve_dir(raw, &DefaultScheme::default()).unwrap()
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let c = principal(&["s3://b/jobs/a/", "file:///srv/x"]);
        for ok in ["s3://b/jobs/a/f", "s3://b/jobs/a/d/f", "file:///srv/x/f"] {
            c.check(&at(ok)).unwrap();
        }
        for bad in [
            "s3://b/jobs/ab/f",
            "s3://b/jobs/f",
            "s3://c/jobs/a/f",
            "s3a://b/jobs/a/f",
            "file:///srv/xy",
            "file:///srv",
        ] {
            assert!(c.check(&at(bad)).is_err(), "{bad} allowed");
        }
    }

    #[test]
    fn session_slots_are_capped_and_given_back() {
        let c = principal(&["memory://m/"]);
        let slot = c.take_session_slot().unwrap();
        assert!(c.take_session_slot().is_err());
        drop(slot);
        c.take_session_slot().unwrap();
    }

    #[test]
    fn a_principal_without_its_own_cap_gets_the_default() {
        let c = principal_capped(&["memory://m/"], None, 2);
        let _a = c.take_session_slot().unwrap();
        let _b = c.take_session_slot().unwrap();
        let e = c.take_session_slot().unwrap_err().to_string();
        assert!(e.contains("sessions.max-open-per-principal"), "{e}");
        // Its own key wins over the default, in both directions.
        let c = principal_capped(&["memory://m/"], Some(3), 2);
        let slots: Vec<_> = (0..3).map(|_| c.take_session_slot().unwrap()).collect();
        let e = c.take_session_slot().unwrap_err().to_string();
        assert!(e.contains("auth.principals.a.max-sessions"), "{e}");
        drop(slots);
    }
}
