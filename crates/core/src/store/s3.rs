//! `s3://` store on aws-sdk-s3: AWS S3 and S3-compatible servers (Garage, MinIO, Ceph).
//!
//! Single PUTs and completed multipart uploads are atomic on S3, so readers see a complete object
//! or none. `CreateNew` checks for the key before uploading and again before completing, and sends
//! `If-None-Match: *` for servers that honour it; servers that ignore it (Garage 2.5) leave a window
//! between the last check and completion in which a concurrent writer could be replaced. backstop
//! has one writer per key (the archiver owns WAL names), and the repository compares checksums on
//! every "already exists", so the window only matters for two clusters misconfigured onto one prefix.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use super::{validate_key, ObjectInfo, ObjectReader, ObjectStore, Upload, WriteMode, WriteOutcome};
use crate::error::{Error, Result};

/// Connection settings for an S3 store. Credentials are optional: without them the standard AWS
/// chain of the OS user is used (environment, `~/.aws`, web identity, instance metadata).
#[derive(Clone)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub force_path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Attempts per request, including the first; transient failures back off exponentially.
    pub max_attempts: u32,
    /// First multipart part size; S3 needs at least 5 MiB for every part but the last.
    pub part_size: usize,
    /// Parts of one upload in flight at once.
    pub upload_concurrency: usize,
    /// PEM file of certificate authorities to trust besides the system's, for a store whose
    /// certificate a private CA signed (MinIO, Ceph, Garage behind a TLS proxy).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            region: None,
            force_path_style: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            max_attempts: 5,
            part_size: 16 << 20,
            upload_concurrency: 4,
            ca_file: None,
        }
    }
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<hidden>"))
            .field("session_token", &self.session_token.as_ref().map(|_| "<hidden>"))
            .field("max_attempts", &self.max_attempts)
            .field("part_size", &self.part_size)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

pub const MIN_PART_SIZE: usize = 5 << 20;

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: usize,
    upload_concurrency: usize,
}

impl S3Store {
    pub async fn connect(bucket: &str, prefix: &str, options: &S3Options) -> Result<Self> {
        let region = Region::new(options.region.clone().unwrap_or_else(|| "us-east-1".to_string()));
        // HTTPS through rustls with ring and the system's trust store (plus the CA file, if any);
        // the same client serves the credentials chain (web identity, container and instance
        // metadata endpoints).
        let mut trust = tls::TrustStore::default();
        if let Some(path) = options.ca_file.as_deref() {
            trust = trust.with_pem_certificate(read_ca_file(path)?);
        }
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .tls_context(tls::TlsContext::builder().with_trust_store(trust).build().map_err(|e| {
                Error::InvalidSetting { setting: "s3_ca_file", reason: format!("the TLS settings were refused: {e}") }
            })?)
            .build_https();
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http_client.clone())
            .region(region.clone())
            .force_path_style(options.force_path_style)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(options.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(10)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(300))
                    .build(),
            )
            // Integrity is ours to check (SHA-256 of every object); the SDK's optional CRC headers
            // are not understood by every S3-compatible server.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = options.endpoint.as_deref().filter(|e| !e.is_empty()) {
            config = config.endpoint_url(endpoint);
        }
        match (&options.access_key_id, &options.secret_access_key) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                config = config.credentials_provider(Credentials::new(
                    id.clone(),
                    secret.clone(),
                    options.session_token.clone().filter(|t| !t.is_empty()),
                    None,
                    "backstop-settings",
                ));
            }
            _ => {
                let chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                    .configure(
                        aws_config::provider_config::ProviderConfig::without_region().with_http_client(http_client),
                    )
                    .region(region)
                    .build()
                    .await;
                config = config.credentials_provider(chain);
            }
        }
        Ok(S3Store {
            client: Client::from_conf(config.build()),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            part_size: options.part_size.max(MIN_PART_SIZE),
            upload_concurrency: options.upload_concurrency.max(1),
        })
    }

    fn full_key(&self, key: &str) -> Result<String> {
        validate_key(key)?;
        Ok(if self.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.prefix) })
    }

    fn relative_key<'a>(&self, full: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.prefix).map(|k| k.trim_start_matches('/')).unwrap_or(full)
        }
    }

    fn error<E, R>(&self, operation: &'static str, key: &str, err: SdkError<E, R>) -> Error
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        backend_error(&self.describe(), operation, key, err)
    }
}

