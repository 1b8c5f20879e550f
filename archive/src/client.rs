//! The archive as an object store: opening it from a URL with the standard credentials,
//! checking it, and uploads that never overwrite.
//!
//! Rules:
//! - One code path for `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`, `az://CONTAINER/PREFIX`
//!   and `file:///PATH` (the `object_store` crate). Credentials come the standard way: for
//!   S3 every `AWS_*` variable the AWS tools read (keys, session token, region, web identity
//!   for IRSA), with `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`) for S3-compatible servers and
//!   plain HTTP allowed only when that endpoint says `http://`.
//! - An object is written once. Before a put the key is looked up; the put itself is a
//!   conditional create (`If-None-Match: *`), so a server that enforces it refuses a race
//!   too. An object already there with the same size (a data object an interrupted upload
//!   left) is taken as written; one of another size is a conflict, reported and left alone.
//! - The manifest goes last: a manifest present means its data is complete. A manifest
//!   already there with the same SHA-256 means the upload was done before (a crash between
//!   the upload and the sensor's bookkeeping), and nothing is written.
//! - Failures say what is wrong: no such bucket, access denied, endpoint unreachable, no
//!   answer; any other names the key.
//! - Every request to the store ends within the archive's request timeout, whatever the
//!   server does: one that gets no answer by then is [`ArchiveError::NoAnswer`] (the HTTP
//!   client's own retries count against the same time, so a silent server is a failure
//!   after the timeout, never after a multiple of it). A listing is a request per page.
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{
    aws::AmazonS3Builder, azure::MicrosoftAzureBuilder, gcp::GoogleCloudStorageBuilder,
    local::LocalFileSystem, path::Path, prefix::PrefixStore, BackoffConfig, ClientOptions, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use crate::{
    layout::{BadName, Layout, ObjectKeys},
    manifest::{Manifest, ManifestError},
    Received,
};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error(transparent)]
    Name(#[from] BadName),
    #[error("archive {url}: no such bucket (or container, or folder)")]
    NoBucket { url: String },
    #[error("archive {url}: access denied: {detail}")]
    Denied { url: String, detail: String },
    #[error("archive {url}: the endpoint cannot be reached: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("archive: {key} already holds a different object ({found} bytes where {expected} were to go); it is left as it is")]
    Conflict { key: String, found: u64, expected: u64 },
    #[error("archive: manifest {key}: {source}")]
    Manifest {
        key: String,
        #[source]
        source: ManifestError,
    },
    #[error("archive {url}: no answer within {after:?} to the request for {key}; given up")]
    NoAnswer {
        url: String,
        key: String,
        after: Duration,
    },
    #[error("archive: {0}")]
    Local(String),
    #[error("archive: {key} is longer than the {limit} bytes its manifest says; not read further")]
    TooLong { key: String, limit: u64 },
    #[error("archive: {key} is not there")]
    Missing { key: String },
    #[error("archive {url}: {key}: the connection was cut before the whole object arrived, on every retry: {detail}")]
    Cut {
        url: String,
        key: String,
        detail: String,
    },
    #[error("archive: {key}: {source}")]
    Store {
        key: String,
        #[source]
        source: object_store::Error,
    },
}

/// What a put found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Written now.
    Created,
    /// Already there, from an earlier upload (nothing written).
    AlreadyThere,
}

/// Keys a listing request returns at most (S3, GCS and Azure alike).
const LIST_PAGE: usize = 1000;

/// An archive: an object store and the layout of one cluster's keys in it.
#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    url: String,
    /// How long one request may take (none: as long as the store takes).
    request_timeout: Option<Duration>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// How long one request may take by default; the uploader retries with its own backoff.
pub const REQUEST_TIMEOUT: Duration = Duration::from_mins(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Who opens the archive: the HTTP client's limits and retries follow.
#[derive(Clone, Copy)]
enum Role {
    /// The sensor's uploader: a request (body included) gives up after the request
    /// timeout, and the uploader retries it later.
    Uploader,
    /// A reader (`podcap dump --archive`): no limit on a whole request, since an object
    /// may take minutes on a slow link; the request timeout bounds each wait instead (for
    /// an answer, then for each chunk of a body), around [`reader_retries`].
    Reader,
}

fn client_options(request_timeout: Duration, role: Role) -> ClientOptions {
    let options = ClientOptions::new().with_connect_timeout(CONNECT_TIMEOUT.min(request_timeout));
    match role {
        Role::Uploader => options.with_timeout(request_timeout),
        Role::Reader => options.with_timeout_disabled(),
    }
}

/// The uploader's retries: few, since it retries a failed upload itself, later, with its
/// own back-off, and must see a failing server soon.
fn uploader_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(20),
        ..RetryConfig::default()
    }
}

