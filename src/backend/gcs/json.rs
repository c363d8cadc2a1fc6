//! The few calls of the GCS JSON API that `gs://` needs: object metadata,
//! downloads, uploads (one request, `uploadType=multipart`, with the
//! CRC32C for the store to check), `compose`, `rewrite`, `delete` and
//! `list`, each with GCS's generation preconditions where they apply.
//!
//! Requests go through object_store's HTTP client (its TLS, proxies and
//! timeouts from `ClientOptions`) with a bearer token from object_store's
//! GCS credential provider (a service-account file, workload identity
//! through the metadata server, or application default credentials).
//! Requests that are safe to repeat are retried on connection errors, 408,
//! 429 and 5xx: every write sluice makes is either to a fresh name or
//! guarded by a generation precondition.

use std::ops::Range;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use object_store::PutPayload;
use object_store::client::{HttpClient, HttpRequest, HttpRequestBody, HttpResponse};
use object_store::gcp::GcpCredentialProvider;
use serde::Deserialize;

/// The store name in object_store's errors.
const STORE: &str = "GCS";

/// Attempts of a request that fails in a way worth retrying.
const ATTEMPTS: u32 = 4;

/// Compose takes at most this many sources per call.
pub const COMPOSE_MAX_SOURCES: usize = 32;

/// An object as the JSON API describes it (the fields sluice reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    pub name: String,
    #[serde(deserialize_with = "number_string")]
    pub size: u64,
    #[serde(default, deserialize_with = "optional_number_string")]
    pub generation: Option<i64>,
    #[serde(default)]
    pub crc32c: Option<String>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub updated: Option<String>,
}

impl Object {
    /// The CRC32C the store keeps for the object, decoded.
    pub fn crc32c(&self) -> Option<u32> {
        self.crc32c.as_deref().and_then(decode_crc32c)
    }
}

/// One page of `objects.list`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPage {
    #[serde(default)]
    pub items: Vec<Object>,
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RewriteResponse {
    done: bool,
    #[serde(default)]
    rewrite_token: Option<String>,
    #[serde(default)]
    resource: Option<Object>,
}

/// The JSON API encodes 64-bit numbers as strings (some emulators send
/// numbers).
fn number_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        N(u64),
    }
    match Either::deserialize(d)? {
        Either::S(s) => s.parse().map_err(serde::de::Error::custom),
        Either::N(n) => Ok(n),
    }
}

fn optional_number_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(Some(number_string(d)? as i64))
}

/// GCS's `crc32c` field: the big-endian CRC32C, base64.
pub fn encode_crc32c(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

fn decode_crc32c(text: &str) -> Option<u32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// A failed JSON API call, as object_store's error for `path`.
#[derive(Debug, thiserror::Error)]
#[error("{method} {what}: HTTP {status}: {body}")]
struct Refused {
    method: Method,
    what: String,
    status: StatusCode,
    body: String,
}

fn refused(path: &str, e: Refused) -> object_store::Error {
    let path = path.to_string();
    match e.status {
        StatusCode::NOT_FOUND => object_store::Error::NotFound {
            path,
            source: Box::new(e),
        },
        StatusCode::PRECONDITION_FAILED => object_store::Error::Precondition {
            path,
            source: Box::new(e),
        },
        StatusCode::CONFLICT => object_store::Error::AlreadyExists {
            path,
            source: Box::new(e),
        },
        StatusCode::UNAUTHORIZED => object_store::Error::Unauthenticated {
            path,
            source: Box::new(e),
        },
        StatusCode::FORBIDDEN => object_store::Error::PermissionDenied {
            path,
            source: Box::new(e),
        },
        _ => object_store::Error::Generic {
            store: STORE,
            source: Box::new(e),
        },
    }
}

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(e),
    }
}

/// Percent-encodes an object or bucket name for one path segment or
/// query value: everything but RFC 3986's unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A JSON API client for one endpoint and one set of credentials.
#[derive(Debug)]
pub struct GcsClient {
    http: HttpClient,
    /// `https://storage.googleapis.com`, or an emulator's address.
    base: String,
    /// `None` for an emulator: no `Authorization` header at all.
    credentials: Option<GcpCredentialProvider>,
}

/// What to send: built anew for each attempt.
struct Call<'a> {
    method: Method,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Option<PutPayload>,
    /// For errors: the object (or prefix) the call is about.
    path: &'a str,
}