/// Reads a PEM file of CA certificates and checks every one is a usable trust anchor: the HTTP
/// client would panic on a bad one, and a DBA deserves the file's name and what is wrong with it.
fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    let invalid = |reason: String| Error::InvalidSetting { setting: "s3_ca_file", reason };
    let pem = std::fs::read(path).map_err(|e| Error::io("read the S3 CA file", path, e))?;
    let certificates = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{} is not a PEM file of certificates: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err(invalid(format!("{} holds no certificate (expected -----BEGIN CERTIFICATE-----)", path.display())));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (index, certificate) in certificates.into_iter().enumerate() {
        roots
            .add(certificate)
            .map_err(|e| invalid(format!("certificate {} in {} is not usable: {e}", index + 1, path.display())))?;
    }
    Ok(pem)
}

fn backend_error<E, R>(store: &str, operation: &'static str, key: &str, err: SdkError<E, R>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    Error::Backend { store: store.to_string(), operation, key: key.to_string(), message: describe_sdk_error(&err) }
}

/// A one-line account of an SDK failure: status, code and message for answers from the server,
/// the underlying cause for requests that never got one. Never includes request headers.
fn describe_sdk_error<E, R>(err: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status_code();
            let meaning = match status {
                401 | 403 => " (access denied: check the credentials and the bucket's permissions)",
                404 => " (no such bucket or key)",
                412 => " (precondition failed)",
                500..=599 => " (server error)",
                _ => "",
            };
            match (service.err().code(), service.err().message()) {
                (Some(code), Some(message)) => format!("HTTP {status} {code}: {message}"),
                (Some(code), None) => format!("HTTP {status} {code}{meaning}"),
                _ => format!("HTTP {status}{meaning}"),
            }
        }
        SdkError::TimeoutError(_) => "the request timed out".to_string(),
        SdkError::DispatchFailure(failure) => {
            let mut deepest: &dyn std::error::Error = err;
            while let Some(next) = deepest.source() {
                deepest = next;
            }
            let mut cause = deepest.to_string();
            if cause.contains("invalid peer certificate") {
                cause.push_str(
                    " (the store's TLS certificate is not signed by a trusted CA or does not name this host: \
                     for a private CA, set s3_ca_file to its PEM file)",
                );
            }
            if failure.is_io() || failure.is_timeout() {
                format!("could not reach the server: {cause}")
            } else {
                format!("request failed: {cause}")
            }
        }
        other => DisplayErrorContext(other).to_string(),
    }
}

/// Content-MD5 makes the server verify the bytes it received before it stores them, so "stored" is
/// never acknowledged for bytes damaged on the way (design rule 1).
fn content_md5(body: &[u8]) -> String {
    use md5::Digest;
    aws_smithy_types::base64::encode(md5::Md5::digest(body))
}

fn http_status<E, R: HttpStatus>(err: &SdkError<E, R>) -> Option<u16> {
    err.raw_response().map(|r| r.status_code())
}

trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// A 404 for the key, not for the bucket: a missing bucket (a typo, a deleted bucket, a wrong
/// path-style setting) is an error to report, never "this object was not stored".
fn is_missing_key<E: ProvideErrorMetadata>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool {
    let code = err.as_service_error().and_then(|e| e.code());
    code != Some("NoSuchBucket") && (http_status(err) == Some(404) || code == Some("NoSuchKey"))
}

