//! How `hdfs://` is configured and built.

use std::sync::Arc;

use super::HdfsBackend;
use crate::backend::{BackendKind, BuildContext, Configured, Served};
use crate::error::{StartError, StartResult as Result};
use crate::settings::{RawKeys, take_list};

pub static KIND: BackendKind = BackendKind {
    name: "hdfs",
    schemes: &["hdfs"],
    keys: &[
        (
            "fs.defaultFS",
            "the default file system, e.g. hdfs://namenode:8020 or hdfs://<name service>; hdfs:/// URIs (no authority) go to it (Hadoop's key)",
        ),
        (
            "fs.hdfs.hadoopconf",
            "a folder with core-site.xml and hdfs-site.xml (name services, HA NameNodes, fs.defaultFS) (Flink's key)",
        ),
        (
            "fs.hdfs.namenodes",
            "the NameNodes and name services hdfs:// URIs may name (list or comma-separated host:port or name service); default the authority of fs.defaultFS",
        ),
        (
            "hdfs.user",
            "the user sluice acts as on HDFS (simple authentication); default the gateway's OS user, or the Kerberos principal",
        ),
    ],
    always: false,
    configure,
};

/// `hdfs://`'s settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HdfsConfig {
    /// `fs.hdfs.hadoopconf`.
    pub hadoop_conf_dir: Option<String>,
    /// `fs.defaultFS`.
    pub default_fs: Option<String>,
    /// The authorities hdfs:// URIs may name: `fs.hdfs.namenodes`, else
    /// the authority of `fs.defaultFS`.
    pub namenodes: Vec<String>,
    /// `hdfs.user`.
    pub user: Option<String>,
}

fn configure(raw: &mut RawKeys) -> Result<Arc<dyn Configured>> {
    let default_fs = raw.remove("fs.defaultFS");
    let default_authority = match &default_fs {
        None => None,
        Some(uri) => {
            let Some(rest) = uri.strip_prefix("hdfs://") else {
                return Err(StartError::Config(format!(
                    "fs.defaultFS is {uri:?}; give an hdfs:// URI such as hdfs://namenode:8020"
                )));
            };
            let authority = rest.split('/').next().unwrap_or_default();
            if authority.is_empty() {
                return Err(StartError::Config(format!(
                    "fs.defaultFS is {uri:?}, which names no NameNode; give hdfs://namenode:8020 or hdfs://<name service>"
                )));
            }
            Some(authority.to_string())
        }
    };
    let namenodes = take_list(raw, "fs.hdfs.namenodes")
        .unwrap_or_else(|| default_authority.into_iter().collect());
    let hadoop_conf_dir = raw.remove("fs.hdfs.hadoopconf");
    if let Some(dir) = &hadoop_conf_dir
        && !std::path::Path::new(dir).is_dir()
    {
        return Err(StartError::Config(format!(
            "fs.hdfs.hadoopconf is {dir:?}, which is not a folder; give the folder holding core-site.xml and hdfs-site.xml"
        )));
    }
    Ok(Arc::new(HdfsConfig {
        hadoop_conf_dir,
        default_fs,
        namenodes,
        user: raw.remove("hdfs.user"),
    }))
}

impl Configured for HdfsConfig {
    fn build(&self, _scheme: &'static str, _context: &BuildContext) -> Result<Served> {
        Ok(Served::new(HdfsBackend::new(self.clone())))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
