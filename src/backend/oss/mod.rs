//! `oss://`: Aliyun OSS through its S3 API, every bucket reached at its
//! own host name (OSS refuses path-style requests), Flink's `fs.oss.*` keys.

use std::sync::Arc;

use super::object::{ObjectBackend, upload_config};
use super::s3::{S3Config, S3Stores};
use super::{BackendKind, BuildContext, Configured, Served};
use crate::error::{StartError, StartResult};
use crate::settings::RawKeys;

/// OSS refuses non-final parts under 100 KB.
pub const OSS_MIN_PART_SIZE: u64 = 100 * 1024;

pub static KIND: BackendKind = BackendKind {
    name: "oss",
    schemes: &["oss"],
    keys: KEYS,
    always: false,
    configure,
};

const KEYS: &[(&str, &str)] = &[
    (
        "fs.oss.endpoint",
        "OSS endpoint, e.g. https://oss-cn-hangzhou.aliyuncs.com; buckets are reached virtual-hosted",
    ),
    ("fs.oss.accessKeyId", "OSS access key id"),
    ("fs.oss.accessKeySecret", "OSS access key secret"),
    (
        "fs.oss.region",
        "OSS region for request signing; default: the endpoint's first label (oss-cn-hangzhou)",
    ),
    (
        "fs.oss.proxy.host",
        "HTTP proxy host for OSS requests (with fs.oss.proxy.port)",
    ),
    ("fs.oss.proxy.port", "HTTP proxy port for OSS requests"),
    (
        "oss.upload.min.part.size",
        "part size of oss:// uploads, at least 100kb; default 5mb",
    ),
    (
        "oss.upload.max.concurrent.uploads",
        "parts of one oss:// session uploaded at once; default 4",
    ),
];

/// `oss://`'s settings: an S3 configuration, virtual-hosted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OssConfig(pub S3Config);

fn configure(raw: &mut RawKeys) -> StartResult<Arc<dyn Configured>> {
    let endpoint = raw.remove("fs.oss.endpoint").ok_or_else(|| {
        StartError::Config(
            "oss:// needs fs.oss.endpoint, e.g. https://oss-cn-hangzhou.aliyuncs.com".into(),
        )
    })?;
    let proxy_url = match (
        raw.remove("fs.oss.proxy.host"),
        raw.remove("fs.oss.proxy.port"),
    ) {
        (Some(host), Some(port)) => Some(format!("http://{host}:{port}")),
        (None, None) => None,
        _ => {
            return Err(StartError::Config(
                "set both fs.oss.proxy.host and fs.oss.proxy.port, or neither".into(),
            ));
        }
    };
    Ok(Arc::new(OssConfig(S3Config {
        region: raw.remove("fs.oss.region"),
        endpoint: Some(endpoint),
        access_key: raw.remove("fs.oss.accessKeyId"),
        secret_key: raw.remove("fs.oss.accessKeySecret"),
        path_style: false,
        virtual_hosted: true,
        proxy_url,
        upload: upload_config(raw, "oss", OSS_MIN_PART_SIZE)?,
        request_timeout: None,
        max_retries: None,
    })))
}

impl Configured for OssConfig {
    fn build(&self, scheme: &'static str, _context: &BuildContext) -> StartResult<Served> {
        let stores = Arc::new(S3Stores::new(scheme, self.0.clone()));
        Ok(Served::new(ObjectBackend::new(stores, self.0.upload, true)))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
