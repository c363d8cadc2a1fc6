//! Commits that never replace a file, even under races: every
//! `CompleteMultipartUpload` sluice sends carries `If-None-Match: *`, so S3
//! completes the upload only while no object has the key, and answers 412
//! otherwise.
//!
//! On Aliyun OSS, whose own header for the same is
//! `x-oss-forbid-overwrite: true` (documented for CompleteMultipartUpload,
//! answered 409 FileAlreadyExists), both headers go on.
//!
//! The header goes on in the HTTP client object_store calls, after SigV4
//! signed the request: SigV4 must sign every `x-amz-*` header, but other
//! headers may go unsigned (the request lists the ones it signed). It
//! costs no request: the commit's earlier `HEAD` stays only to settle a
//! commit that happened before, and no longer guards against a writer that
//! comes between.

use http::header::{HeaderValue, IF_NONE_MATCH};
use object_store::client::HttpRequest;

use crate::backend::object::hook::{RequestHook, has_query};

/// Makes every multipart completion create-only.
#[derive(Debug, Default)]
pub struct CreateOnlyCompletion {
    /// The store is Aliyun OSS: its own header goes on too.
    pub oss: bool,
}

impl RequestHook for CreateOnlyCompletion {
    fn prepare(&self, request: &mut HttpRequest) {
        if completes_an_upload(request) {
            let headers = request.headers_mut();
            headers.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
            if self.oss {
                headers.insert("x-oss-forbid-overwrite", HeaderValue::from_static("true"));
            }
        }
    }
}

/// `POST <key>?uploadId=…` is CompleteMultipartUpload; `POST <key>?uploads`
/// (CreateMultipartUpload) and `POST <bucket>?delete` are not.
fn completes_an_upload(request: &HttpRequest) -> bool {
    request.method() == http::Method::POST && has_query(request, "uploadId")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: http::Method, uri: &str) -> HttpRequest {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(object_store::client::HttpRequestBody::empty())
            .unwrap()
    }

    #[test]
    fn oss_gets_its_own_header_too() {
        let mut r = request(http::Method::POST, "http://h/b/k?uploadId=abc");
        CreateOnlyCompletion { oss: true }.prepare(&mut r);
        assert_eq!(r.headers()[IF_NONE_MATCH], "*");
        assert_eq!(r.headers()["x-oss-forbid-overwrite"], "true");
        let mut r = request(http::Method::POST, "http://h/b/k?uploadId=abc");
        CreateOnlyCompletion::default().prepare(&mut r);
        assert!(r.headers().get("x-oss-forbid-overwrite").is_none());
    }

    #[test]
    fn only_completions_are_made_conditional() {
        let yes = request(http::Method::POST, "http://h/b/k?uploadId=abc");
        assert!(completes_an_upload(&yes));
        for (method, uri) in [
            (http::Method::POST, "http://h/b/k?uploads"),
            (http::Method::POST, "http://h/b?delete"),
            (http::Method::PUT, "http://h/b/k?partNumber=1&uploadId=abc"),
            (http::Method::DELETE, "http://h/b/k?uploadId=abc"),
            (http::Method::GET, "http://h/b/k"),
        ] {
            assert!(
                !completes_an_upload(&request(method.clone(), uri)),
                "{method} {uri}"
            );
        }
    }
}
