//! A repository: one cluster's namespace in an object store, with every object written through the
//! codec (checksummed, optionally compressed and encrypted) and every read verified.
//!
//! ```text
//! <store root>/<cluster>/cluster.json    who owns this namespace; written once, checked by writers
//! <store root>/<cluster>/wal/...          later issues: WAL, backups, chunks, snapshots
//! ```

use std::future::Future;
use std::io::{Cursor, Read};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
pub use tokio_util::sync::CancellationToken;

use crate::codec::{self, CodecSettings, Compression, DecodeStartError, Encoder, Trailer, TRAILER_LEN};
use crate::error::{Error, Result};
use crate::store::{ObjectStore, Upload, WriteMode, WriteOutcome};

pub const REPOSITORY_FORMAT_VERSION: u32 = 1;
pub const CLUSTER_FILE: &str = "cluster.json";

/// Whether an object may be encrypted. The server holds only public keys, so anything it must read
/// back itself (cluster.json, manifests) is stored checksummed but not encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectClass {
    Data,
    /// Data its producer already compressed (Parquet with zstd pages): encrypted like data, never
    /// compressed a second time.
    CompressedData,
    Metadata,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutResult {
    Stored {
        trailer: Trailer,
    },
    /// CreateNew found an object with the same plain bytes already stored: success, nothing written.
    AlreadyIdentical {
        trailer: Trailer,
    },
}

impl PutResult {
    pub fn trailer(&self) -> Trailer {
        match self {
            PutResult::Stored { trailer } | PutResult::AlreadyIdentical { trailer } => *trailer,
        }
    }
}

/// The identity of the PostgreSQL cluster a repository namespace belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIdentity {
    pub system_identifier: u64,
    pub pg_version_num: u32,
    pub wal_segment_size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    pub format_version: u32,
    pub cluster: String,
    /// As a string: JSON numbers lose precision above 2^53 in many readers.
    pub system_identifier: String,
    pub pg_version_num: u32,
    #[serde(default = "default_segment_size")]
    pub wal_segment_size: u32,
    pub created_at_unix: u64,
    pub created_by: String,
}

impl ClusterFile {
    /// The owner's system identifier; a value that is not one is corruption, never 0.
    pub fn system_identifier(&self, key: &str) -> Result<u64> {
        self.system_identifier.parse().map_err(|_| Error::Corrupt {
            key: key.to_string(),
            reason: format!("its system identifier \"{}\" is not a number", self.system_identifier.escape_debug()),
        })
    }
}

fn default_segment_size() -> u32 {
    crate::wal::DEFAULT_SEGMENT_SIZE
}

#[derive(Clone)]
pub struct Repository {
    store: Arc<dyn ObjectStore>,
    cluster: String,
    codec: CodecSettings,
    identities: Vec<age::x25519::Identity>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("store", &self.store.describe())
            .field("cluster", &self.cluster)
            .field("codec", &self.codec)
            .field("identities", &self.identities.len())
            .finish()
    }
}

/// Size of the pieces handed to the store while streaming; the store groups them into parts.
const STREAM_CHUNK: usize = 4 << 20;

impl Repository {
    pub fn new(store: Arc<dyn ObjectStore>, cluster: &str, codec: CodecSettings) -> Result<Self> {
        crate::store::validate_key(cluster).ok().filter(|_| !cluster.contains('/')).ok_or_else(|| {
            Error::InvalidSetting {
                setting: "cluster_name",
                reason: format!("\"{cluster}\" must be a single path segment without '/', '.' or '..'"),
            }
        })?;
        Ok(Repository { store, cluster: cluster.to_string(), codec, identities: Vec::new() })
    }

