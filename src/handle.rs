//! Resume and commit handles: self-contained, versioned, HMAC-signed.
//!
//! A handle is a protobuf `SignedHandle` whose body is a `HandleBody` (see
//! `proto/sluice/internal/v1/handle.proto`). Because everything needed to recover or
//! commit is inside and the signature covers it, any replica holding the key
//! can act on a handle, and no client can make the gateway touch a path or an
//! upload it did not open.

use std::collections::HashMap;
use std::path::Path;

use hmac::{Hmac, Mac};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::backend;
use crate::error::{Error, Result};
use crate::proto::{self, HandleBody, SignedHandle};

/// The envelope version this gateway writes.
pub const HANDLE_VERSION: u32 = 1;
/// Larger inputs are refused before decoding (10,000 parts fit well inside).
pub const MAX_HANDLE_LEN: usize = 4 * 1024 * 1024;
const KEY_FILE: &str = "handle-signing.key";

type HmacSha256 = Hmac<Sha256>;

/// The signing key and the keys whose handles are still accepted.
#[derive(Clone)]
pub struct HandleKeys {
    signing_id: String,
    keys: HashMap<String, Vec<u8>>,
}

impl std::fmt::Debug for HandleKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        f.debug_struct("HandleKeys")
            .field("signing_id", &self.signing_id)
            .finish_non_exhaustive()
    }
}

impl HandleKeys {
    /// A key ring with one key that both signs and verifies.
    pub fn new(key: Vec<u8>, key_id: Option<String>) -> HandleKeys {
        let id = key_id.unwrap_or_else(|| derived_key_id(&key));
        HandleKeys {
            keys: HashMap::from([(id.clone(), key)]),
            signing_id: id,
        }
    }