/// A reader's retries: 5 (within 5 minutes of the request's start, so a long body cut
/// late is still resumed), a random back-off from 100 ms growing to at most 5 s (as AWS's
/// SDKs do, a few seconds in all), on 5xx answers such as S3's 503
/// `SlowDown`, timeouts and connections cut; a body cut mid-object is resumed from where it
/// stopped. Nothing else retries what a person is waiting for, and an object that still
/// fails after them is a loss named in the file, not minutes of waiting.
fn reader_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 5,
        retry_timeout: Duration::from_mins(5),
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
    }
}

impl Archive {
    /// Opens the archive at `url` for `cluster` to read it, credentials from the
    /// environment; each request is retried as [`reader_retries`] says.
    pub fn open(url: &str, cluster: &str) -> Result<Self, ArchiveError> {
        Self::open_with(url, cluster, REQUEST_TIMEOUT, Role::Reader)
    }

    /// Opens the archive for the uploader: requests that give up after `request_timeout`
    /// and are retried by the caller ([`uploader_retries`]).
    pub fn open_with_timeout(
        url: &str,
        cluster: &str,
        request_timeout: Duration,
    ) -> Result<Self, ArchiveError> {
        Self::open_with(url, cluster, request_timeout, Role::Uploader)
    }

    fn open_with(
        url: &str,
        cluster: &str,
        request_timeout: Duration,
        role: Role,
    ) -> Result<Self, ArchiveError> {
        let retries = match role {
            Role::Uploader => uploader_retries(),
            Role::Reader => reader_retries(),
        };
        let layout = Layout::new(cluster)?;
        crate::install_tls_provider();
        let bad = |reason: &str| ArchiveError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let prefix = parsed.path().trim_matches('/').to_owned();
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let path = std::path::Path::new(parsed.path());
                if !path.is_dir() {
                    return Err(ArchiveError::NoBucket { url: url.to_owned() });
                }
                let local = LocalFileSystem::new_with_prefix(path).map_err(|e| bad(&e.to_string()))?;
                return Ok(
                    Self::with_store(Arc::new(local), layout, url).with_request_timeout(request_timeout)
                );
            }
            "s3" | "s3a" => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_client_options(client_options(request_timeout, role))
                    .with_retry(retries);
                let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
                    .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                    .or_else(|_| std::env::var("AWS_ENDPOINT"))
                    .ok();
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_endpoint(endpoint);
                }
                if let Ok(region) = std::env::var("AWS_REGION") {
                    builder = builder.with_region(region);
                }
                Arc::new(builder.build().map_err(|e| bad(&e.to_string()))?)
            }
            "gs" => Arc::new(
                GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_client_options(client_options(request_timeout, role))
                    .with_retry(retries)
                    .build()
                    .map_err(|e| bad(&e.to_string()))?,
            ),
            "az" | "azure" | "abfs" | "abfss" => Arc::new(
                MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_client_options(client_options(request_timeout, role))
                    .with_retry(retries)
                    .build()
                    .map_err(|e| bad(&e.to_string()))?,
            ),
            other => {
                return Err(bad(&format!(
                    "unknown scheme {other:?}: use s3://, gs://, az:// or file://"
                )))
            }
        };
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            store
        } else {
            Arc::new(PrefixStore::new(store, prefix.as_str()))
        };
        Ok(Self::with_store(store, layout, url).with_request_timeout(request_timeout))
    }

    /// An archive in `store` (an in-memory one in tests), its requests not timed.
    #[must_use]
    pub fn with_store(store: Arc<dyn ObjectStore>, layout: Layout, url: &str) -> Self {
        Self {
            store,
            layout,
            url: url.to_owned(),
            request_timeout: None,
        }
    }

    /// Every request given up after `timeout` ([`ArchiveError::NoAnswer`]).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Runs one request for `key`, within the request timeout.
    async fn timed<T>(
        &self,
        key: &Path,
        request: impl std::future::Future<Output = Result<T, object_store::Error>>,
    ) -> Result<Result<T, object_store::Error>, ArchiveError> {
        let Some(after) = self.request_timeout else {
            return Ok(request.await);
        };
        tokio::time::timeout(after, request)
            .await
            .map_err(|_| ArchiveError::NoAnswer {
                url: self.url.clone(),
                key: key.to_string(),
                after,
            })
    }

    #[must_use]
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Says what is wrong with `error` at `key` in words a user acts on.
    fn explain(&self, key: &Path, error: object_store::Error) -> ArchiveError {
        let url = self.url.clone();
        let detail = error.to_string();
        match error {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                ArchiveError::Denied { url, detail }
            }
            _ if detail.contains("NoSuchBucket") || detail.contains("ContainerNotFound") => {
                ArchiveError::NoBucket { url }
            }
            _ if detail.contains("InvalidAccessKeyId")
                || detail.contains("SignatureDoesNotMatch")
                || detail.contains("AccessDenied")
                || detail.contains("403 Forbidden") =>
            {
                ArchiveError::Denied { url, detail }
            }
            _ if detail.contains("error sending request")
                || detail.contains("onnection refused")
                || detail.contains("dns error")
                || detail.contains("timed out") =>
            {
                ArchiveError::Unreachable { url, detail }
            }
            _ if detail.contains("body error") => ArchiveError::Cut {
                url,
                key: key.to_string(),
                detail,
            },
            source => ArchiveError::Store {
                key: key.to_string(),
                source,
            },
        }
    }

    /// Checks that the archive answers and may be listed: the first request a sensor and
    /// the CLI make, so that a wrong bucket, key or endpoint is said at once.
    pub async fn check(&self) -> Result<(), ArchiveError> {
        let root = Path::from(crate::layout::LAYOUT);
        match self
            .timed(&root, self.store.list_with_delimiter(Some(&root)))
            .await?
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotFound { .. }) if self.url.starts_with("file:") => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Err(ArchiveError::NoBucket {
                url: self.url.clone(),
            }),
            Err(e) => Err(self.explain(&root, e)),
        }
    }

    /// The object at `key`, if there is one.
    pub async fn head(&self, key: &Path) -> Result<Option<ObjectMeta>, ArchiveError> {
        match self.timed(key, self.store.head(key)).await? {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.explain(key, e)),
        }
    }

    /// The bytes at `key` ([`ArchiveError::Missing`] when there are none).
    pub async fn fetch(&self, key: &Path) -> Result<Bytes, ArchiveError> {
        self.timed(key, async { self.store.get(key).await?.bytes().await })
            .await?
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => ArchiveError::Missing { key: key.to_string() },
                e => self.explain(key, e),
            })
    }

    /// Streams the object at `key` into `out` (from its start), its size and SHA-256 taken
    /// as it arrives: memory holds a chunk, never the object ([`ArchiveError::Missing`]
    /// when there is none). A body cut mid-way is resumed where it stopped (the retries).
    /// More than `limit` bytes is refused as it arrives ([`ArchiveError::TooLong`]).
    pub async fn fetch_into(
        &self,
        key: &Path,
        limit: u64,
        out: &mut impl std::io::Write,
    ) -> Result<Received, ArchiveError> {
        let explain = |e| match e {
            object_store::Error::NotFound { .. } => ArchiveError::Missing { key: key.to_string() },
            e => self.explain(key, e),
        };
        let mut body = self
            .timed(key, self.store.get(key))
            .await?
            .map_err(explain)?
            .into_stream();
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut bytes = 0u64;
        while let Some(chunk) = self.timed(key, body.try_next()).await?.map_err(explain)? {
            digest.update(&chunk);
            bytes = bytes.saturating_add(chunk.len() as u64);
            if bytes > limit {
                return Err(ArchiveError::TooLong {
                    key: key.to_string(),
                    limit,
                });
            }
            out.write_all(&chunk)
                .map_err(|e| ArchiveError::Local(format!("keeping {key} while it arrives: {e}")))?;
        }
        Ok(Received {
            bytes,
            sha256: crate::manifest::digest_hex(&digest.finish()),
        })
    }

    /// The manifest at `key`, if there is one.
    pub async fn manifest(&self, key: &Path) -> Result<Option<Manifest>, ArchiveError> {
        let bytes = match self
            .timed(key, async { self.store.get(key).await?.bytes().await })
            .await?
        {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.explain(key, e)),
        };
        Manifest::parse(&bytes)
            .map(Some)
            .map_err(|source| ArchiveError::Manifest {
                key: key.to_string(),
                source,
            })
    }

    /// Writes `bytes` at `key` unless something is there (see the rules).
    pub async fn put_new(&self, key: &Path, bytes: Bytes) -> Result<Stored, ArchiveError> {
        if let Some(meta) = self.head(key).await? {
            return Self::same_size(key, &meta, bytes.len());
        }
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let expected = bytes.len();
        match self
            .timed(key, self.store.put_opts(key, PutPayload::from(bytes), options))
            .await?
        {
            Ok(_) => Ok(Stored::Created),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                match self.head(key).await? {
                    Some(meta) => Self::same_size(key, &meta, expected),
                    None => Ok(Stored::AlreadyThere),
                }
            }
            Err(e) => Err(self.explain(key, e)),
        }
    }

    fn same_size(key: &Path, meta: &ObjectMeta, expected: usize) -> Result<Stored, ArchiveError> {
        if meta.size == expected as u64 {
            Ok(Stored::AlreadyThere)
        } else {
            Err(ArchiveError::Conflict {
                key: key.to_string(),
                found: meta.size,
                expected: expected as u64,
            })
        }
    }

    /// Uploads an object and then its manifest, exactly once (see the rules).
    pub async fn upload(
        &self,
        keys: &ObjectKeys,
        stored: Bytes,
        manifest: &Manifest,
    ) -> Result<Stored, ArchiveError> {
        if let Some(existing) = self.manifest(&keys.manifest).await? {
            if existing.stored_sha256 == manifest.stored_sha256 {
                return Ok(Stored::AlreadyThere);
            }
            return Err(ArchiveError::Conflict {
                key: keys.manifest.to_string(),
                found: existing.stored_bytes,
                expected: manifest.stored_bytes,
            });
        }
        self.put_new(&keys.data, stored).await?;
        self.put_new(&keys.manifest, Bytes::from(manifest.to_bytes()))
            .await?;
        Ok(Stored::Created)
    }

    /// The objects under `prefix` whose keys sort after `after` and before `before`, and the
    /// listing requests that took: one listing from `after` (S3's `start-after`), a page of
    /// up to 1,000 keys a request, that stops at the first key at or past `before` where the
    /// store lists in key order (S3, GCS, Azure; a local folder is walked whole and
    /// filtered). So its cost follows what is stored in the range, not the range's length.
    pub async fn list_range(
        &self,
        prefix: &Path,
        after: &Path,
        before: &Path,
    ) -> Result<(Vec<ObjectMeta>, usize), ArchiveError> {
        let mut objects = Vec::new();
        let lists = self
            .visit_range(prefix, after, before, |meta| objects.push(meta))
            .await?;
        Ok((objects, lists))
    }

    /// [`Archive::list_range`] handing each object to `visit` as its page arrives, so a
    /// caller keeps what it needs of a long range, not the listing; the listing requests.
    pub async fn visit_range(
        &self,
        prefix: &Path,
        after: &Path,
        before: &Path,
        mut visit: impl FnMut(ObjectMeta),
    ) -> Result<usize, ArchiveError> {
        let mut listing = self.store.list_with_offset(Some(prefix), after);
        let in_key_order = !self.url.starts_with("file:");
        let mut seen = 0usize;
        while let Some(meta) = self
            .timed(prefix, listing.try_next())
            .await?
            .map_err(|e| self.explain(prefix, e))?
        {
            seen += 1;
            if meta.location.as_ref() < before.as_ref() {
                visit(meta);
            } else if in_key_order {
                break;
            }
        }
        Ok(seen / LIST_PAGE + 1)
    }

    /// Every object under `prefix`.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>, ArchiveError> {
        let mut listing = self.store.list(Some(prefix));
        let mut objects = Vec::new();
        // Each step may fetch the next page: each is a request of its own.
        while let Some(meta) = self
            .timed(prefix, listing.try_next())
            .await?
            .map_err(|e| self.explain(prefix, e))?
        {
            objects.push(meta);
        }
        Ok(objects)
    }

    /// The folders right under `prefix`.
    pub async fn folders(&self, prefix: &Path) -> Result<Vec<Path>, ArchiveError> {
        let listed = self
            .timed(prefix, self.store.list_with_delimiter(Some(prefix)))
            .await?
            .map_err(|e| self.explain(prefix, e))?;
        Ok(listed.common_prefixes)
    }
}

#[cfg(test)]
mod tests;
