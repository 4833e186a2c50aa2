//! A repository: one cluster's namespace in an object store, with every object written through the
//! codec (checksummed, optionally compressed and encrypted, signed) and every read authenticated.
//!
//! This is the one read path. Every read of an object, whole or streamed, first authenticates its
//! tail (see [`Repository::authenticate`]): the object's size matches its trailer, its plain length
//! is within what its kind allows ([`crate::layout::ObjectKind::max_plain_len`]), and its signature
//! is from a trusted key (or, for an unsigned object of backstop 0.2, an adoption record vouches
//! for it). Only then is a byte decoded, and the decoder refuses any object under that name other
//! than the one authenticated and any plain byte beyond its authenticated length. The codec's
//! decoders are crate-private, so no consumer can read an object unauthenticated by forgetting a
//! call. Writes need the signing key: a repository without one refuses to write.

use std::collections::HashMap;
use std::future::Future;
use std::io::{Cursor, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
pub use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticity, SigningKey, Trust};
use crate::codec::{
    self, CodecSettings, Compression, DecodeStartError, Encoder, Expected, Header, SignWith, Tail, Trailer, HEADER_LEN,
    SIGNATURE_LEN, TRAILER_LEN,
};
use crate::error::{Error, Result};
pub use crate::layout::ObjectClass;
use crate::layout::{self, ObjectPath, Prefix};
use crate::store::{ObjectInfo, ObjectStore, Upload, WriteMode, WriteOutcome};

pub const REPOSITORY_FORMAT_VERSION: u32 = 1;
pub use crate::layout::CLUSTER_FILE;

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
    crate::layout::DEFAULT_SEGMENT_SIZE
}

/// Unsigned objects (backstop 0.2) an adoption record vouches for: path -> (header, tail).
type Adopted = Arc<HashMap<String, ([u8; HEADER_LEN], Vec<u8>)>>;