fn is_precondition_failed<E: ProvideErrorMetadata>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool {
    http_status(err) == Some(412) || err.as_service_error().and_then(|e| e.code()) == Some("PreconditionFailed")
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    async fn put(&self, key: &str, body: Bytes, mode: WriteMode) -> Result<WriteOutcome> {
        let full = self.full_key(key)?;
        if mode == WriteMode::CreateNew && self.head(key).await?.is_some() {
            return Ok(WriteOutcome::AlreadyExists);
        }
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .content_md5(content_md5(&body))
            .body(ByteStream::from(body));
        if mode == WriteMode::CreateNew {
            request = request.if_none_match("*");
        }
        match request.send().await {
            Ok(_) => Ok(WriteOutcome::Written),
            Err(e) if mode == WriteMode::CreateNew && is_precondition_failed(&e) => Ok(WriteOutcome::AlreadyExists),
            Err(e) => Err(self.error("upload", key, e)),
        }
    }

    async fn start_upload(&self, key: &str, mode: WriteMode) -> Result<Box<dyn Upload>> {
        let full = self.full_key(key)?;
        let already_exists = mode == WriteMode::CreateNew && self.head(key).await?.is_some();
        Ok(Box::new(S3Upload {
            store: self.clone(),
            key: key.to_string(),
            full_key: full,
            mode,
            already_exists,
            buffer: BytesMut::new(),
            upload_id: None,
            next_part: 1,
            completed: Vec::new(),
            in_flight: JoinSet::new(),
            finished: false,
        }))
    }

    async fn get(&self, key: &str) -> Result<ObjectReader> {
        let full = self.full_key(key)?;
        match self.client.get_object().bucket(&self.bucket).key(&full).send().await {
            Ok(output) => Ok(Box::pin(output.body.into_async_read())),
            Err(e) if is_missing_key(&e) => Err(Error::NotFound { store: self.describe(), key: key.to_string() }),
            Err(e) => Err(self.error("download", key, e)),
        }
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let full = self.full_key(key)?;
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        let output = match self.client.get_object().bucket(&self.bucket).key(&full).range(range).send().await {
            Ok(output) => output,
            Err(e) if is_missing_key(&e) => {
                return Err(Error::NotFound { store: self.describe(), key: key.to_string() })
            }
            Err(e) => return Err(self.error("ranged download", key, e)),
        };
        let data = output.body.collect().await.map_err(|e| Error::Backend {
            store: self.describe(),
            operation: "ranged download",
            key: key.to_string(),
            message: e.to_string(),
        })?;
        Ok(data.into_bytes())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let full = self.full_key(key)?;
        match self.client.head_object().bucket(&self.bucket).key(&full).send().await {
            Ok(output) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: output.content_length().unwrap_or(0).max(0) as u64,
                last_modified: output.last_modified().and_then(|t| std::time::SystemTime::try_from(*t).ok()),
            })),
            Err(e) if http_status(&e) == Some(404) || e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                Ok(None)
            }
            Err(e) => Err(self.error("stat", key, e)),
        }
    }

    fn list(&self, prefix: &str) -> super::ObjectStream {
        use futures::StreamExt;
        let full_prefix = if self.prefix.is_empty() { prefix.to_string() } else { format!("{}/{prefix}", self.prefix) };
        let store = self.clone();
        let prefix = prefix.to_string();
        // One page (up to 1000 keys) at a time; S3 returns keys in byte order.
        let pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(&full_prefix).into_paginator().send();
        futures::stream::unfold(Some(pages), move |pages| {
            let store = store.clone();
            let prefix = prefix.clone();
            async move {
                let mut pages = pages?;
                let page = pages.next().await?;
                let items: Vec<Result<ObjectInfo>> = match page {
                    Ok(page) => page
                        .contents()
                        .iter()
                        .filter_map(|object| {
                            let full = object.key()?;
                            Some(Ok(ObjectInfo {
                                key: store.relative_key(full).to_string(),
                                size: object.size().unwrap_or(0).max(0) as u64,
                                last_modified: object
                                    .last_modified()
                                    .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                            }))
                        })
                        .collect(),
                    Err(e) => return Some((vec![Err(store.error("list", &prefix, e))], None)),
                };
                Some((items, Some(pages)))
            }
        })
        .flat_map(futures::stream::iter)
        .boxed()
    }

    async fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>> {
        let relative =
            if prefix.is_empty() || prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
        let full_prefix = if self.prefix.is_empty() { relative.clone() } else { format!("{}/{relative}", self.prefix) };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("list", prefix, e))?;
            for common in page.common_prefixes() {
                if let Some(name) = common.prefix().and_then(|p| p.strip_prefix(&full_prefix)) {
                    names.push(name.trim_end_matches('/').to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("delete", key, e))
    }
}

struct S3Upload {
    store: S3Store,
    key: String,
    full_key: String,
    mode: WriteMode,
    /// CreateNew found the key taken before any byte was sent: the data is not uploaded at all.
    already_exists: bool,
    buffer: BytesMut,
    upload_id: Option<String>,
    next_part: i32,
    completed: Vec<CompletedPart>,
    in_flight: JoinSet<Result<CompletedPart>>,
    finished: bool,
}

impl S3Upload {
    /// Parts grow as an upload gets long, so 10,000 parts cover objects far beyond part_size * 10,000.
    fn current_part_size(&self) -> usize {
        self.store.part_size << ((self.next_part / 2000) as u32).min(6)
    }