    /// Uses `key` when given, or else the key kept in `data_dir`, creating
    /// that (readable by the owner only) on first start.
    /// `state_has_records`: the state store holds sessions or stagings, so
    /// handles signed by the key in the data dir are out there; a missing
    /// key file is then refused rather than silently replaced, which would
    /// make every one of them unrecoverable.
    pub fn load_or_create(
        key: Option<Vec<u8>>,
        key_id: Option<String>,
        data_dir: &Path,
        state_has_records: bool,
    ) -> Result<HandleKeys> {
        if let Some(key) = key {
            return Ok(HandleKeys::new(key, key_id));
        }
        let path = data_dir.join(KEY_FILE);
        let key = match std::fs::read_to_string(&path) {
            Ok(text) => crate::config::parse_signing_key(&text)
                .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && state_has_records => {
                return Err(Error::InvalidArgument(format!(
                    "the handle signing key {} is missing, but the state store beside it holds sessions and staged files whose handles it signed; a new key would make all of them unrecoverable. Restore the file from a backup (or set handle.signing.key to the same key); to start afresh on purpose, remove the state directory {} too",
                    path.display(),
                    data_dir.join("state").display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; 32];
                getrandom::fill(&mut key).map_err(|e| {
                    Error::Internal(format!("no randomness for a signing key: {e}"))
                })?;
                write_private(&path, hex::encode(&key).as_bytes()).map_err(|e| {
                    Error::Internal(format!("cannot create {}: {e}", path.display()))
                })?;
                key
            }
            Err(e) => {
                return Err(Error::Internal(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        Ok(HandleKeys::new(key, key_id))
    }

    /// Also accepts handles signed by these keys (by key id): the keys of
    /// earlier signing keys, while handles they signed may still come back.
    pub fn with_verification(
        mut self,
        keys: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<HandleKeys> {
        for (id, key) in keys {
            if id == self.signing_id {
                return Err(Error::InvalidArgument(format!(
                    "handle.verification.{id}: that is the signing key's id; give a retired key its own id"
                )));
            }
            self.keys.insert(id, key);
        }
        Ok(self)
    }

    /// The ids of every key whose handles are accepted, signing key first.
    pub fn accepted_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = vec![&self.signing_id];
        let mut others: Vec<&str> = self
            .keys
            .keys()
            .map(String::as_str)
            .filter(|id| *id != self.signing_id)
            .collect();
        others.sort_unstable();
        ids.extend(others);
        ids
    }

    /// The id of the key that signs new handles.
    pub fn signing_id(&self) -> &str {
        &self.signing_id
    }

    /// Encodes and signs `body`.
    pub fn seal(&self, body: &HandleBody) -> Vec<u8> {
        let body = body.encode_to_vec();
        let key = &self.keys[&self.signing_id];
        let mac = mac(key, HANDLE_VERSION, &self.signing_id, &body);
        SignedHandle {
            version: HANDLE_VERSION,
            key_id: self.signing_id.clone(),
            body,
            mac,
        }
        .encode_to_vec()
    }

    /// Verifies and decodes a handle a client sent. Every failure is an
    /// `InvalidArgument` that says why.
    pub fn open(&self, handle: &[u8]) -> Result<HandleBody> {
        let invalid = |why: &str| Error::InvalidArgument(format!("invalid handle: {why}"));
        if handle.is_empty() {
            return Err(invalid(
                "it is empty; pass the bytes Persist or CloseForCommit returned",
            ));
        }
        if handle.len() > MAX_HANDLE_LEN {
            return Err(invalid("it is larger than any handle sluice issues"));
        }
        let signed = SignedHandle::decode(handle).map_err(|_| {
            invalid("these bytes are not a sluice handle (truncated or corrupted?)")
        })?;
        if signed.version != HANDLE_VERSION {
            return Err(invalid(&format!(
                "envelope version {} is not supported by this gateway (it reads version {HANDLE_VERSION}); upgrade the gateway",
                signed.version
            )));
        }
        let key = self.keys.get(&signed.key_id).ok_or_else(|| {
            invalid(&format!(
                "it was signed with key {:?}, which this gateway does not hold (another deployment, or a retired key)",
                signed.key_id
            ))
        })?;
        let mut verifier =
            HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
        feed(&mut verifier, signed.version, &signed.key_id, &signed.body);
        verifier
            .verify_slice(&signed.mac)
            .map_err(|_| invalid("its signature does not match (tampered or corrupted)"))?;
        HandleBody::decode(signed.body.as_slice())
            .map_err(|_| invalid("its signed body does not decode (written by a newer gateway?)"))
    }
}

fn mac(key: &[u8], version: u32, key_id: &str, body: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    feed(&mut m, version, key_id, body);
    m.finalize().into_bytes().to_vec()
}

/// Feeds the signed fields with lengths, so no two field splits collide.
fn feed(m: &mut HmacSha256, version: u32, key_id: &str, body: &[u8]) {
    m.update(&version.to_be_bytes());
    m.update(&(key_id.len() as u64).to_be_bytes());
    m.update(key_id.as_bytes());
    m.update(&(body.len() as u64).to_be_bytes());
    m.update(body);
}

fn derived_key_id(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..4])
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

// ---- the handle's staging, to and from the backends' domain types ----

impl From<backend::Staging> for proto::handle_body::Staging {
    fn from(staging: backend::Staging) -> Self {
        match staging {
            backend::Staging::File(f) => proto::handle_body::Staging::File(proto::FileStaging {
                temp_path: f.temp_path,
            }),
            backend::Staging::Multipart(m) => {
                proto::handle_body::Staging::Multipart(proto::MultipartStaging {
                    upload_id: m.upload_id,
                    parts: m
                        .parts
                        .into_iter()
                        .map(|p| proto::UploadedPart {
                            index: p.index,
                            content_id: p.content_id,
                            size: p.size,
                        })
                        .collect(),
                    tail: m.tail.map(|t| proto::TailObject {
                        path: t.path,
                        size: t.size,
                    }),
                })
            }
        }
    }
}

fn staging_of(staging: &proto::handle_body::Staging) -> backend::Staging {
    match staging {
        proto::handle_body::Staging::File(f) => backend::Staging::File(backend::FileStaging {
            temp_path: f.temp_path.clone(),
        }),
        proto::handle_body::Staging::Multipart(m) => {
            backend::Staging::Multipart(backend::MultipartStaging {
                upload_id: m.upload_id.clone(),
                parts: m
                    .parts
                    .iter()
                    .map(|p| backend::UploadedPart {
                        index: p.index,
                        content_id: p.content_id.clone(),
                        size: p.size,
                    })
                    .collect(),
                tail: m.tail.as_ref().map(|t| backend::TailObject {
                    path: t.path.clone(),
                    size: t.size,
                }),
            })
        }
    }
}

/// What an opened handle names, for its backend: `InvalidArgument` when it
/// names no staging (no sluice handle does).
pub fn resume_point(body: &HandleBody) -> Result<backend::ResumePoint> {
    let staging = body.staging.as_ref().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "invalid handle: it names no staged file for {}",
            body.target
        ))
    })?;
    Ok(backend::ResumePoint {
        staging_id: body.staging_id.clone(),
        position: body.position,
        crc32c: body.crc32c,
        staging: staging_of(staging),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::HandleKind;

    fn body() -> HandleBody {
        HandleBody {
            kind: HandleKind::Resume as i32,
            target: "memory://t/a".into(),
            position: 42,
            staging_id: "s".into(),
            ..Default::default()
        }
    }

    #[test]
    fn round_trips_and_refuses_tampering() {
        let keys = HandleKeys::new(vec![7; 32], None);
        let h = keys.seal(&body());
        assert_eq!(keys.open(&h).unwrap(), body());
        for i in 0..h.len() {
            let mut bad = h.clone();
            bad[i] ^= 0x01;
            assert!(keys.open(&bad).is_err(), "flipping byte {i} went unnoticed");
        }
        for n in 0..h.len() {
            assert!(keys.open(&h[..n]).is_err(), "truncation to {n} accepted");
        }
    }

    #[test]
    fn refuses_other_keys() {
        let a = HandleKeys::new(vec![1; 32], Some("k".into()));
        let b = HandleKeys::new(vec![2; 32], Some("k".into()));
        let err = b.open(&a.seal(&body())).unwrap_err().to_string();
        assert!(err.contains("signature"), "{err}");
        let c = HandleKeys::new(vec![2; 32], Some("other".into()));
        let err = c.open(&a.seal(&body())).unwrap_err().to_string();
        assert!(err.contains("does not hold"), "{err}");
    }

    #[test]
    fn rotated_keys_keep_verifying_until_retired() {
        let old = HandleKeys::new(vec![1; 32], Some("2026-01".into()));
        let from_old = old.seal(&body());
        let rotated = HandleKeys::new(vec![2; 32], Some("2026-06".into()))
            .with_verification([("2026-01".to_string(), vec![1; 32])])
            .unwrap();
        assert_eq!(rotated.accepted_ids(), ["2026-06", "2026-01"]);
        // Old handles still open; new ones are signed with the new key only.
        assert_eq!(rotated.open(&from_old).unwrap(), body());
        let from_new = rotated.seal(&body());
        let err = old.open(&from_new).unwrap_err().to_string();
        assert!(err.contains("does not hold"), "{err}");
        // The old key's id with another secret is a forgery, not a rotation.
        let forged = HandleKeys::new(vec![9; 32], Some("2026-01".into())).seal(&body());
        let err = rotated.open(&forged).unwrap_err().to_string();
        assert!(err.contains("signature"), "{err}");
        // Retired: the old key removed from the ring.
        let retired = HandleKeys::new(vec![2; 32], Some("2026-06".into()));
        assert!(retired.open(&from_old).is_err());
        assert_eq!(retired.open(&from_new).unwrap(), body());
        // A verification key may not reuse the signing key's id.
        assert!(
            HandleKeys::new(vec![2; 32], Some("k".into()))
                .with_verification([("k".to_string(), vec![1; 32])])
                .is_err()
        );
    }

    #[test]
    fn key_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = HandleKeys::load_or_create(None, None, dir.path(), false).unwrap();
        let b = HandleKeys::load_or_create(None, None, dir.path(), false).unwrap();
        assert_eq!(b.open(&a.seal(&body())).unwrap(), body());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