impl GcsClient {
    pub fn new(
        http: HttpClient,
        base: String,
        credentials: Option<GcpCredentialProvider>,
    ) -> GcsClient {
        GcsClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            credentials,
        }
    }

    fn object_url(&self, bucket: &str, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.base,
            encode(bucket),
            encode(name)
        )
    }

    async fn send(&self, call: Call<'_>) -> object_store::Result<HttpResponse> {
        let bearer = match &self.credentials {
            Some(provider) => {
                let credential = provider.get_credential().await?;
                (!credential.bearer.is_empty()).then(|| format!("Bearer {}", credential.bearer))
            }
            None => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request: HttpRequest = http::Request::builder()
                .method(call.method.clone())
                .uri(&call.url)
                .body(match &call.body {
                    Some(payload) => HttpRequestBody::from(payload.clone()),
                    None => HttpRequestBody::empty(),
                })
                .map_err(generic)?;
            let headers = request.headers_mut();
            for (name, value) in &call.headers {
                headers.insert(*name, HeaderValue::from_str(value).map_err(generic)?);
            }
            if let Some(body) = &call.body {
                headers.insert(http::header::CONTENT_LENGTH, body.content_length().into());
            } else if call.method == Method::POST || call.method == Method::PUT {
                headers.insert(http::header::CONTENT_LENGTH, 0.into());
            }
            if let Some(bearer) = &bearer {
                headers.insert(
                    http::header::AUTHORIZATION,
                    HeaderValue::from_str(bearer).map_err(generic)?,
                );
            }
            let retry = match self.http.execute(request).await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let transient = status == StatusCode::REQUEST_TIMEOUT
                        || status == StatusCode::TOO_MANY_REQUESTS
                        || status.is_server_error();
                    if !transient || attempt >= ATTEMPTS {
                        let body = response.into_body().bytes().await.unwrap_or_default();
                        return Err(refused(
                            call.path,
                            Refused {
                                method: call.method,
                                what: call.path.to_string(),
                                status,
                                body: String::from_utf8_lossy(&body[..body.len().min(512)])
                                    .into_owned(),
                            },
                        ));
                    }
                    true
                }
                Err(e) if attempt >= ATTEMPTS => return Err(generic(e)),
                Err(_) => true,
            };
            debug_assert!(retry);
            tokio::time::sleep(Duration::from_millis(100 * 4u64.pow(attempt - 1))).await;
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        call: Call<'_>,
    ) -> object_store::Result<T> {
        let response = self.send(call).await?;
        let body = response.into_body().bytes().await.map_err(generic)?;
        serde_json::from_slice(&body).map_err(generic)
    }

    /// The object's metadata, `None` when there is no such object.
    pub async fn object(&self, bucket: &str, name: &str) -> object_store::Result<Option<Object>> {
        let call = Call {
            method: Method::GET,
            url: self.object_url(bucket, name),
            headers: Vec::new(),
            body: None,
            path: name,
        };
        match self.json(call).await {
            Ok(object) => Ok(Some(object)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The bytes of one generation of an object, `range` of them or all.
    pub async fn download(
        &self,
        bucket: &str,
        name: &str,
        generation: Option<i64>,
        range: Option<Range<u64>>,
    ) -> object_store::Result<HttpResponse> {
        let mut url = format!("{}?alt=media", self.object_url(bucket, name));
        if let Some(generation) = generation {
            url.push_str(&format!("&generation={generation}"));
        }
        let headers = match range {
            Some(r) => vec![("range", format!("bytes={}-{}", r.start, r.end - 1))],
            None => Vec::new(),
        };
        self.send(Call {
            method: Method::GET,
            url,
            headers,
            body: None,
            path: name,
        })
        .await
    }

    /// Writes `payload` as object `name` in one request, with its CRC32C for
    /// the store to check; `if_generation_match` 0 creates it only where
    /// none exists. The answer's CRC32C is checked too.
    pub async fn upload(
        &self,
        bucket: &str,
        name: &str,
        payload: PutPayload,
        if_generation_match: Option<i64>,
    ) -> object_store::Result<Object> {
        let crc = payload
            .iter()
            .fold(0, |crc, chunk| crc32c::crc32c_append(crc, chunk));
        let boundary = format!("sluice-{}", uuid::Uuid::new_v4().simple());
        let metadata = serde_json::json!({
            "name": name,
            "crc32c": encode_crc32c(crc),
            "contentType": "application/octet-stream",
        });
        let head = format!(
            "--{boundary}\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n--{boundary}\r\ncontent-type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let body: PutPayload = std::iter::once(Bytes::from(head))
            .chain(payload.iter().cloned())
            .chain(std::iter::once(Bytes::from(tail)))
            .collect();
        let mut url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=multipart&name={}",
            self.base,
            encode(bucket),
            encode(name)
        );
        if let Some(generation) = if_generation_match {
            url.push_str(&format!("&ifGenerationMatch={generation}"));
        }
        let object: Object = self
            .json(Call {
                method: Method::POST,
                url,
                headers: vec![(
                    "content-type",
                    format!("multipart/related; boundary={boundary}"),
                )],
                body: Some(body),
                path: name,
            })
            .await?;
        check_stored(name, &object, crc, payload.content_length() as u64)?;
        Ok(object)
    }

    /// Concatenates `sources` (name, and the generation each must still
    /// have) into `destination`, in the same bucket.
    pub async fn compose(
        &self,
        bucket: &str,
        destination: &str,
        sources: &[(String, Option<i64>)],
        if_generation_match: Option<i64>,
    ) -> object_store::Result<Object> {
        let sources: Vec<serde_json::Value> = sources
            .iter()
            .map(|(name, generation)| match generation {
                Some(g) => serde_json::json!({
                    "name": name,
                    "objectPreconditions": { "ifGenerationMatch": g.to_string() },
                }),
                None => serde_json::json!({ "name": name }),
            })
            .collect();
        let body = serde_json::json!({
            "sourceObjects": sources,
            "destination": { "contentType": "application/octet-stream" },
        });
        let mut url = format!("{}/compose", self.object_url(bucket, destination));
        if let Some(generation) = if_generation_match {
            url.push_str(&format!("?ifGenerationMatch={generation}"));
        }
        self.json(Call {
            method: Method::POST,
            url,
            headers: vec![("content-type", "application/json".into())],
            body: Some(PutPayload::from(body.to_string())),
            path: destination,
        })
        .await
    }

    /// Copies an object, across buckets too, in as many `rewrite` calls as
    /// the store asks for.
    pub async fn rewrite(
        &self,
        (from_bucket, from): (&str, &str),
        (to_bucket, to): (&str, &str),
        if_generation_match: Option<i64>,
    ) -> object_store::Result<Object> {
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/rewriteTo/b/{}/o/{}?",
                self.object_url(from_bucket, from),
                encode(to_bucket),
                encode(to)
            );
            if let Some(generation) = if_generation_match {
                url.push_str(&format!("ifGenerationMatch={generation}&"));
            }
            if let Some(token) = &token {
                url.push_str(&format!("rewriteToken={}", encode(token)));
            }
            let answer: RewriteResponse = self
                .json(Call {
                    method: Method::POST,
                    url,
                    headers: vec![("content-type", "application/json".into())],
                    body: Some(PutPayload::from("{}")),
                    path: to,
                })
                .await?;
            if answer.done {
                return match answer.resource {
                    Some(object) => Ok(object),
                    // Some emulators leave the resource out.
                    None => self.object(to_bucket, to).await?.ok_or_else(|| {
                        object_store::Error::NotFound {
                            path: to.to_string(),
                            source: "the rewrite finished but its object is missing".into(),
                        }
                    }),
                };
            }
            token = answer.rewrite_token;
        }
    }

    /// Deletes an object; `false` when there was none.
    pub async fn delete(&self, bucket: &str, name: &str) -> object_store::Result<bool> {
        let call = Call {
            method: Method::DELETE,
            url: self.object_url(bucket, name),
            headers: Vec::new(),
            body: None,
            path: name,
        };
        match self.send(call).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One page of the objects whose names start with `prefix` (and, with a
    /// delimiter, the prefixes one level down), from `start_offset` on.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_offset: Option<&str>,
        page_token: Option<&str>,
    ) -> object_store::Result<ListPage> {
        let mut url = format!(
            "{}/storage/v1/b/{}/o?maxResults=1000&prefix={}",
            self.base,
            encode(bucket),
            encode(prefix)
        );
        for (key, value) in [
            ("delimiter", delimiter),
            ("startOffset", start_offset),
            ("pageToken", page_token),
        ] {
            if let Some(value) = value {
                url.push_str(&format!("&{key}={}", encode(value)));
            }
        }
        self.json(Call {
            method: Method::GET,
            url,
            headers: Vec::new(),
            body: None,
            path: prefix,
        })
        .await
    }
}

/// An upload's answer must describe the bytes sent: a store that checks
/// the CRC32C refuses a corrupted upload itself, and this catches one that
/// does not.
fn check_stored(name: &str, object: &Object, crc: u32, size: u64) -> object_store::Result<()> {
    let stored_crc = object.crc32c();
    if object.size != size || stored_crc.is_some_and(|c| c != crc) {
        return Err(generic(Refused {
            method: Method::POST,
            what: name.to_string(),
            status: StatusCode::OK,
            body: format!(
                "the store kept {} bytes with CRC32C {:?}, not the {size} bytes with CRC32C {crc:#010x} sent",
                object.size, stored_crc
            ),
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_big_endian_base64() {
        // GCS's documented example: the CRC32C of "hello world" is
        // 0xc99465aa, "yZRlqg==".
        let crc = crc32c::crc32c(b"hello world");
        assert_eq!(crc, 0xc994_65aa);
        assert_eq!(encode_crc32c(crc), "yZRlqg==");
        assert_eq!(decode_crc32c("yZRlqg=="), Some(crc));
        assert_eq!(decode_crc32c("not base64!"), None);
    }

    #[test]
    fn names_are_encoded_as_one_segment() {
        assert_eq!(encode("a/b c.d~e"), "a%2Fb%20c.d~e");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn numbers_come_as_strings_or_numbers() {
        let o: Object =
            serde_json::from_str(r#"{"name":"a","size":"11","generation":"17"}"#).unwrap();
        assert_eq!((o.size, o.generation), (11, Some(17)));
        let o: Object = serde_json::from_str(r#"{"name":"a","size":11}"#).unwrap();
        assert_eq!((o.size, o.generation), (11, None));
    }
}