    pub fn with_identities(mut self, identities: Vec<age::x25519::Identity>) -> Self {
        self.identities = identities;
        self
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn describe(&self) -> String {
        format!("{}/{}", self.store.describe(), self.cluster)
    }

    /// Store key of a path relative to this cluster's namespace.
    pub fn key(&self, relative: &str) -> String {
        format!("{}/{relative}", self.cluster)
    }

    fn settings_for(&self, class: ObjectClass) -> CodecSettings {
        match class {
            ObjectClass::Data => self.codec.clone(),
            ObjectClass::CompressedData => CodecSettings { compression: Compression::None, ..self.codec.clone() },
            ObjectClass::Metadata => self.codec.without_encryption(),
        }
    }

    /// Encodes and stores an in-memory object (WAL segments, manifests).
    pub async fn put_bytes(
        &self,
        relative: &str,
        plain: Bytes,
        class: ObjectClass,
        mode: WriteMode,
    ) -> Result<PutResult> {
        let key = self.key(relative);
        let settings = self.settings_for(class);
        // Compression and encryption are CPU work: keep them off the I/O threads.
        let (encoded, trailer) = tokio::task::spawn_blocking(move || codec::encode_to_vec(&settings, &plain))
            .await
            .map_err(|e| Error::Encryption(e.to_string()))??;
        let outcome = self.store.put(&key, encoded.into(), mode).await?;
        self.settle(relative, outcome, trailer).await
    }

    /// Starts a streamed object; memory stays bounded by the chunk size whatever the object size.
    pub async fn writer(&self, relative: &str, class: ObjectClass, mode: WriteMode) -> Result<ObjectWriter<'_>> {
        let encoder = Encoder::new(&self.settings_for(class))?;
        let upload = self.store.start_upload(&self.key(relative), mode).await?;
        Ok(ObjectWriter { repository: self, relative: relative.to_string(), encoder, upload: Some(upload) })
    }

