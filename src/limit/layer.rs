//! The stream limits as a `tower::Layer` over a scheme's backend: Open and
//! Recover hold an output slot for the session's life, Read an input slot
//! for the stream's.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Kind, ReclaimedTx, Slot, StreamLimiter, StreamLimits};
use crate::backend::{
    BackendCapabilities, ByteStream, Entry, Listing, Namespace, Page, Registry, Removed,
    ResumePoint, Rope, Served, StagedWriter, Stager, Staging,
};
use crate::error::Result;
use crate::location::Location;

/// A `tower::Layer` that puts a scheme's stream limits around its backend.
#[derive(Clone)]
pub struct StreamLimitLayer {
    limiter: Arc<StreamLimiter>,
}

impl StreamLimitLayer {
    pub fn new(
        scheme: &str,
        limits: StreamLimits,
        metrics: Arc<crate::metrics::Metrics>,
        reclaimed: Option<ReclaimedTx>,
    ) -> StreamLimitLayer {
        StreamLimitLayer {
            limiter: StreamLimiter::new(scheme, limits, metrics, reclaimed),
        }
    }

    pub fn limiter(&self) -> &Arc<StreamLimiter> {
        &self.limiter
    }
}

impl tower::Layer<Served> for StreamLimitLayer {
    type Service = Served;

    /// The staging side's Open and Recover, and the namespace side's Read,
    /// hold slots; every other call passes through.
    fn layer(&self, inner: Served) -> Served {
        Served {
            stager: Arc::new(LimitedStager {
                inner: inner.stager,
                limiter: self.limiter.clone(),
            }),
            namespace: Arc::new(LimitedNamespace {
                inner: inner.namespace,
                limiter: self.limiter.clone(),
            }),
        }
    }
}

/// The staging side of a limited scheme.
struct LimitedStager {
    inner: Arc<dyn Stager>,
    limiter: Arc<StreamLimiter>,
}

#[async_trait]
impl Stager for LimitedStager {
    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            limits: self.limiter.limits,
            ..self.inner.capabilities()
        }
    }

    fn check_target(&self, target: &Location) -> Result<()> {
        self.inner.check_target(target)
    }

    async fn open(&self, target: &Location) -> Result<Box<dyn StagedWriter>> {
        let slot = self
            .limiter
            .acquire(&target.authority, Kind::Output)
            .await?;
        let inner = self.inner.open(target).await?;
        Ok(LimitedWriter::boxed(inner, slot))
    }

    async fn recover(
        &self,
        target: &Location,
        point: &ResumePoint,
    ) -> Result<Box<dyn StagedWriter>> {
        let slot = self
            .limiter
            .acquire(&target.authority, Kind::Output)
            .await?;
        let inner = self.inner.recover(target, point).await?;
        Ok(LimitedWriter::boxed(inner, slot))
    }

    async fn commit(
        &self,
        target: &Location,
        point: &ResumePoint,
        after_recovery: bool,
    ) -> Result<u64> {
        self.inner.commit(target, point, after_recovery).await
    }

    async fn target_size(&self, target: &Location) -> Result<Option<u64>> {
        self.inner.target_size(target).await
    }

    async fn cleanup(&self, target: &Location, point: &ResumePoint) -> Result<bool> {
        self.inner.cleanup(target, point).await
    }

    async fn remove_staging(
        &self,
        target: &Location,
        staging_id: &str,
        location: &str,
        artefacts: &[String],
    ) -> Result<Removed> {
        self.inner
            .remove_staging(target, staging_id, location, artefacts)
            .await
    }

    async fn remove_artefacts(
        &self,
        target: &Location,
        staging_id: &str,
        artefacts: &[String],
    ) -> Result<usize> {
        self.inner
            .remove_artefacts(target, staging_id, artefacts)
            .await
    }
}

/// The namespace side of a limited scheme: reads hold input slots.
struct LimitedNamespace {
    inner: Arc<dyn Namespace>,
    limiter: Arc<StreamLimiter>,
}

#[async_trait]
impl Namespace for LimitedNamespace {
    async fn read(
        &self,
        target: &Location,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream> {
        use futures::StreamExt;
        let slot = self.limiter.acquire(&target.authority, Kind::Input).await?;
        let stream = self.inner.read(target, offset, length).await?;
        // The slot lives as long as the stream; every chunk is progress.
        Ok(stream
            .map(move |chunk| {
                slot.touch()?;
                chunk
            })
            .boxed())
    }

    async fn stat(&self, path: &Location) -> Result<Option<Entry>> {
        self.inner.stat(path).await
    }

    async fn list(&self, dir: &Location, page: &Page) -> Result<Listing> {
        self.inner.list(dir, page).await
    }

    async fn delete(&self, path: &Location, recursive: bool) -> Result<bool> {
        self.inner.delete(path, recursive).await
    }

    async fn mkdirs(&self, dir: &Location) -> Result<()> {
        self.inner.mkdirs(dir).await
    }

    async fn rename(&self, from: &Location, to: &Location) -> Result<()> {
        self.inner.rename(from, to).await
    }
}

/// A staged file holding an output slot.
struct LimitedWriter {
    inner: Box<dyn StagedWriter>,
    slot: Slot,
}

impl LimitedWriter {
    fn boxed(inner: Box<dyn StagedWriter>, slot: Slot) -> Box<dyn StagedWriter> {
        let _ = slot.activity.staging.set(inner.staging_id().to_string());
        Box::new(LimitedWriter { inner, slot })
    }
}

#[async_trait]
impl StagedWriter for LimitedWriter {
    fn staging_id(&self) -> &str {
        self.inner.staging_id()
    }

    fn location(&self) -> &str {
        self.inner.location()
    }

    fn reclaimed(&self) -> bool {
        self.slot.reclaimed()
    }

    async fn create(&mut self) -> Result<()> {
        self.inner.create().await
    }

    async fn write(&mut self, data: Rope) -> Result<()> {
        self.slot.touch()?;
        self.inner.write(data).await
    }

    async fn persist(&mut self) -> Result<Staging> {
        self.slot.touch()?;
        self.inner.persist().await
    }

    async fn close_for_commit(&mut self) -> Result<Staging> {
        self.slot.touch()?;
        self.inner.close_for_commit().await
    }

    async fn discard(self: Box<Self>) -> Result<()> {
        self.inner.discard().await
    }
}

/// Wraps the backend of every scheme that has `fs.<scheme>.limit.*` keys in
/// a [`StreamLimitLayer`] that tells `reclaimed` which stagings' streams
/// it reclaims; returns the limiters.
pub fn apply(
    registry: &mut Registry,
    limits: &std::collections::BTreeMap<String, StreamLimits>,
    metrics: &Arc<crate::metrics::Metrics>,
    reclaimed: &ReclaimedTx,
) -> Vec<Arc<StreamLimiter>> {
    use tower::Layer;
    let mut limiters = Vec::new();
    for (scheme, limits) in limits {
        if let Some(served) = registry.backend(scheme).cloned() {
            let layer =
                StreamLimitLayer::new(scheme, *limits, metrics.clone(), Some(reclaimed.clone()));
            limiters.push(layer.limiter().clone());
            registry.register(scheme, layer.layer(served));
        } else {
            tracing::warn!(scheme = %scheme, "fs.{scheme}.limit.* is set but the scheme is not served");
        }
    }
    limiters
}
