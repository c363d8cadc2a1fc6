//! A change to one kind of request, made in the HTTP client that sluice
//! hands object_store, after object_store has built and signed it: how the
//! commits of S3 and Azure become create-only (`If-None-Match: *`), which
//! object_store 0.14 cannot ask for on a multipart completion
//! (apache/arrow-rs-object-store#289).

use std::sync::Arc;

use async_trait::async_trait;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};

/// What to change in a request before it is sent.
pub trait RequestHook: std::fmt::Debug + Send + Sync + 'static {
    fn prepare(&self, request: &mut HttpRequest);
}

/// An HTTP connector: object_store's own reqwest client, with `hook` run
/// on every request.
#[derive(Debug)]
pub struct HookedConnector<H>(pub Arc<H>);

impl<H: RequestHook> HttpConnector for HookedConnector<H> {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Hooked {
            inner,
            hook: self.0.clone(),
        }))
    }
}

#[derive(Debug)]
struct Hooked<H> {
    inner: HttpClient,
    hook: Arc<H>,
}

#[async_trait]
impl<H: RequestHook> HttpService for Hooked<H> {
    async fn call(&self, mut request: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.hook.prepare(&mut request);
        self.inner.execute(request).await
    }
}

/// Whether a query string has the parameter `name` (with or without a
/// value).
pub fn has_query(request: &HttpRequest, name: &str) -> bool {
    request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == name || p.split_once('=').is_some_and(|(k, _)| k == name))
    })
}