    /// Streams an object from an async reader.
    pub async fn put_reader<R: AsyncRead + Unpin>(
        &self,
        relative: &str,
        mut reader: R,
        class: ObjectClass,
        mode: WriteMode,
    ) -> Result<PutResult> {
        let mut writer = self.writer(relative, class, mode).await?;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buffer).await {
                Ok(n) => n,
                Err(e) => {
                    writer.abort().await;
                    return Err(Error::io("read source of", relative, e));
                }
            };
            if n == 0 {
                break;
            }
            writer.write(&buffer[..n]).await?;
        }
        writer.finish().await
    }

    /// Turns a store outcome into a repository result: "already there" is success only when the
    /// stored object is whole (read through, every checksum it can be checked against verified) and
    /// has the same plain bytes (design rule 2). A damaged earlier copy is an error naming the key:
    /// reporting it as stored would let PostgreSQL recycle the only good copy of a WAL segment.
    async fn settle(&self, relative: &str, outcome: WriteOutcome, trailer: Trailer) -> Result<PutResult> {
        match outcome {
            WriteOutcome::Written => Ok(PutResult::Stored { trailer }),
            WriteOutcome::AlreadyExists => {
                let existing = match self.verify(relative).await {
                    Ok(verified) => verified.trailer(),
                    Err(Error::Corrupt { key, reason }) => {
                        return Err(Error::Corrupt {
                            key,
                            reason: format!(
                                "an object is already stored under this name and it is damaged ({reason}); \
                                 nothing was overwritten and the new copy is not acknowledged"
                            ),
                        })
                    }
                    Err(e) => return Err(e),
                };
                if existing.plain_sha256 == trailer.plain_sha256 && existing.plain_len == trailer.plain_len {
                    Ok(PutResult::AlreadyIdentical { trailer: existing })
                } else {
                    Err(Error::Conflict {
                        store: self.store.describe(),
                        key: self.key(relative),
                        existing_sha256: existing.plain_sha256_hex(),
                        new_sha256: trailer.plain_sha256_hex(),
                    })
                }
            }
        }
    }

    /// Reads an object's trailer (its checksums and lengths) without reading the object.
    pub async fn read_trailer(&self, relative: &str) -> Result<Trailer> {
        let key = self.key(relative);
        let info = self
            .store
            .head(&key)
            .await?
            .ok_or_else(|| Error::NotFound { store: self.store.describe(), key: key.clone() })?;
        let corrupt = |reason: String| Error::Corrupt { key: key.clone(), reason };
        if info.size < (codec::HEADER_LEN + TRAILER_LEN) as u64 {
            return Err(corrupt(format!("it is {} bytes, shorter than an empty object", info.size)));
        }
        let bytes = self.store.get_range(&key, info.size - TRAILER_LEN as u64, TRAILER_LEN as u64).await?;
        let trailer = Trailer::decode(&bytes).map_err(&corrupt)?;
        if trailer.object_len() != info.size {
            return Err(corrupt(format!(
                "it is {} bytes but its trailer describes {} (truncated or spliced)",
                info.size,
                trailer.object_len()
            )));
        }
        Ok(trailer)
    }

    /// Reads, decodes and verifies a whole object into memory. For objects of bounded size only
    /// (WAL segments, manifests); large objects are read with [`Repository::open`].
    pub async fn get_bytes(&self, relative: &str) -> Result<Vec<u8>> {
        let raw = self.get_raw(relative).await?;
        self.decode(relative, raw).await
    }

    /// Reads and decodes a whole object, checking its stored bytes and lengths but not the SHA-256 of
    /// its plain bytes: only for callers that check every byte they use by checksums of their own
    /// (base backup packs, whose chunks are each checked against their SHA-256).
    pub async fn get_bytes_checked_by_caller(&self, relative: &str) -> Result<Vec<u8>> {
        let raw = self.get_raw(relative).await?;
        let key = self.key(relative);
        let identities = self.identities.clone();
        tokio::task::spawn_blocking(move || {
            let mut plain = Vec::new();
            let mut decoded = codec::decode_contents_checked_by_caller(Cursor::new(raw), &identities)
                .map_err(|e| decode_start_error(&key, e))?;
            decoded.read_to_end(&mut plain).map_err(|e| read_error(&key, e))?;
            Ok(plain)
        })
        .await
        .map_err(|e| Error::Encryption(e.to_string()))?
    }

    /// The stored bytes of an object, unverified: for spooling, to be checked by [`Repository::decode`].
    pub async fn get_raw(&self, relative: &str) -> Result<Vec<u8>> {
        let key = self.key(relative);
        let mut reader = self.store.get(&key).await?;
        let mut raw = Vec::new();
        reader.read_to_end(&mut raw).await.map_err(|e| Error::Backend {
            store: self.store.describe(),
            operation: "download",
            key: key.clone(),
            message: e.to_string(),
        })?;
        Ok(raw)
    }

    /// Decodes stored bytes and verifies every checksum; an error means the bytes must not be used.
    pub async fn decode(&self, relative: &str, raw: Vec<u8>) -> Result<Vec<u8>> {
        let key = self.key(relative);
        let identities = self.identities.clone();
        tokio::task::spawn_blocking(move || {
            let mut plain = Vec::new();
            let mut decoded = start_decoding(&key, Cursor::new(raw), &identities)?;
            decoded.read_to_end(&mut plain).map_err(|e| read_error(&key, e))?;
            Ok(plain)
        })
        .await
        .map_err(|e| Error::Encryption(e.to_string()))?
    }

    /// Opens an object for streaming, verified, reading. Must be called outside the runtime (a
    /// backend thread, a CLI main thread, `spawn_blocking`): the returned reader blocks on `handle`.
    /// End of stream is only reported once every checksum matched.
    pub fn open(&self, handle: &tokio::runtime::Handle, relative: &str) -> Result<VerifiedReader> {
        self.open_cancellable(handle, relative, &CancellationToken::new())
    }

    /// [`Repository::open`] that gives up as soon as `cancel` fires: opening and every later read
    /// fail at once instead of waiting on a store that stopped answering.
    pub fn open_cancellable(
        &self,
        handle: &tokio::runtime::Handle,
        relative: &str,
        cancel: &CancellationToken,
    ) -> Result<VerifiedReader> {
        self.open_with(handle, relative, cancel, true)
    }

    /// [`Repository::open_cancellable`] checking the stored bytes and lengths but not the SHA-256
    /// of the plain bytes: only for callers that check every byte they use themselves (the chunks
    /// of a base backup pack, each against its SHA-256).
    pub fn open_checked_by_caller(
        &self,
        handle: &tokio::runtime::Handle,
        relative: &str,
        cancel: &CancellationToken,
    ) -> Result<VerifiedReader> {
        self.open_with(handle, relative, cancel, false)
    }

    fn open_with(
        &self,
        handle: &tokio::runtime::Handle,
        relative: &str,
        cancel: &CancellationToken,
        verify_plain: bool,
    ) -> Result<VerifiedReader> {
        let key = self.key(relative);
        let reader = handle.block_on(async {
            tokio::select! {
                opened = self.store.get(&key) => opened,
                _ = cancel.cancelled() => Err(Error::Cancelled),
            }
        })?;
        let reader = CancellableReader { inner: reader, cancelled: Box::pin(cancel.clone().cancelled_owned()) };
        let bridge = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle.clone());
        let decoded = if verify_plain {
            start_decoding(&key, bridge, &self.identities)?
        } else {
            codec::decode_contents_checked_by_caller(bridge, &self.identities)
                .map_err(|e| decode_start_error(&key, e))?
        };
        Ok(VerifiedReader { decoded, key })
    }

    /// Reads a whole object and checks it: header, stored-bytes checksum and length always; the
    /// plain checksum too when the object can be decoded (not encrypted, or an identity is given).
    /// Streams the object, so memory stays bounded whatever its size.
    pub async fn verify(&self, relative: &str) -> Result<Verified> {
        let key = self.key(relative);
        let reader = self.store.get(&key).await?;
        let identities = self.identities.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            verify_reader(&key, tokio_util::io::SyncIoBridge::new_with_handle(reader, handle), &identities)
        })
        .await
        .map_err(|e| Error::Encryption(e.to_string()))?
    }

    /// Fails with [`Error::NamespaceMissing`] unless this namespace's cluster.json exists: the one
    /// proof that "object not found" means "not stored" and not "looking in the wrong place".
    pub async fn check_namespace_visible(&self) -> Result<()> {
        match self.store.head(&self.key(CLUSTER_FILE)).await? {
            Some(_) => Ok(()),
            None => Err(Error::NamespaceMissing { store: self.store.describe(), namespace: self.cluster.clone() }),
        }
    }

    pub async fn cluster_file(&self) -> Result<Option<ClusterFile>> {
        match self.get_bytes(CLUSTER_FILE).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::Corrupt {
                key: self.key(CLUSTER_FILE),
                reason: format!("it is not valid cluster metadata: {e}"),
            }),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes sure this namespace belongs to `identity`: creates cluster.json on first use, refuses
    /// a namespace that another cluster already owns. Every writer calls this before writing.
    pub async fn ensure_cluster(&self, identity: &ClusterIdentity) -> Result<ClusterFile> {
        if let Some(existing) = self.cluster_file().await? {
            return self.check_owner(existing, identity);
        }
        let file = ClusterFile {
            format_version: REPOSITORY_FORMAT_VERSION,
            cluster: self.cluster.clone(),
            system_identifier: identity.system_identifier.to_string(),
            pg_version_num: identity.pg_version_num,
            wal_segment_size: identity.wal_segment_size,
            created_at_unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            created_by: format!("backstop {}", env!("CARGO_PKG_VERSION")),
        };
        let json = serde_json::to_vec_pretty(&file).expect("cluster file serializes");
        let (encoded, _) = codec::encode_to_vec(&CodecSettings::plain(), &json)?;
        match self.store.put(&self.key(CLUSTER_FILE), encoded.into(), WriteMode::CreateNew).await? {
            WriteOutcome::Written => Ok(file),
            // Another writer created it between our read and our write: theirs is authoritative.
            WriteOutcome::AlreadyExists => {
                let existing = self
                    .cluster_file()
                    .await?
                    .ok_or_else(|| Error::NotFound { store: self.store.describe(), key: self.key(CLUSTER_FILE) })?;
                self.check_owner(existing, identity)
            }
        }
    }

    fn check_owner(&self, existing: ClusterFile, identity: &ClusterIdentity) -> Result<ClusterFile> {
        if existing.system_identifier(&self.key(CLUSTER_FILE))? == identity.system_identifier {
            Ok(existing)
        } else {
            Err(Error::ForeignCluster {
                store: self.describe(),
                expected: identity.system_identifier.to_string(),
                found: existing.system_identifier,
            })
        }
    }

    /// Proves the repository usable end to end: write, read back and verify, list, delete. Returns
    /// how long the round trip took; an error names the step that failed.
    pub async fn round_trip_check(&self) -> Result<Duration> {
        let started = Instant::now();
        let relative = format!(".probe/{:016x}", rand::random::<u64>());
        let key = self.key(&relative);
        let failed = |step: &'static str, reason: String| Error::Probe { store: self.describe(), step, reason };
        let payload = Bytes::from(format!("backstop probe {relative}"));
        self.put_bytes(&relative, payload.clone(), ObjectClass::Metadata, WriteMode::CreateNew)
            .await
            .map_err(|e| failed("write", e.to_string()))?;
        let read = self.get_bytes(&relative).await;
        let listed = self.store.list_all(&self.key(".probe/")).await;
        let deleted = self.store.delete(&key).await;
        match read {
            Err(e) => return Err(failed("read back", e.to_string())),
            Ok(bytes) if bytes != payload => return Err(failed("read back", "different bytes came back".into())),
            Ok(_) => {}
        }
        match listed {
            Err(e) => return Err(failed("list", e.to_string())),
            Ok(objects) if !objects.iter().any(|o| o.key == key) => {
                return Err(failed("list", "the object just written was not listed".into()))
            }
            Ok(_) => {}
        }
        deleted.map_err(|e| failed("delete", e.to_string()))?;
        match self.store.head(&key).await {
            Err(e) => Err(failed("delete", e.to_string())),
            Ok(Some(_)) => Err(failed("delete", "the object is still there after delete".into())),
            Ok(None) => Ok(started.elapsed()),
        }
    }
}

