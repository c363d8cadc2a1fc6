//! How `file://` is configured and built.

use std::path::PathBuf;
use std::sync::Arc;

use super::FileBackend;
use crate::backend::{BackendKind, BuildContext, Configured, Served};
use crate::error::{StartError, StartResult as Result};
use crate::settings::{RawKeys, take_list};

pub static KIND: BackendKind = BackendKind {
    name: "file",
    schemes: &["file"],
    keys: &[(
        "fs.file.allowed-roots",
        "directories file:// targets must lie under (list or comma-separated); default <data-dir>/files",
    )],
    always: true,
    configure,
};

/// `file://`'s settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    /// Directories targets must lie under; empty: `<data-dir>/files`.
    pub roots: Vec<PathBuf>,
}

fn configure(raw: &mut RawKeys) -> Result<Arc<dyn Configured>> {
    let roots: Vec<PathBuf> = take_list(raw, "fs.file.allowed-roots")
        .unwrap_or_default()
        .into_iter()
        .map(PathBuf::from)
        .collect();
    if let Some(bad) = roots.iter().find(|p| !p.is_absolute()) {
        return Err(StartError::Config(format!(
            "fs.file.allowed-roots: {} is not an absolute path",
            bad.display()
        )));
    }
    Ok(Arc::new(FileConfig { roots }))
}

impl Configured for FileConfig {
    fn build(&self, _scheme: &'static str, context: &BuildContext) -> Result<Served> {
        let roots = if self.roots.is_empty() {
            vec![context.data_dir.join("files")]
        } else {
            self.roots.clone()
        };
        Ok(Served::new(FileBackend::new(&roots)?))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
