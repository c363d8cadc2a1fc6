//! Commits that never replace a file, even under races: every
//! `CompleteMultipartUpload` sluice sends carries `If-None-Match: *`, so S3
//! completes the upload only while no object has the key, and answers 412
//! otherwise.
//!
//! object_store 0.14 sends that header only on its own copy-if-not-exists
//! path; `MultipartStore::complete_multipart` has no mode
//! (apache/arrow-rs-object-store#289). The header goes on here, in the
//! HTTP client object_store calls, after SigV4 signed the request: SigV4
//! must sign every `x-amz-*` header, but other headers may go unsigned, and
//! object_store adds this one after signing too. It costs no request: the
//! commit's earlier `HEAD` stays only to settle a commit that happened
//! before, and no longer guards against a writer that comes between.

use async_trait::async_trait;
use http::header::{HeaderValue, IF_NONE_MATCH};
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};

/// The HTTP connector of every S3-compatible store sluice builds.
#[derive(Debug, Default)]
pub struct CreateOnlyCompletion;

impl HttpConnector for CreateOnlyCompletion {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(CreateOnlyService(inner)))
    }
}

#[derive(Debug)]
struct CreateOnlyService(HttpClient);

#[async_trait]
impl HttpService for CreateOnlyService {
    async fn call(&self, mut request: HttpRequest) -> Result<HttpResponse, HttpError> {
        if completes_an_upload(&request) {
            request
                .headers_mut()
                .insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
        }
        self.0.execute(request).await
    }
}

/// `POST <key>?uploadId=…` is CompleteMultipartUpload; `POST <key>?uploads`
/// (CreateMultipartUpload) and `POST <bucket>?delete` are not.
fn completes_an_upload(request: &HttpRequest) -> bool {
    request.method() == http::Method::POST
        && request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("uploadId=")))
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