#[derive(Clone)]
pub struct Repository {
    store: Arc<dyn ObjectStore>,
    cluster: String,
    codec: CodecSettings,
    identities: Vec<age::x25519::Identity>,
    signer: Option<SigningKey>,
    /// Why nothing may be written or deleted through this handle (a restored copy reading the
    /// production namespace), if so.
    read_only: Option<Arc<str>>,
    trust: Trust,
    /// Loaded on the first unsigned object met; cleared when an adoption is recorded.
    adopted: Arc<Mutex<Option<Adopted>>>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("store", &self.store.describe())
            .field("cluster", &self.cluster)
            .field("codec", &self.codec)
            .field("identities", &self.identities.len())
            .field("signer", &self.signer)
            .field("trust", &self.trust)
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
        Ok(Repository {
            store,
            cluster: cluster.to_string(),
            codec,
            identities: Vec::new(),
            signer: None,
            read_only: None,
            trust: Trust::default(),
            adopted: Arc::default(),
        })
    }

    pub fn with_identities(mut self, identities: Vec<age::x25519::Identity>) -> Self {
        self.identities = identities;
        self
    }

    /// The key this process signs with; its public key is trusted too.
    pub fn with_signer(mut self, key: SigningKey) -> Self {
        self.trust = std::mem::take(&mut self.trust).with_key(key.public());
        self.signer = Some(key);
        self
    }

    /// Refuses every write and delete through this handle, saying `reason`.
    pub fn read_only(mut self, reason: String) -> Self {
        self.read_only = Some(reason.into());
        self
    }

    fn check_writable(&self, path: &str) -> Result<()> {
        match &self.read_only {
            Some(reason) => {
                Err(Error::ReadOnly { key: format!("{}/{path}", self.cluster), reason: reason.to_string() })
            }
            None => Ok(()),
        }
    }

    /// The keys reads accept signatures from (the signer's own is kept).
    pub fn with_trust(mut self, trust: Trust) -> Self {
        let own = self.signer.as_ref().map(SigningKey::public);
        self.trust = match own {
            Some(key) => trust.with_key(key),
            None => trust,
        };
        self
    }

    /// The same namespace written with other codec settings (base backups compress their own way).
    pub fn with_codec(mut self, codec: CodecSettings) -> Self {
        self.codec = codec;
        self
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    pub fn signer(&self) -> Option<&SigningKey> {
        self.signer.as_ref()
    }

    pub fn codec(&self) -> &CodecSettings {
        &self.codec
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

    /// Store key of an object (`<cluster>/<path>`): what messages name and signatures cover.
    pub fn key(&self, path: &ObjectPath) -> String {
        format!("{}/{}", self.cluster, path.as_str())
    }

    fn prefix_key(&self, prefix: &Prefix) -> String {
        format!("{}/{}", self.cluster, prefix.as_str())
    }

    fn settings_for(&self, path: &ObjectPath) -> CodecSettings {
        match path.kind().class() {
            ObjectClass::Data => self.codec.clone(),
            ObjectClass::CompressedData => CodecSettings { compression: Compression::None, ..self.codec.clone() },
            ObjectClass::Metadata => self.codec.without_encryption(),
        }
    }

    fn sign_with(&self, path: &ObjectPath) -> Result<SignWith> {
        self.check_writable(path.as_str())?;
        let key = self.signer.clone().ok_or_else(|| Error::NoSigningKey { key: self.key(path) })?;
        Ok(SignWith { key, object_key: self.key(path) })
    }

    /// Encodes, signs and stores an in-memory object (WAL segments, manifests).
    pub async fn put_bytes(&self, path: &ObjectPath, plain: Bytes, mode: WriteMode) -> Result<PutResult> {
        let key = self.key(path);
        let settings = self.settings_for(path);
        let sign = self.sign_with(path)?;
        // Compression, encryption and signing are CPU work: keep them off the I/O threads.
        let (encoded, trailer) =
            tokio::task::spawn_blocking(move || codec::encode_to_vec(&settings, &plain, Some(&sign)))
                .await
                .map_err(|e| Error::Encryption(e.to_string()))??;
        let outcome = self.store.put(&key, encoded.into(), mode).await?;
        self.settle(path, outcome, trailer).await
    }

    /// Starts a streamed object; memory stays bounded by the chunk size whatever the object size.
    pub async fn writer(&self, path: &ObjectPath, mode: WriteMode) -> Result<ObjectWriter<'_>> {
        let encoder = Encoder::new(&self.settings_for(path), Some(self.sign_with(path)?))?;
        let upload = self.store.start_upload(&self.key(path), mode).await?;
        Ok(ObjectWriter { repository: self, path: path.clone(), encoder, upload: Some(upload) })
    }

    /// Streams an object from an async reader.
    pub async fn put_reader<R: AsyncRead + Unpin>(
        &self,
        path: &ObjectPath,
        mut reader: R,
        mode: WriteMode,
    ) -> Result<PutResult> {
        let mut writer = self.writer(path, mode).await?;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buffer).await {
                Ok(n) => n,
                Err(e) => {
                    writer.abort().await;
                    return Err(Error::io("read source of", path.as_str(), e));
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
    /// stored object is whole (authenticated, read through, every checksum it can be checked
    /// against verified) and has the same plain bytes (design rule 2). A damaged or unauthentic
    /// earlier copy is an error naming the key: reporting it as stored would let PostgreSQL
    /// recycle the only good copy of a WAL segment.
    async fn settle(&self, path: &ObjectPath, outcome: WriteOutcome, trailer: Trailer) -> Result<PutResult> {
        match outcome {
            WriteOutcome::Written => Ok(PutResult::Stored { trailer }),
            WriteOutcome::AlreadyExists => {
                let existing = match self.verify(path).await {
                    Ok(verified) => verified.trailer(),
                    Err(Error::Corrupt { key, reason }) | Err(Error::Unauthenticated { key, reason }) => {
                        return Err(Error::Corrupt {
                            key,
                            reason: format!(
                                "an object is already stored under this name and it is damaged or not ours ({reason}); \
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
                        key: self.key(path),
                        existing_sha256: existing.plain_sha256_hex(),
                        new_sha256: trailer.plain_sha256_hex(),
                    })
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // The read path: authenticate the tail, then decode against it.

    /// Authenticates an object from its header and tail as stored, before any byte of its body is
    /// decoded: the sizes agree, the plain length is within the kind's cap, and a trusted key
    /// signed exactly this (key, header, trailer), or an adoption record vouches for it.
    async fn authenticate(
        &self,
        path: &ObjectPath,
        header_bytes: &[u8],
        tail_bytes: &[u8],
        stored_len: u64,
    ) -> Result<(Expected, Authenticity)> {
        let key = self.key(path);
        let corrupt = |reason: String| Error::Corrupt { key: key.clone(), reason };
        let header = Header::decode(header_bytes).map_err(&corrupt)?;
        let header_bytes: [u8; HEADER_LEN] = header_bytes[..HEADER_LEN].try_into().expect("checked by decode");
        let tail = Tail::decode(tail_bytes).map_err(&corrupt)?;
        if tail.signature.is_some() != header.signed() {
            return Err(corrupt("its header and its tail disagree on whether it is signed (spliced)".into()));
        }
        let expected_len = (HEADER_LEN + header.tail_len()) as u64 + tail.trailer.body_len;
        if expected_len != stored_len {
            return Err(corrupt(format!(
                "it is {stored_len} bytes but its trailer describes {expected_len} (truncated or spliced)"
            )));
        }
        let cap = path.kind().max_plain_len();
        if tail.trailer.plain_len > cap {
            return Err(corrupt(format!(
                "it records {} plain bytes, more than a {} may hold ({cap}); nothing of it was decoded",
                tail.trailer.plain_len,
                path.kind().as_str()
            )));
        }
        let unauthenticated = |reason: String| Error::Unauthenticated { key: key.clone(), reason };
        let authenticity = match &tail.signature {
            Some(block) => {
                if block.header != header_bytes {
                    return Err(corrupt("its signature block carries another header than the object (spliced)".into()));
                }
                let message = crate::auth::signed_message(&key, &header_bytes, tail.trailer_bytes());
                self.trust.check(&message, &block.signer, &block.signature).map_err(unauthenticated)?
            }
            None => {
                let adopted = self.adopted_objects().await?;
                match adopted.get(path.as_str()) {
                    Some((h, t)) if *h == header_bytes && *t == tail.bytes => Authenticity::Adopted,
                    Some(_) => {
                        return Err(unauthenticated(
                            "it is unsigned and differs from what adopt_repository recorded for it: it was replaced after the adoption".into(),
                        ))
                    }
                    None => self
                        .trust
                        .unsigned(
                            "it carries no signature (written by backstop 0.2 or earlier, or not by backstop) and no adoption record vouches for it",
                        )
                        .map_err(unauthenticated)?,
                }
            }
        };
        if let Authenticity::TrustedUnauthenticated(why) = &authenticity {
            crate::auth::note_unauthenticated(&key, why);
        }
        Ok((Expected { header: Some(header_bytes), tail: tail.bytes, trailer: tail.trailer }, authenticity))
    }

    /// Authenticates an object in the store from its size, header and tail (two range reads).
    async fn authenticate_stored(&self, path: &ObjectPath) -> Result<Expected> {
        let key = self.key(path);
        let info = self
            .store
            .head(&key)
            .await?
            .ok_or_else(|| Error::NotFound { store: self.store.describe(), key: key.clone() })?;
        let corrupt = |reason: String| Error::Corrupt { key: key.clone(), reason };
        if info.size < (HEADER_LEN + TRAILER_LEN) as u64 {
            return Err(corrupt(format!("it is {} bytes, shorter than an empty object", info.size)));
        }
        let longest = (TRAILER_LEN + SIGNATURE_LEN) as u64;
        let from = info.size.saturating_sub(longest).max(HEADER_LEN as u64);
        let (head, end) = tokio::try_join!(
            self.store.get_range(&key, 0, HEADER_LEN as u64),
            self.store.get_range(&key, from, info.size - from)
        )?;
        let tail_len =
            Tail::len_from_end(&end[end.len().saturating_sub(8)..]).filter(|len| *len <= end.len()).ok_or_else(
                || corrupt("its trailer is missing (the object is truncated or not a backstop object)".into()),
            )?;
        Ok(self.authenticate(path, &head, &end[end.len() - tail_len..], info.size).await?.0)
    }

    /// Authenticates stored bytes held in memory.
    async fn authenticate_raw(&self, path: &ObjectPath, raw: &[u8]) -> Result<Expected> {
        let corrupt = |reason: String| Error::Corrupt { key: self.key(path), reason };
        if raw.len() < HEADER_LEN + TRAILER_LEN {
            return Err(corrupt(format!("it is {} bytes, shorter than an empty object", raw.len())));
        }
        let tail_len =
            Tail::len_from_end(&raw[raw.len() - 8..]).filter(|len| *len + HEADER_LEN <= raw.len()).ok_or_else(
                || corrupt("its trailer is missing (the object is truncated or not a backstop object)".into()),
            )?;
        Ok(self.authenticate(path, &raw[..HEADER_LEN], &raw[raw.len() - tail_len..], raw.len() as u64).await?.0)
    }

    /// The unsigned objects adoption records vouch for, loaded once per repository handle. The
    /// records are themselves signed objects, read through this same path.
    pub(crate) async fn adopted_objects(&self) -> Result<Adopted> {
        if let Some(adopted) = self.adopted.lock().expect("adopted lock").clone() {
            return Ok(adopted);
        }
        let mut map = HashMap::new();
        // Boxed: reading a record goes through authentication again (records are signed, so
        // this never recurses further than once).
        for record in Box::pin(self.adoption_records()).await? {
            for object in record.objects {
                map.insert(object.path, (object.header, object.tail));
            }
        }
        let adopted: Adopted = Arc::new(map);
        *self.adopted.lock().expect("adopted lock") = Some(adopted.clone());
        Ok(adopted)
    }

    /// Every adoption record of the namespace, each read through the authenticated path (they
    /// are signed objects).
    pub async fn adoption_records(&self) -> Result<Vec<crate::adoption_record::AdoptionRecord>> {
        use futures::TryStreamExt;
        let listed: Vec<Listed> = self.list(&layout::adoptions()).try_collect().await?;
        let mut records = Vec::new();
        for object in listed {
            let Some(path) = object.path.filter(|p| p.kind() == layout::ObjectKind::Adoption) else { continue };
            let bytes = self.get_bytes(&path).await?;
            records.push(crate::adoption_record::AdoptionRecord::parse(&self.key(&path), &self.cluster, &bytes)?);
        }
        Ok(records)
    }

    /// Forgets the loaded adoption records (after a new one was written).
    pub(crate) fn forget_adoptions(&self) {
        *self.adopted.lock().expect("adopted lock") = None;
    }

    /// Reads an object's trailer (its checksums and lengths), authenticated, without reading the
    /// object.
    pub async fn read_trailer(&self, path: &ObjectPath) -> Result<Trailer> {
        Ok(self.authenticate_stored(path).await?.trailer)
    }

    /// The trailer and whether the object is stored encrypted, authenticated, without reading
    /// the object. An adopted unsigned object's header is not authenticated: it counts as not
    /// encrypted.
    pub async fn read_trailer_and_encryption(&self, path: &ObjectPath) -> Result<(Trailer, bool)> {
        let expected = self.authenticate_stored(path).await?;
        let encrypted = expected.header.is_some_and(|h| Header::decode(&h).is_ok_and(|h| h.encrypted));
        Ok((expected.trailer, encrypted))
    }

    /// Whether this repository writes encrypted objects.
    pub fn encrypts(&self) -> bool {
        !self.codec.recipients.is_empty()
    }

    /// Reads, authenticates, decodes and verifies a whole object into memory. For objects of
    /// bounded size only (WAL segments, manifests); large objects are read with
    /// [`Repository::open`].
    pub async fn get_bytes(&self, path: &ObjectPath) -> Result<Vec<u8>> {
        let raw = self.get_raw(path).await?;
        self.decode(path, raw).await
    }

    /// The stored bytes of an object, unverified and capped at what its kind may hold: for
    /// spooling, to be checked by [`Repository::decode`].
    pub async fn get_raw(&self, path: &ObjectPath) -> Result<Vec<u8>> {
        let key = self.key(path);
        let cap = stored_cap(path);
        let reader = self.store.get(&key).await?;
        let mut raw = Vec::new();
        reader.take(cap + 1).read_to_end(&mut raw).await.map_err(|e| Error::Backend {
            store: self.store.describe(),
            operation: "download",
            key: key.clone(),
            message: e.to_string(),
        })?;
        if raw.len() as u64 > cap {
            return Err(Error::Corrupt {
                key,
                reason: format!(
                    "it is larger than a {} may be ({cap} bytes stored); nothing of it was decoded",
                    path.kind().as_str()
                ),
            });
        }
        Ok(raw)
    }

    /// Authenticates stored bytes, then decodes them and verifies every checksum; an error means
    /// the bytes must not be used.
    pub async fn decode(&self, path: &ObjectPath, raw: Vec<u8>) -> Result<Vec<u8>> {
        let expected = self.authenticate_raw(path, &raw).await?;
        let key = self.key(path);
        let identities = self.identities.clone();
        tokio::task::spawn_blocking(move || {
            let mut plain = Vec::with_capacity(expected.trailer.plain_len.min(64 << 20) as usize);
            let mut decoded = start_decoding(&key, Cursor::new(raw), &identities, &expected, true)?;
            decoded.read_to_end(&mut plain).map_err(|e| read_error(&key, e))?;
            Ok(plain)
        })
        .await
        .map_err(|e| Error::Encryption(e.to_string()))?
    }

    /// Opens an object for a streamed, verifying read on the calling (blocking) thread; the
    /// downloads run on `handle`'s runtime. Its tail is authenticated before the read starts;
    /// the bytes are verified at the end, so what was read before an error must be discarded.
    pub fn open(&self, handle: &tokio::runtime::Handle, path: &ObjectPath) -> Result<VerifiedReader> {
        self.open_with(handle, path, &CancellationToken::new())
    }

    /// [`Repository::open`] that fails at once, also inside a silent store, when `cancel` fires.
    pub fn open_cancellable(
        &self,
        handle: &tokio::runtime::Handle,
        path: &ObjectPath,
        cancel: &CancellationToken,
    ) -> Result<VerifiedReader> {
        self.open_with(handle, path, cancel)
    }

    /// [`Repository::open_cancellable`] checking the stored bytes and lengths but not the SHA-256
    /// of the plain bytes (only for callers that check every byte they use themselves: the chunks
    /// of a base backup pack, each against its SHA-256), for an object of bounded size, downloaded
    /// whole into memory first (at most its kind's cap) and decoded from there: one read of the
    /// store instead of many small hops between the caller's thread and the runtime, which is
    /// most of a restore's idle time on a local store. Memory: one stored object per caller.
    pub fn open_spooled_checked_by_caller(
        &self,
        handle: &tokio::runtime::Handle,
        path: &ObjectPath,
        cancel: &CancellationToken,
    ) -> Result<VerifiedReader> {
        let key = self.key(path);
        let (expected, raw) = handle.block_on(async {
            tokio::select! {
                spooled = async {
                    let raw = self.get_raw(path).await?;
                    Ok::<_, Error>((self.authenticate_raw(path, &raw).await?, raw))
                } => spooled,
                _ = cancel.cancelled() => Err(Error::Cancelled),
            }
        })?;
        let decoded = start_decoding(&key, Cursor::new(raw), &self.identities, &expected, false)?;
        Ok(VerifiedReader { decoded, key })
    }

    fn open_with(
        &self,
        handle: &tokio::runtime::Handle,
        path: &ObjectPath,
        cancel: &CancellationToken,
    ) -> Result<VerifiedReader> {
        let key = self.key(path);
        let (expected, reader) = handle.block_on(async {
            tokio::select! {
                opened = async {
                    let expected = self.authenticate_stored(path).await?;
                    Ok::<_, Error>((expected, self.store.get(&key).await?))
                } => opened,
                _ = cancel.cancelled() => Err(Error::Cancelled),
            }
        })?;
        let reader = CancellableReader { inner: reader, cancelled: Box::pin(cancel.clone().cancelled_owned()) };
        let bridge = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle.clone());
        let decoded = start_decoding(&key, bridge, &self.identities, &expected, true)?;
        Ok(VerifiedReader { decoded, key })
    }

    /// Reads a whole object and checks it: authenticity, header, stored-bytes checksum and length
    /// always; the plain checksum too when the object can be decoded (not encrypted, or an
    /// identity is given). Streams the object, so memory stays bounded whatever its size.
    pub async fn verify(&self, path: &ObjectPath) -> Result<Verified> {
        let expected = self.authenticate_stored(path).await?;
        let key = self.key(path);
        let reader = self.store.get(&key).await?;
        let identities = self.identities.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            verify_reader(&key, tokio_util::io::SyncIoBridge::new_with_handle(reader, handle), &identities, &expected)
        })
        .await
        .map_err(|e| Error::Encryption(e.to_string()))?
    }

    /// Reads an unsigned (format 1) object through its own checksums, without authenticating it:
    /// only for `adopt_repository`, which records what it read so that later reads can
    /// authenticate it. Returns the header and tail to record, or None for a signed object.
    pub(crate) async fn read_unsigned_for_adoption(
        &self,
        path: &ObjectPath,
    ) -> Result<Option<([u8; HEADER_LEN], Vec<u8>, Trailer, Option<Vec<u8>>)>> {
        let key = self.key(path);
        let info = self
            .store
            .head(&key)
            .await?
            .ok_or_else(|| Error::NotFound { store: self.store.describe(), key: key.clone() })?;
        let corrupt = |reason: String| Error::Corrupt { key: key.clone(), reason };
        let head = self.store.get_range(&key, 0, HEADER_LEN.min(info.size as usize) as u64).await?;
        let header = Header::decode(&head).map_err(&corrupt)?;
        if header.signed() {
            return Ok(None);
        }
        if info.size < (HEADER_LEN + TRAILER_LEN) as u64 {
            return Err(corrupt(format!("it is {} bytes, shorter than an empty object", info.size)));
        }
        let tail = self.store.get_range(&key, info.size - TRAILER_LEN as u64, TRAILER_LEN as u64).await?;
        let tail = Tail::decode(&tail).map_err(&corrupt)?;
        if (HEADER_LEN + TRAILER_LEN) as u64 + tail.trailer.body_len != info.size {
            return Err(corrupt("its size does not match its trailer (truncated or spliced)".into()));
        }
        if tail.trailer.plain_len > path.kind().max_plain_len() {
            return Err(corrupt(format!(
                "it records {} plain bytes, more than its kind may hold",
                tail.trailer.plain_len
            )));
        }
        let header_bytes: [u8; HEADER_LEN] = head[..HEADER_LEN].try_into().expect("decoded");
        let expected = Expected { header: Some(header_bytes), tail: tail.bytes.clone(), trailer: tail.trailer };
        let reader = self.store.get(&key).await?;
        let identities = self.identities.clone();
        let keep = path.kind().class() == ObjectClass::Metadata;
        let handle = tokio::runtime::Handle::current();
        let key_for_thread = key.clone();
        let (trailer, plain) = tokio::task::spawn_blocking(move || -> Result<(Trailer, Option<Vec<u8>>)> {
            let bridge = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle);
            if header.encrypted && identities.is_empty() {
                let (_, trailer) =
                    codec::check_stored_bytes(bridge, &expected).map_err(|e| decode_start_error(&key_for_thread, e))?;
                return Ok((trailer, None));
            }
            let mut decoded = start_decoding(&key_for_thread, bridge, &identities, &expected, true)?;
            let mut plain = Vec::new();
            if keep {
                decoded.read_to_end(&mut plain).map_err(|e| read_error(&key_for_thread, e))?;
            } else {
                std::io::copy(&mut decoded, &mut std::io::sink()).map_err(|e| read_error(&key_for_thread, e))?;
            }
            let trailer = decoded.verified_trailer().expect("end of stream implies verified");
            Ok((trailer, keep.then_some(plain)))
        })
        .await
        .map_err(|e| Error::Encryption(e.to_string()))??;
        Ok(Some((header_bytes, tail.bytes, trailer, plain)))
    }

    /// Whether an object is there, and its size.
    pub async fn head(&self, path: &ObjectPath) -> Result<Option<ObjectInfo>> {
        self.store.head(&self.key(path)).await
    }

    /// Deletes an object (absent is success).
    pub async fn delete(&self, path: &ObjectPath) -> Result<()> {
        self.check_writable(path.as_str())?;
        self.store.delete(&self.key(path)).await
    }

    /// Every object under `prefix`, as a stream, with its path relative to the namespace and,
    /// when it is something backstop writes there, its classified [`ObjectPath`].
    pub fn list(&self, prefix: &Prefix) -> futures::stream::BoxStream<'static, Result<Listed>> {
        use futures::StreamExt;
        let namespace = format!("{}/", self.cluster);
        self.store
            .list(&self.prefix_key(prefix))
            .map(move |item| {
                item.map(|info| {
                    let rel = info.key.strip_prefix(&namespace).unwrap_or(&info.key).to_string();
                    Listed { path: ObjectPath::parse(&rel), rel, size: info.size, last_modified: info.last_modified }
                })
            })
            .boxed()
    }

    /// The names one level below `prefix` that have objects under them, sorted.
    pub async fn list_prefixes(&self, prefix: &Prefix) -> Result<Vec<String>> {
        self.store.list_prefixes(&self.prefix_key(prefix)).await
    }

    /// Deletes an object found by a listing, by its path relative to the namespace (garbage
    /// that [`ObjectPath::parse`] does not classify included).
    pub async fn delete_listed(&self, rel: &str) -> Result<()> {
        crate::store::validate_key(rel)?;
        self.check_writable(rel)?;
        self.store.delete(&format!("{}/{rel}", self.cluster)).await
    }

    /// Fails with [`Error::NamespaceMissing`] unless this namespace's cluster.json exists: the one
    /// proof that "object not found" means "not stored" and not "looking in the wrong place".
    pub async fn check_namespace_visible(&self) -> Result<()> {
        match self.store.head(&self.key(&layout::cluster_file())).await? {
            Some(_) => Ok(()),
            None => Err(Error::NamespaceMissing { store: self.store.describe(), namespace: self.cluster.clone() }),
        }
    }

    pub async fn cluster_file(&self) -> Result<Option<ClusterFile>> {
        let path = layout::cluster_file();
        match self.get_bytes(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::Corrupt {
                key: self.key(&path),
                reason: format!("it is not valid cluster metadata: {e}"),
            }),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// cluster.json for the writers' owner check. A namespace created by backstop 0.2 has an
    /// unsigned one until `adopt_repository` vouches for it; writers keep checking ownership
    /// against it (through its checksums) meanwhile, so archiving does not stop at the upgrade.
    /// This only ever makes a writer refuse or go on: nothing read from it is used otherwise.
    async fn cluster_file_for_owner_check(&self) -> Result<Option<ClusterFile>> {
        let path = layout::cluster_file();
        match self.cluster_file().await {
            Err(Error::Unauthenticated { key, reason }) => match self.read_unsigned_for_adoption(&path).await? {
                Some((_, _, _, Some(plain))) => serde_json::from_slice(&plain).map(Some).map_err(|e| Error::Corrupt {
                    key: self.key(&path),
                    reason: format!("it is not valid cluster metadata: {e}"),
                }),
                _ => Err(Error::Unauthenticated { key, reason }),
            },
            other => other,
        }
    }

    /// Makes sure this namespace belongs to `identity`: creates cluster.json on first use, refuses
    /// a namespace that another cluster already owns. Every writer calls this before writing.
    pub async fn ensure_cluster(&self, identity: &ClusterIdentity) -> Result<ClusterFile> {
        if let Some(existing) = self.cluster_file_for_owner_check().await? {
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
        let path = layout::cluster_file();
        let sign = self.sign_with(&path)?;
        let (encoded, _) = codec::encode_to_vec(&CodecSettings::plain(), &json, Some(&sign))?;
        match self.store.put(&self.key(&path), encoded.into(), WriteMode::CreateNew).await? {
            WriteOutcome::Written => Ok(file),
            // Another writer created it between our read and our write: theirs is authoritative.
            WriteOutcome::AlreadyExists => {
                let existing = self
                    .cluster_file()
                    .await?
                    .ok_or_else(|| Error::NotFound { store: self.store.describe(), key: self.key(&path) })?;
                self.check_owner(existing, identity)
            }
        }
    }

    /// The namespace's owner must be this cluster, and of this major version (0 on either side:
    /// not known, as for `backstop wal push` without a data directory's PG_VERSION).
    fn check_owner(&self, existing: ClusterFile, identity: &ClusterIdentity) -> Result<ClusterFile> {
        if existing.system_identifier(&self.key(&layout::cluster_file()))? != identity.system_identifier {
            return Err(Error::ForeignCluster {
                store: self.describe(),
                expected: identity.system_identifier.to_string(),
                found: existing.system_identifier,
            });
        }
        let (ours, theirs) = (identity.pg_version_num / 10000, existing.pg_version_num / 10000);
        if ours != 0 && theirs != 0 && ours != theirs {
            return Err(Error::ForeignMajorVersion { store: self.describe(), expected: ours, found: theirs });
        }
        Ok(existing)
    }

    /// Proves the repository usable end to end: write, read back and verify, list, delete. Returns
    /// how long the round trip took; an error names the step that failed.
    pub async fn round_trip_check(&self) -> Result<Duration> {
        use futures::TryStreamExt;
        let started = Instant::now();
        let path = layout::probe(rand::random::<u64>());
        let failed = |step: &'static str, reason: String| Error::Probe { store: self.describe(), step, reason };
        let payload = Bytes::from(format!("backstop probe {path}"));
        self.put_bytes(&path, payload.clone(), WriteMode::CreateNew)
            .await
            .map_err(|e| failed("write", e.to_string()))?;
        let read = self.get_bytes(&path).await;
        let listed: Result<Vec<Listed>> = self.list(&layout::probes()).try_collect().await;
        let deleted = self.delete(&path).await;
        match read {
            Err(e) => return Err(failed("read back", e.to_string())),
            Ok(bytes) if bytes != payload => return Err(failed("read back", "different bytes came back".into())),
            Ok(_) => {}
        }
        match listed {
            Err(e) => return Err(failed("list", e.to_string())),
            Ok(objects) if !objects.iter().any(|o| o.path.as_ref() == Some(&path)) => {
                return Err(failed("list", "the object just written was not listed".into()))
            }
            Ok(_) => {}
        }
        deleted.map_err(|e| failed("delete", e.to_string()))?;
        match self.head(&path).await {
            Err(e) => Err(failed("delete", e.to_string())),
            Ok(Some(_)) => Err(failed("delete", "the object is still there after delete".into())),
            Ok(None) => Ok(started.elapsed()),
        }
    }
}

/// The most stored bytes an object of this kind may take: its plain cap plus what compression
/// and encryption may add (zstd and age each add well under 1% plus a header).
fn stored_cap(path: &ObjectPath) -> u64 {
    let plain = path.kind().max_plain_len().min(layout::MAX_IN_MEMORY);
    plain.saturating_add(plain / 64).saturating_add(64 << 10)
}

/// An object a listing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Relative to the namespace.
    pub rel: String,
    /// What it is, when backstop writes objects of that name.
    pub path: Option<ObjectPath>,
    pub size: u64,
    pub last_modified: Option<SystemTime>,
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
    raw: R,
    identities: &[age::x25519::Identity],
    expected: &Expected,
) -> Result<Verified> {
    let header = Header::decode(expected.header.as_ref().map(|h| &h[..]).unwrap_or(&[]))
        .map_err(|reason| Error::Corrupt { key: key.to_string(), reason })?;
    if header.encrypted && identities.is_empty() {
        let (_, trailer) = codec::check_stored_bytes(raw, expected).map_err(|e| decode_start_error(key, e))?;
        return Ok(Verified::StoredBytes(trailer));
    }
    let mut decoded = start_decoding(key, raw, identities, expected, true)?;
    std::io::copy(&mut decoded, &mut std::io::sink()).map_err(|e| read_error(key, e))?;
    Ok(Verified::Contents(decoded.verified_trailer().expect("end of stream implies verified")))
}

fn start_decoding<R: Read + Send + 'static>(
    key: &str,
    raw: R,
    identities: &[age::x25519::Identity],
    expected: &Expected,
    verify_plain: bool,
) -> Result<codec::DecodedReader> {
    let decoded = if verify_plain {
        codec::decode(raw, identities, expected)
    } else {
        codec::decode_contents_checked_by_caller(raw, identities, expected)
    };
    decoded.map_err(|e| decode_start_error(key, e))
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
    path: ObjectPath,
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
        let encoder = std::mem::replace(&mut self.encoder, Encoder::new(&CodecSettings::plain(), None)?);
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
        self.repository.settle(&self.path, outcome, trailer).await
    }

    pub async fn abort(&mut self) {
        if let Some(upload) = self.upload.take() {
            upload.abort().await;
        }
    }
}
