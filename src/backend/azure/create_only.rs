//! Commits that never replace a blob, even under races: every Put Block
//! List sluice sends carries `If-None-Match: *`, so Azure commits the
//! blocks only while no blob has the name.
//!
//! object_store 0.14 sends Put Block List without conditions, so the
//! header goes on in the HTTP client object_store calls. Shared Key
//! authorization signs `If-None-Match`, so a request signed that way is
//! signed again here, with the account key, over the string Microsoft's
//! "Authorize with Shared Key" documents (verb, the standard headers, the
//! `x-ms-*` headers, the resource and its query). SAS and bearer-token
//! requests sign no such header and only get it added.

use hmac::{Hmac, Mac};
use http::header::{AUTHORIZATION, HeaderValue, IF_NONE_MATCH};
use object_store::client::HttpRequest;
use sha2::Sha256;

use crate::backend::object::hook::{RequestHook, has_query};

/// Makes every Put Block List create-only.
#[derive(Debug)]
pub struct CreateOnlyBlockList {
    /// The account and its decoded key, when requests use Shared Key.
    shared_key: Option<(String, Vec<u8>)>,
}

impl CreateOnlyBlockList {
    /// `key` is the account key as configured (base64).
    pub fn new(account: Option<&str>, key: Option<&str>) -> CreateOnlyBlockList {
        use base64::Engine;
        let shared_key = match (account, key) {
            (Some(account), Some(key)) => base64::engine::general_purpose::STANDARD
                .decode(key)
                .ok()
                .map(|key| (account.to_string(), key)),
            _ => None,
        };
        CreateOnlyBlockList { shared_key }
    }
}

impl RequestHook for CreateOnlyBlockList {
    fn prepare(&self, request: &mut HttpRequest) {
        if request.method() != http::Method::PUT || !has_query(request, "comp") {
            return;
        }
        let is_block_list = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "comp=blocklist"));
        if !is_block_list {
            return;
        }
        let signed_with_shared_key = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("SharedKey "));
        match (signed_with_shared_key, &self.shared_key) {
            (false, _) => {
                request
                    .headers_mut()
                    .insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
            }
            (true, Some((account, key))) => {
                request
                    .headers_mut()
                    .insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
                let signature = sign(key, &string_to_sign(request, account));
                if let Ok(value) =
                    HeaderValue::from_str(&format!("SharedKey {account}:{signature}"))
                {
                    request.headers_mut().insert(AUTHORIZATION, value);
                }
            }
            // A key sluice does not know (object_store found it somewhere
            // else): the request stays as signed, unconditional.
            (true, None) => {}
        }
    }
}

fn sign(key: &[u8], text: &str) -> String {
    use base64::Engine;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The Shared Key string to sign (service version 2015-02-21 and later):
/// the verb, twelve standard headers in their fixed order (a zero
/// Content-Length as empty), the canonicalized `x-ms-*` headers, and the
/// canonicalized resource.
fn string_to_sign(request: &HttpRequest, account: &str) -> String {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let length = match header("content-length").as_str() {
        "0" => String::new(),
        other => other.to_string(),
    };
    let mut text = format!("{}\n", request.method());
    for value in [
        header("content-encoding"),
        header("content-language"),
        length,
        header("content-md5"),
        header("content-type"),
        header("date"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    ] {
        text.push_str(&value);
        text.push('\n');
    }
    let mut ms: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-ms-"))
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or("").trim();
            // Runs of whitespace in a value count as one space.
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            (name.as_str().to_string(), value)
        })
        .collect();
    ms.sort();
    for (name, value) in ms {
        text.push_str(&format!("{name}:{value}\n"));
    }
    text.push_str(&format!("/{account}{}", request.uri().path()));
    let mut params: Vec<(String, String)> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k).to_lowercase(), decode(v))
        })
        .collect();
    params.sort();
    let mut last: Option<String> = None;
    for (name, value) in params {
        if last.as_deref() == Some(name.as_str()) {
            text.push(',');
        } else {
            text.push_str(&format!("\n{name}:"));
            last = Some(name);
        }
        text.push_str(&value);
    }
    text
}

/// Percent-decoding of a query component.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: http::Method, uri: &str, headers: &[(&str, &str)]) -> HttpRequest {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder
            .body(object_store::client::HttpRequestBody::empty())
            .unwrap()
    }

    #[test]
    fn the_string_to_sign_follows_the_documented_layout() {
        let r = request(
            http::Method::PUT,
            "http://127.0.0.1:10000/acct/c/dir/blob?comp=blocklist&b=2&B=1",
            &[
                ("content-length", "120"),
                ("if-none-match", "*"),
                ("x-ms-version", "2021-08-06"),
                ("x-ms-date", "Thu,  03 Dec 2026 08:00:00 GMT"),
            ],
        );
        assert_eq!(
            string_to_sign(&r, "acct"),
            "PUT\n\n\n120\n\n\n\n\n\n*\n\n\n\
             x-ms-date:Thu, 03 Dec 2026 08:00:00 GMT\nx-ms-version:2021-08-06\n\
             /acct/acct/c/dir/blob\nb:1,2\ncomp:blocklist"
        );
    }

    #[test]
    fn only_block_lists_change_and_shared_key_is_signed_again() {
        let hook = CreateOnlyBlockList::new(Some("acct"), Some("a2V5"));
        let mut other = request(
            http::Method::PUT,
            "http://h/acct/c/b?comp=block&blockid=x",
            &[("authorization", "SharedKey acct:old")],
        );
        hook.prepare(&mut other);
        assert!(other.headers().get(IF_NONE_MATCH).is_none());
        assert_eq!(other.headers()[AUTHORIZATION], "SharedKey acct:old");
        let mut list = request(
            http::Method::PUT,
            "http://h/acct/c/b?comp=blocklist",
            &[("authorization", "SharedKey acct:old")],
        );
        hook.prepare(&mut list);
        assert_eq!(list.headers()[IF_NONE_MATCH], "*");
        let auth = list.headers()[AUTHORIZATION].to_str().unwrap().to_string();
        assert_eq!(
            auth,
            format!(
                "SharedKey acct:{}",
                sign(b"key", &string_to_sign(&list, "acct"))
            )
        );
        // A bearer token signs no header: only the condition is added.
        let mut bearer = request(
            http::Method::PUT,
            "http://h/acct/c/b?comp=blocklist",
            &[("authorization", "Bearer t")],
        );
        hook.prepare(&mut bearer);
        assert_eq!(bearer.headers()[IF_NONE_MATCH], "*");
        assert_eq!(bearer.headers()[AUTHORIZATION], "Bearer t");
        assert_eq!(decode("a%2Fb+c%zz%4"), "a/b+c%zz%4");
    }
}