/// How thoroughly an object was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Decoded completely: stored bytes and plain contents match their checksums.
    Contents(Trailer),
    /// Encrypted and no identity given: the stored bytes match their checksum.
    StoredBytes(Trailer),
}

impl Verified {
    pub fn trailer(&self) -> Trailer {
        match self {
            Verified::Contents(t) | Verified::StoredBytes(t) => *t,
        }
    }
}

fn verify_reader<R: Read + Send + 'static>(
    key: &str,
    mut raw: R,
    identities: &[age::x25519::Identity],
) -> Result<Verified> {
    let corrupt = |reason: String| Error::Corrupt { key: key.to_string(), reason };
    let mut header_bytes = [0u8; codec::HEADER_LEN];
    raw.read_exact(&mut header_bytes).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => corrupt("it is shorter than an object header".into()),
        _ => read_error(key, std::io::Error::new(e.kind(), codec::SourceError(e))),
    })?;
    let header = codec::Header::decode(&header_bytes).map_err(&corrupt)?;
    let whole = Read::chain(Cursor::new(header_bytes), raw);
    if header.encrypted && identities.is_empty() {
        let (_, trailer) = codec::check_stored_bytes(whole).map_err(|e| decode_start_error(key, e))?;
        return Ok(Verified::StoredBytes(trailer));
    }
    let mut decoded = start_decoding(key, whole, identities)?;
    std::io::copy(&mut decoded, &mut std::io::sink()).map_err(|e| read_error(key, e))?;
    Ok(Verified::Contents(decoded.verified_trailer().expect("end of stream implies verified")))
}