    async fn send_part(&mut self, data: Bytes) -> Result<()> {
        if self.upload_id.is_none() {
            let created = self
                .store
                .client
                .create_multipart_upload()
                .bucket(&self.store.bucket)
                .key(&self.full_key)
                .send()
                .await
                .map_err(|e| self.store.error("start multipart upload", &self.key, e))?;
            self.upload_id = created.upload_id().map(str::to_string);
            if self.upload_id.is_none() {
                return Err(Error::Backend {
                    store: self.store.describe(),
                    operation: "start multipart upload",
                    key: self.key.clone(),
                    message: "the server returned no upload id".into(),
                });
            }
        }
        while self.in_flight.len() >= self.store.upload_concurrency {
            self.collect_one().await?;
        }
        let part_number = self.next_part;
        self.next_part += 1;
        let (client, bucket, full_key, key, store) = (
            self.store.client.clone(),
            self.store.bucket.clone(),
            self.full_key.clone(),
            self.key.clone(),
            self.store.describe(),
        );
        let upload_id = self.upload_id.clone().expect("upload started");
        self.in_flight.spawn(async move {
            let output = client
                .upload_part()
                .bucket(bucket)
                .key(full_key)
                .upload_id(upload_id)
                .part_number(part_number)
                .content_md5(content_md5(&data))
                .body(ByteStream::from(data))
                .send()
                .await
                .map_err(|e| backend_error(&store, "upload part", &key, e))?;
            Ok(CompletedPart::builder().part_number(part_number).set_e_tag(output.e_tag().map(str::to_string)).build())
        });
        Ok(())
    }

    async fn collect_one(&mut self) -> Result<()> {
        if let Some(joined) = self.in_flight.join_next().await {
            let part = joined.map_err(|e| Error::Backend {
                store: self.store.describe(),
                operation: "upload part",
                key: self.key.clone(),
                message: e.to_string(),
            })??;
            self.completed.push(part);
        }
        Ok(())
    }

    async fn abort_started(&mut self) {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        if let Some(upload_id) = self.upload_id.take() {
            // Best effort: if the server is down the incomplete upload stays invisible and the
            // bucket's lifecycle rule (or a later expire) removes its parts.
            let _ = self
                .store
                .client
                .abort_multipart_upload()
                .bucket(&self.store.bucket)
                .key(&self.full_key)
                .upload_id(upload_id)
                .send()
                .await;
        }
    }

    async fn complete(&mut self) -> Result<WriteOutcome> {
        if self.upload_id.is_none() {
            let body = std::mem::take(&mut self.buffer).freeze();
            return self.store.put(&self.key, body, self.mode).await;
        }
        if !self.buffer.is_empty() {
            let last = std::mem::take(&mut self.buffer).freeze();
            self.send_part(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        if self.mode == WriteMode::CreateNew && self.store.head(&self.key).await?.is_some() {
            self.abort_started().await;
            return Ok(WriteOutcome::AlreadyExists);
        }
        self.completed.sort_by_key(|p| p.part_number());
        let parts = CompletedMultipartUpload::builder().set_parts(Some(std::mem::take(&mut self.completed))).build();
        let mut request = self
            .store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.full_key)
            .upload_id(self.upload_id.clone().expect("upload started"))
            .multipart_upload(parts);
        if self.mode == WriteMode::CreateNew {
            request = request.if_none_match("*");
        }
        match request.send().await {
            Ok(_) => {
                self.upload_id = None;
                Ok(WriteOutcome::Written)
            }
            Err(e) if self.mode == WriteMode::CreateNew && is_precondition_failed(&e) => {
                self.abort_started().await;
                Ok(WriteOutcome::AlreadyExists)
            }
            Err(e) => Err(self.store.error("complete multipart upload", &self.key, e)),
        }
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        if self.already_exists {
            return Ok(());
        }
        self.buffer.extend_from_slice(&data);
        while self.buffer.len() >= self.current_part_size() {
            let part = self.buffer.split_to(self.current_part_size()).freeze();
            if let Err(e) = self.send_part(part).await {
                self.abort_started().await;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<WriteOutcome> {
        self.finished = true;
        if self.already_exists {
            return Ok(WriteOutcome::AlreadyExists);
        }
        let outcome = self.complete().await;
        if outcome.is_err() {
            self.abort_started().await;
        }
        outcome
    }

    async fn abort(mut self: Box<Self>) {
        self.finished = true;
        self.abort_started().await;
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        // A dropped, unfinished upload is invisible already; ask the server to free its parts if a
        // runtime is still around to do it.
        if let (Some(upload_id), Ok(handle)) = (self.upload_id.take(), tokio::runtime::Handle::try_current()) {
            let request = self
                .store
                .client
                .abort_multipart_upload()
                .bucket(&self.store.bucket)
                .key(&self.full_key)
                .upload_id(upload_id);
            handle.spawn(async move {
                let _ = request.send().await;
            });
        }
    }
}