fn start_decoding<R: Read + Send + 'static>(
    key: &str,
    raw: R,
    identities: &[age::x25519::Identity],
) -> Result<codec::DecodedReader> {
    codec::decode(raw, identities).map_err(|e| decode_start_error(key, e))
}

fn decode_start_error(key: &str, error: DecodeStartError) -> Error {
    match error {
        DecodeStartError::Corrupt(reason) => Error::Corrupt { key: key.to_string(), reason },
        DecodeStartError::NoIdentity => {
            Error::Decryption { key: key.to_string(), reason: "no age identity was given to decrypt it".into() }
        }
        DecodeStartError::WrongIdentity => Error::Decryption {
            key: key.to_string(),
            reason: "none of the given age identities can decrypt it (wrong key?)".into(),
        },
        DecodeStartError::Io(e) => read_error(key, e),
    }
}

/// Sorts a failed read into "the bytes are bad" (corrupt: checksum mismatch, or they do not
/// decode) and "the bytes could not be read" (the store or the network).
fn read_error(key: &str, error: std::io::Error) -> Error {
    if let Some(reason) = codec::integrity_reason(&error) {
        Error::Corrupt { key: key.to_string(), reason }
    } else if codec::is_source_error(&error) {
        Error::Backend {
            store: "the repository".into(),
            operation: "read",
            key: key.to_string(),
            message: error.to_string(),
        }
    } else {
        Error::Corrupt { key: key.to_string(), reason: format!("it does not decode ({error})") }
    }
}

/// A store reader that fails as soon as its token is cancelled, even while the store is silent.
struct CancellableReader {
    inner: crate::store::ObjectReader,
    cancelled: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl AsyncRead for CancellableReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.cancelled.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Err(std::io::Error::other("operation cancelled")));
        }
        self.inner.as_mut().poll_read(cx, buf)
    }
}

/// A streamed, verifying read of one object. `Read` reports integrity failures as `InvalidData`;
/// [`VerifiedReader::copy_to`] turns them into typed errors.
pub struct VerifiedReader {
    decoded: codec::DecodedReader,
    key: String,
}

impl Read for VerifiedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.decoded.read(buf)
    }
}

impl VerifiedReader {
    /// Fills `buffer` from the object; a short object or a failed check is an error naming it.
    pub fn read_exact_checked(&mut self, buffer: &mut [u8]) -> Result<()> {
        self.decoded.read_exact(buffer).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Corrupt {
                    key: self.key.clone(),
                    reason: "it ends before the data its manifest places in it".into(),
                }
            } else {
                read_error(&self.key, e)
            }
        })
    }

    /// Reads and drops `bytes` plain bytes.
    pub fn skip(&mut self, bytes: u64) -> Result<()> {
        let copied = std::io::copy(&mut (&mut self.decoded).take(bytes), &mut std::io::sink())
            .map_err(|e| read_error(&self.key, e))?;
        if copied != bytes {
            return Err(Error::Corrupt {
                key: self.key.clone(),
                reason: "it ends before the data its manifest places in it".into(),
            });
        }
        Ok(())
    }

    /// Reads the rest of the object, so that every check of its end runs; returns its trailer.
    pub fn finish(mut self) -> Result<Trailer> {
        std::io::copy(&mut self.decoded, &mut std::io::sink()).map_err(|e| read_error(&self.key, e))?;
        self.decoded
            .verified_trailer()
            .ok_or_else(|| Error::Corrupt { key: self.key.clone(), reason: "it did not verify at its end".into() })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Copies the whole object into `sink` and returns its verified trailer. On error, whatever was
    /// written to `sink` must be discarded: it is unverified.
    pub fn copy_to(self, sink: &mut impl std::io::Write) -> Result<Trailer> {
        self.copy_to_with_progress(sink, |_| {})
    }

    /// [`VerifiedReader::copy_to`], calling `progress` with the plain bytes copied so far after
    /// every megabyte: the place for a caller to report progress or honour a cancel.
    pub fn copy_to_with_progress(
        mut self,
        sink: &mut impl std::io::Write,
        mut progress: impl FnMut(u64),
    ) -> Result<Trailer> {
        let mut buffer = vec![0u8; 1 << 20];
        let mut copied = 0u64;
        loop {
            let n = self.decoded.read(&mut buffer).map_err(|e| read_error(&self.key, e))?;
            if n == 0 {
                break;
            }
            sink.write_all(&buffer[..n]).map_err(|e| Error::io("write", &self.key, e))?;
            copied += n as u64;
            progress(copied);
        }
        Ok(self.decoded.verified_trailer().expect("end of stream implies verified"))
    }
}

/// A streamed write of one object. Nothing is visible until [`ObjectWriter::finish`] succeeds;
/// dropping or aborting it publishes nothing.
pub struct ObjectWriter<'a> {
    repository: &'a Repository,
    relative: String,
    encoder: Encoder,
    upload: Option<Box<dyn Upload>>,
}

impl ObjectWriter<'_> {
    pub async fn write(&mut self, plain: &[u8]) -> Result<()> {
        for piece in plain.chunks(STREAM_CHUNK) {
            self.encoder.write(piece).map_err(|e| Error::Encryption(e.to_string()))?;
            if self.encoder.pending() >= STREAM_CHUNK {
                let chunk = Bytes::from(self.encoder.take_output());
                let upload = self.upload.as_mut().expect("writer used after finish");
                if let Err(e) = upload.write(chunk).await {
                    self.abort().await;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    pub async fn finish(mut self) -> Result<PutResult> {
        let mut upload = self.upload.take().expect("writer finished twice");
        let encoder = std::mem::replace(&mut self.encoder, Encoder::new(&CodecSettings::plain())?);
        let (rest, trailer) = match encoder.finish() {
            Ok(done) => done,
            Err(e) => {
                upload.abort().await;
                return Err(Error::Encryption(e.to_string()));
            }
        };
        if let Err(e) = upload.write(Bytes::from(rest)).await {
            upload.abort().await;
            return Err(e);
        }
        let outcome = upload.finish().await?;
        self.repository.settle(&self.relative, outcome, trailer).await
    }

    pub async fn abort(&mut self) {
        if let Some(upload) = self.upload.take() {
            upload.abort().await;
        }
    }
}
