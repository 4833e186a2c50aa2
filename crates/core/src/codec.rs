//! The object codec: every object in a repository is
//!
//! ```text
//! header    (16 bytes, plain)  "BACKSTOP" | format version u16 | compression u8 | encryption u8 | reserved u32
//! body      (streamed)         plain bytes -> zstd (optional) -> age (optional)
//! trailer   (88 bytes, plain)  sha256(plain) | sha256(body) | plain length u64 | body length u64 | "BKSTPEND"
//! signature (120 bytes)        format 2 only: header copy (16) | signer public key (32) | Ed25519 signature (64) | "BKSTPSIG"
//! ```
//!
//! Format 2 objects are signed (see [`crate::auth`]): the signature covers the object's key, the
//! header and the trailer, and the copy of the header lets a reader authenticate an object from its
//! tail alone, before it reads a byte of the body. Format 1 objects (backstop 0.2 and earlier) carry
//! no signature; they are read only once `adopt_repository` recorded them, or by a CLI told to
//! trust an unauthenticated repository.
//!
//! Decoding is crate-private and needs an [`Expected`] tail that the repository authenticated
//! first: no caller outside [`crate::repository`] can decode an object it did not authenticate.
//! The decoder refuses an object whose header or tail differ from the authenticated ones and stops
//! as soon as it produced more plain bytes than the authenticated trailer records (a compression
//! bomb never gets further than the length its signer vouched for).
//!
//! The checksums sit in a trailer because they are only known once a stream ends, and a multi-GB
//! object must never be held in memory to compute them first. They are stored in the clear on purpose:
//! the server holds only age recipients (public keys), so it cannot decrypt an existing object, yet it
//! must tell "already stored with the same bytes" from "different bytes" (design rule 2). The body
//! checksum lets `verify` prove an encrypted object intact without the identity.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::error::Error;

pub const HEADER_LEN: usize = 16;
pub const TRAILER_LEN: usize = 88;
/// The signature block of a format 2 object, after its trailer.
pub const SIGNATURE_LEN: usize = 120;
/// Unsigned objects (backstop 0.2 and earlier).
pub const FORMAT_UNSIGNED: u16 = 1;
/// Signed objects: what every write produces.
pub const FORMAT_VERSION: u16 = 2;
const MAGIC: &[u8; 8] = b"BACKSTOP";
const TRAILER_MAGIC: &[u8; 8] = b"BKSTPEND";
const SIGNATURE_MAGIC: &[u8; 8] = b"BKSTPSIG";
const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_ZSTD: u8 = 1;
const ENCRYPTION_NONE: u8 = 0;
const ENCRYPTION_AGE: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd { level: i32 },
}

impl Compression {
    pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

    pub fn zstd(level: i32) -> Result<Self, Error> {
        let range = zstd::compression_level_range();
        if range.contains(&level) && level != 0 {
            Ok(Compression::Zstd { level })
        } else {
            Err(Error::InvalidSetting {
                setting: "compression_level",
                reason: format!("{level} is outside zstd's levels 1 to {}", range.end()),
            })
        }
    }
}

/// How objects are written. Reading needs no settings: the header says how an object was written.
#[derive(Clone)]
pub struct CodecSettings {
    pub compression: Compression,
    pub recipients: Vec<age::x25519::Recipient>,
}

impl std::fmt::Debug for CodecSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodecSettings")
            .field("compression", &self.compression)
            .field("recipients", &self.recipients.len())
            .finish()
    }
}

impl CodecSettings {
    pub fn plain() -> Self {
        CodecSettings { compression: Compression::None, recipients: Vec::new() }
    }

    pub fn new(compression: Compression, recipients: Vec<age::x25519::Recipient>) -> Self {
        CodecSettings { compression, recipients }
    }

    /// The same settings without encryption: for metadata (cluster.json, manifests) that the server
    /// itself must read back while it holds only public keys.
    pub fn without_encryption(&self) -> Self {
        CodecSettings { compression: self.compression, recipients: Vec::new() }
    }
}

/// The secret half of an age X25519 key pair: what decrypts.
pub type Identity = age::x25519::Identity;

/// Parses a list of age X25519 recipients separated by commas, spaces or newlines.
pub fn parse_recipients(text: &str) -> Result<Vec<age::x25519::Recipient>, Error> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<age::x25519::Recipient>().map_err(|_| Error::InvalidSetting {
                setting: "encryption_recipients",
                reason: format!(
                    "\"{}\" is not an age X25519 recipient (expected a public key like age1qyqszqgp..., as printed by age-keygen -y)",
                    truncate_for_message(part)
                ),
            })
        })
        .collect()
}

/// Parses age X25519 identities (secret keys), one per line, comments allowed, as age-keygen writes them.
pub fn parse_identities(text: &str) -> Result<Vec<age::x25519::Identity>, Error> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            line.parse::<age::x25519::Identity>().map_err(|_| Error::InvalidSetting {
                setting: "identity",
                reason: "a line is not an age X25519 identity (expected AGE-SECRET-KEY-1..., as written by age-keygen)"
                    .into(),
            })
        })
        .collect()
}

/// A new age X25519 identity (secret, as text) and its recipient (public key).
pub fn generate_identity() -> (String, String) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    (identity.to_string().expose_secret().to_string(), identity.to_public().to_string())
}

fn truncate_for_message(text: &str) -> String {
    let mut short: String = text.chars().take(24).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub format_version: u16,
    pub compressed: bool,
    pub encrypted: bool,
}

impl Header {
    fn encode(settings: &CodecSettings, version: u16) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8..10].copy_from_slice(&version.to_le_bytes());
        bytes[10] = match settings.compression {
            Compression::None => COMPRESSION_NONE,
            Compression::Zstd { .. } => COMPRESSION_ZSTD,
        };
        bytes[11] = if settings.recipients.is_empty() { ENCRYPTION_NONE } else { ENCRYPTION_AGE };
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err("it does not start with a backstop object header".into());
        }
        let format_version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if format_version != FORMAT_VERSION && format_version != FORMAT_UNSIGNED {
            return Err(format!(
                "its format version {format_version} is not one this build reads (reads {FORMAT_UNSIGNED} and {FORMAT_VERSION}); upgrade backstop"
            ));
        }
        let compressed = match bytes[10] {
            COMPRESSION_NONE => false,
            COMPRESSION_ZSTD => true,
            other => return Err(format!("unknown compression code {other}")),
        };
        let encrypted = match bytes[11] {
            ENCRYPTION_NONE => false,
            ENCRYPTION_AGE => true,
            other => return Err(format!("unknown encryption code {other}")),
        };
        Ok(Header { format_version, compressed, encrypted })
    }

    pub fn signed(&self) -> bool {
        self.format_version == FORMAT_VERSION
    }

    /// Bytes after the body: the trailer, and the signature block of a signed object.
    pub fn tail_len(&self) -> usize {
        if self.signed() {
            TRAILER_LEN + SIGNATURE_LEN
        } else {
            TRAILER_LEN
        }
    }
}

/// The signature block of a format 2 object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureBlock {
    pub header: [u8; HEADER_LEN],
    pub signer: [u8; 32],
    pub signature: [u8; 64],
}

impl SignatureBlock {
    fn encode(&self) -> [u8; SIGNATURE_LEN] {
        let mut bytes = [0u8; SIGNATURE_LEN];
        bytes[..16].copy_from_slice(&self.header);
        bytes[16..48].copy_from_slice(&self.signer);
        bytes[48..112].copy_from_slice(&self.signature);
        bytes[112..].copy_from_slice(SIGNATURE_MAGIC);
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != SIGNATURE_LEN || &bytes[112..] != SIGNATURE_MAGIC {
            return Err("its signature block is missing (truncated, or not a signed backstop object)".into());
        }
        Ok(SignatureBlock {
            header: bytes[..16].try_into().expect("16 bytes"),
            signer: bytes[16..48].try_into().expect("32 bytes"),
            signature: bytes[48..112].try_into().expect("64 bytes"),
        })
    }
}

/// An object's tail as read from the store: its trailer and, when signed, its signature block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub trailer: Trailer,
    pub signature: Option<SignatureBlock>,
    /// The raw bytes, as stored.
    pub bytes: Vec<u8>,
}

impl Tail {
    /// The format an object has, told by the last bytes of its tail.
    pub fn len_from_end(last8: &[u8]) -> Option<usize> {
        match last8 {
            m if m == SIGNATURE_MAGIC => Some(TRAILER_LEN + SIGNATURE_LEN),
            m if m == TRAILER_MAGIC => Some(TRAILER_LEN),
            _ => None,
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Tail, String> {
        let (trailer, signature) = match bytes.len() {
            TRAILER_LEN => (Trailer::decode(bytes)?, None),
            n if n == TRAILER_LEN + SIGNATURE_LEN => {
                (Trailer::decode(&bytes[..TRAILER_LEN])?, Some(SignatureBlock::decode(&bytes[TRAILER_LEN..])?))
            }
            _ => return Err("its trailer is missing (the object is truncated or not a backstop object)".into()),
        };
        Ok(Tail { trailer, signature, bytes: bytes.to_vec() })
    }

    /// The part of the tail a signature covers (the trailer).
    pub fn trailer_bytes(&self) -> &[u8] {
        &self.bytes[..TRAILER_LEN]
    }
}

/// What the repository authenticated about an object before decoding it: the decoder refuses
/// anything else under the same name (a swapped or spliced object) and any plain byte beyond the
/// authenticated length.
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    /// The header, when it was authenticated (signed objects; for adopted unsigned objects the
    /// trailer's checksums cover everything that matters).
    pub header: Option<[u8; HEADER_LEN]>,
    pub tail: Vec<u8>,
    pub trailer: Trailer,
}

/// Who signs what an [`Encoder`] writes, and under which object key.
#[derive(Clone)]
pub struct SignWith {
    pub key: crate::auth::SigningKey,
    /// The object's full key in the store (`<cluster>/<path>`).
    pub object_key: String,
}

impl std::fmt::Debug for SignWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignWith({:?}, {})", self.key, self.object_key)
    }
}

/// The tail bytes that close an object: its trailer, then (when signing) the signature block.
fn close_tail(header: &[u8; HEADER_LEN], trailer: &Trailer, sign: Option<&SignWith>) -> Vec<u8> {
    let trailer_bytes = trailer.encode();
    let mut tail = trailer_bytes.to_vec();
    if let Some(sign) = sign {
        let message = crate::auth::signed_message(&sign.object_key, header, &trailer_bytes);
        let block = SignatureBlock {
            header: *header,
            signer: sign.key.public().to_bytes(),
            signature: sign.key.sign(&message),
        };
        tail.extend_from_slice(&block.encode());
    }
    tail
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub plain_sha256: [u8; 32],
    pub body_sha256: [u8; 32],
    pub plain_len: u64,
    pub body_len: u64,
}

impl Trailer {
    fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut bytes = [0u8; TRAILER_LEN];
        bytes[..32].copy_from_slice(&self.plain_sha256);
        bytes[32..64].copy_from_slice(&self.body_sha256);
        bytes[64..72].copy_from_slice(&self.plain_len.to_le_bytes());
        bytes[72..80].copy_from_slice(&self.body_len.to_le_bytes());
        bytes[80..].copy_from_slice(TRAILER_MAGIC);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != TRAILER_LEN || &bytes[80..] != TRAILER_MAGIC {
            return Err("its trailer is missing (the object is truncated or not a backstop object)".into());
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Ok(Trailer {
            plain_sha256: bytes[..32].try_into().expect("32 bytes"),
            body_sha256: bytes[32..64].try_into().expect("32 bytes"),
            plain_len: u64_at(64),
            body_len: u64_at(72),
        })
    }

    pub fn plain_sha256_hex(&self) -> String {
        hex::encode(self.plain_sha256)
    }

    /// Size of the whole stored (signed) object this trailer closes.
    pub fn object_len(&self) -> u64 {
        (HEADER_LEN + TRAILER_LEN + SIGNATURE_LEN) as u64 + self.body_len
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

#[derive(Default)]
struct SinkState {
    out: Vec<u8>,
    body_hasher: Sha256,
    body_len: u64,
}

/// The innermost writer of the encoding chain: collects encoded body bytes and hashes them.
/// Shared with the encoder so output can be drained while the compressor and cipher keep state.
#[derive(Clone, Default)]
struct BodySink(Arc<Mutex<SinkState>>);

impl Write for BodySink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut state = self.0.lock().expect("sink lock");
        state.body_hasher.update(data);
        state.body_len += data.len() as u64;
        state.out.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Stage {
    Raw(BodySink),
    Zstd(zstd::stream::write::Encoder<'static, BodySink>),
    Age(age::stream::StreamWriter<BodySink>),
    ZstdAge(zstd::stream::write::Encoder<'static, age::stream::StreamWriter<BodySink>>),
}

fn zstd_encoder<W: Write>(level: i32, inner: W) -> Result<zstd::stream::write::Encoder<'static, W>, Error> {
    zstd::stream::write::Encoder::new(inner, level).map_err(|e| Error::Encryption(format!("cannot start zstd: {e}")))
}

/// Encodes one object incrementally: feed plain bytes with [`Encoder::write`], drain encoded bytes
/// with [`Encoder::take_output`] whenever convenient, close with [`Encoder::finish`]. Memory is bounded
/// by what the caller leaves undrained plus the compressor's window.
pub struct Encoder {
    stage: Stage,
    sink: BodySink,
    plain_hasher: Sha256,
    plain_len: u64,
    header: [u8; HEADER_LEN],
    sign: Option<SignWith>,
}

impl Encoder {
    /// `sign`: the key and object key to sign with (format 2); None writes an unsigned format 1
    /// object, which only tests and fixtures of older releases do.
    pub fn new(settings: &CodecSettings, sign: Option<SignWith>) -> Result<Self, Error> {
        let sink = BodySink::default();
        let header = Header::encode(settings, if sign.is_some() { FORMAT_VERSION } else { FORMAT_UNSIGNED });
        sink.0.lock().expect("sink lock").out.extend_from_slice(&header);
        let encrypt = |sink: BodySink| -> Result<age::stream::StreamWriter<BodySink>, Error> {
            let recipients = settings.recipients.iter().map(|r| r as &dyn age::Recipient);
            age::Encryptor::with_recipients(recipients)
                .map_err(|e| Error::Encryption(e.to_string()))?
                .wrap_output(sink)
                .map_err(|e| Error::Encryption(e.to_string()))
        };
        let stage = match (settings.compression, settings.recipients.is_empty()) {
            (Compression::None, true) => Stage::Raw(sink.clone()),
            (Compression::Zstd { level }, true) => Stage::Zstd(zstd_encoder(level, sink.clone())?),
            (Compression::None, false) => Stage::Age(encrypt(sink.clone())?),
            (Compression::Zstd { level }, false) => Stage::ZstdAge(zstd_encoder(level, encrypt(sink.clone())?)?),
        };
        Ok(Encoder { stage, sink, plain_hasher: Sha256::new(), plain_len: 0, header, sign })
    }

    pub fn write(&mut self, plain: &[u8]) -> io::Result<()> {
        self.plain_hasher.update(plain);
        self.plain_len += plain.len() as u64;
        match &mut self.stage {
            Stage::Raw(w) => w.write_all(plain),
            Stage::Zstd(w) => w.write_all(plain),
            Stage::Age(w) => w.write_all(plain),
            Stage::ZstdAge(w) => w.write_all(plain),
        }
    }

    /// Encoded bytes produced so far and not yet taken.
    pub fn pending(&self) -> usize {
        self.sink.0.lock().expect("sink lock").out.len()
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.sink.0.lock().expect("sink lock").out)
    }

    /// Flushes the compressor and cipher and appends the trailer. Returns the remaining encoded bytes
    /// and the trailer that describes the whole object.
    pub fn finish(self) -> io::Result<(Vec<u8>, Trailer)> {
        match self.stage {
            Stage::Raw(_) => {}
            Stage::Zstd(w) => {
                w.finish()?;
            }
            Stage::Age(w) => {
                w.finish()?;
            }
            Stage::ZstdAge(w) => {
                w.finish()?.finish()?;
            }
        }
        let mut state = self.sink.0.lock().expect("sink lock");
        let trailer = Trailer {
            plain_sha256: self.plain_hasher.finalize().into(),
            body_sha256: std::mem::take(&mut state.body_hasher).finalize().into(),
            plain_len: self.plain_len,
            body_len: state.body_len,
        };
        let mut out = std::mem::take(&mut state.out);
        out.extend_from_slice(&close_tail(&self.header, &trailer, self.sign.as_ref()));
        Ok((out, trailer))
    }
}

/// Encodes a whole in-memory object at once (WAL segments, manifests). Produces the same format as
/// [`Encoder`], in one pass per stage: the archiver's hot path, where every millisecond of CPU per
/// segment is throughput lost.
pub fn encode_to_vec(
    settings: &CodecSettings,
    plain: &[u8],
    sign: Option<&SignWith>,
) -> Result<(Vec<u8>, Trailer), Error> {
    let failed = |e: io::Error| Error::Encryption(e.to_string());
    let compressed: std::borrow::Cow<[u8]> = match settings.compression {
        Compression::None => std::borrow::Cow::Borrowed(plain),
        Compression::Zstd { level } => std::borrow::Cow::Owned(zstd::bulk::compress(plain, level).map_err(failed)?),
    };
    let body: std::borrow::Cow<[u8]> = if settings.recipients.is_empty() {
        compressed
    } else {
        let recipients = settings.recipients.iter().map(|r| r as &dyn age::Recipient);
        let encryptor = age::Encryptor::with_recipients(recipients).map_err(|e| Error::Encryption(e.to_string()))?;
        let mut encrypted = Vec::with_capacity(compressed.len() + compressed.len() / 1000 + 512);
        let mut writer = encryptor.wrap_output(&mut encrypted).map_err(failed)?;
        writer.write_all(&compressed).map_err(failed)?;
        writer.finish().map_err(failed)?;
        std::borrow::Cow::Owned(encrypted)
    };
    let trailer = Trailer {
        plain_sha256: Sha256::digest(plain).into(),
        body_sha256: Sha256::digest(&body).into(),
        plain_len: plain.len() as u64,
        body_len: body.len() as u64,
    };
    let header = Header::encode(settings, if sign.is_some() { FORMAT_VERSION } else { FORMAT_UNSIGNED });
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TRAILER_LEN + SIGNATURE_LEN);
    out.extend_from_slice(&header);
    out.extend_from_slice(&body);
    out.extend_from_slice(&close_tail(&header, &trailer, sign));
    Ok((out, trailer))
}

/// Encodes through the streaming [`Encoder`], in pieces of `piece` bytes.
pub fn encode_streaming(
    settings: &CodecSettings,
    plain: &[u8],
    piece: usize,
    sign: Option<SignWith>,
) -> Result<(Vec<u8>, Trailer), Error> {
    let mut encoder = Encoder::new(settings, sign)?;
    let mut out = Vec::new();
    for chunk in plain.chunks(piece.max(1)) {
        encoder.write(chunk).map_err(|e| Error::Encryption(e.to_string()))?;
        out.append(&mut encoder.take_output());
    }
    let (rest, trailer) = encoder.finish().map_err(|e| Error::Encryption(e.to_string()))?;
    out.extend_from_slice(&rest);
    Ok((out, trailer))
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Why a decoded stream was refused; carried inside `io::Error` so it survives `Read` adapters.
#[derive(Debug)]
pub struct IntegrityError(pub String);

impl std::fmt::Display for IntegrityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IntegrityError {}

/// A failure of the reader underneath the decoder (network, disk), as opposed to bytes that do not
/// decode; carried inside `io::Error` so the two can be told apart after the decoders.
#[derive(Debug)]
pub struct SourceError(pub io::Error);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {}

/// True when this error came from reading the stored bytes, not from decoding them.
pub fn is_source_error(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<SourceError>())
}

fn integrity(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, IntegrityError(reason.into()))
}

#[derive(Default)]
struct BodyOutcome {
    trailer: Option<Trailer>,
    finished: bool,
}

/// Yields the body of an object while holding back its tail (trailer and signature block), so
/// that at end of stream the tail is known, compared with the authenticated one, and the body
/// checksum compared with its trailer.
struct BodyReader<R> {
    inner: R,
    buffer: Vec<u8>,
    start: usize,
    inner_done: bool,
    hasher: Sha256,
    len: u64,
    tail_len: usize,
    expected_tail: Vec<u8>,
    outcome: Arc<Mutex<BodyOutcome>>,
}

const READ_CHUNK: usize = 256 * 1024;

impl<R: Read> BodyReader<R> {
    fn available(&self) -> usize {
        (self.buffer.len() - self.start).saturating_sub(self.tail_len)
    }

    fn fill(&mut self) -> io::Result<()> {
        while !self.inner_done && self.available() == 0 {
            if self.start > 0 {
                self.buffer.drain(..self.start);
                self.start = 0;
            }
            let old_len = self.buffer.len();
            self.buffer.resize(old_len + READ_CHUNK, 0);
            let read = loop {
                match self.inner.read(&mut self.buffer[old_len..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.buffer.truncate(old_len);
                        return Err(io::Error::new(e.kind(), SourceError(e)));
                    }
                }
            };
            self.buffer.truncate(old_len + read);
            if read == 0 {
                self.inner_done = true;
            }
        }
        Ok(())
    }

    fn close(&mut self) -> io::Result<()> {
        let mut outcome = self.outcome.lock().expect("outcome lock");
        if outcome.finished {
            return Ok(());
        }
        let tail = Tail::decode(&self.buffer[self.start..]).map_err(integrity)?;
        if tail.bytes != self.expected_tail {
            return Err(integrity(
                "its tail is not the one authenticated before it was read (replaced or spliced while being read)",
            ));
        }
        let trailer = tail.trailer;
        let body_sha256: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if trailer.body_len != self.len {
            return Err(integrity(format!(
                "its body is {} bytes but its trailer records {} (truncated or spliced)",
                self.len, trailer.body_len
            )));
        }
        if trailer.body_sha256 != body_sha256 {
            return Err(integrity(format!(
                "sha256 of the stored bytes is {} but the object records {}",
                hex::encode(body_sha256),
                hex::encode(trailer.body_sha256)
            )));
        }
        outcome.trailer = Some(trailer);
        outcome.finished = true;
        Ok(())
    }
}

impl<R: Read> Read for BodyReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        self.fill()?;
        let n = self.available().min(out.len());
        if n == 0 {
            self.close()?;
            return Ok(0);
        }
        out[..n].copy_from_slice(&self.buffer[self.start..self.start + n]);
        self.hasher.update(&out[..n]);
        self.len += n as u64;
        self.start += n;
        Ok(n)
    }
}

/// The plain bytes of an object. Reaching end of stream (`Ok(0)`) means both checksums and both
/// lengths matched the trailer; any mismatch is an `InvalidData` error carrying [`IntegrityError`].
pub struct DecodedReader {
    inner: Box<dyn Read + Send>,
    /// The stored body under the decoders, shared so that a decoder error can be diagnosed by
    /// reading the rest of the stored bytes through their checksum (see [`DecodedReader::read`]).
    body: SharedBody,
    outcome: Arc<Mutex<BodyOutcome>>,
    /// None when the caller checks the plain bytes itself (see [`decode_contents_checked_by_caller`]).
    hasher: Option<Sha256>,
    len: u64,
    /// The authenticated plain length: not one byte more is ever produced.
    max_len: u64,
    verified: Option<Trailer>,
    pub header: Header,
}

impl DecodedReader {
    /// The trailer, once the whole object has been read and verified.
    pub fn verified_trailer(&self) -> Option<Trailer> {
        self.verified
    }
}

/// The stored body, read by the decoders through [`SharedBody`]'s `Read` and, after a decoder
/// failed, drained by [`DecodedReader`] to check the stored-bytes checksum.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Box<dyn Read + Send>>>);

impl Read for SharedBody {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.0.lock().expect("body lock").read(out)
    }
}

impl DecodedReader {
    /// A decoder failed on bytes it could not make sense of. Those bytes were either damaged
    /// after they were stored or written damaged, and the stored-bytes checksum tells which:
    /// read the rest of the body through it and report its mismatch when there is one. Without
    /// this, whether a flipped byte is reported as "does not decode" or as a checksum mismatch
    /// would depend on where it fell.
    fn diagnose(&mut self, error: io::Error) -> io::Error {
        if integrity_reason(&error).is_some() || is_source_error(&error) {
            return error;
        }
        match io::copy(&mut self.body.clone(), &mut io::sink()) {
            Err(stored) if integrity_reason(&stored).is_some() => stored,
            _ => error,
        }
    }
}

impl Read for DecodedReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.verified.is_some() {
            return Ok(0);
        }
        let n = match self.inner.read(out) {
            Ok(n) => n,
            Err(e) => return Err(self.diagnose(e)),
        };
        if n > 0 {
            if self.len + n as u64 > self.max_len {
                return Err(integrity(format!(
                    "it decodes to more than the {} bytes its authenticated trailer records",
                    self.max_len
                )));
            }
            if let Some(hasher) = self.hasher.as_mut() {
                hasher.update(&out[..n]);
            }
            self.len += n as u64;
            return Ok(n);
        }
        // The decoders stop at the end of their own framing; make sure the body really ended there.
        let mut rest = [0u8; 1];
        let more = match self.inner.read(&mut rest) {
            Ok(n) => n,
            Err(e) => return Err(self.diagnose(e)),
        };
        if more != 0 {
            return Err(integrity("it has data after the end of its compressed or encrypted stream"));
        }
        let outcome = self.outcome.lock().expect("outcome lock");
        let Some(trailer) = outcome.trailer.filter(|_| outcome.finished) else {
            return Err(integrity("its body ended before the end of the stored object"));
        };
        if trailer.plain_len != self.len {
            return Err(integrity(format!("it decodes to {} bytes but records {}", self.len, trailer.plain_len)));
        }
        let plain_sha256: Option<[u8; 32]> = self.hasher.take().map(|h| h.finalize().into());
        if plain_sha256.is_some_and(|sha| sha != trailer.plain_sha256) {
            let plain_sha256 = plain_sha256.expect("checked");
            return Err(integrity(format!(
                "sha256 of its contents is {} but the object records {}",
                hex::encode(plain_sha256),
                trailer.plain_sha256_hex()
            )));
        }
        drop(outcome);
        self.verified = Some(trailer);
        Ok(0)
    }
}

/// Why decoding could not even start.
#[derive(Debug)]
pub enum DecodeStartError {
    Corrupt(String),
    NoIdentity,
    WrongIdentity,
    Io(io::Error),
}

/// Reads and checks an object's header against the authenticated one; the rest is its body, read
/// with the tail held back.
#[allow(clippy::type_complexity)]
fn start_body<R: Read>(
    mut raw: R,
    expected: &Expected,
) -> Result<(Header, BodyReader<R>, Arc<Mutex<BodyOutcome>>), DecodeStartError> {
    let mut header_bytes = [0u8; HEADER_LEN];
    if let Err(e) = raw.read_exact(&mut header_bytes) {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            DecodeStartError::Corrupt("it is shorter than an object header".into())
        } else {
            DecodeStartError::Io(e)
        });
    }
    let header = Header::decode(&header_bytes).map_err(DecodeStartError::Corrupt)?;
    if expected.header.is_some_and(|h| h != header_bytes) || header.tail_len() != expected.tail.len() {
        return Err(DecodeStartError::Corrupt(
            "its header is not the one authenticated before it was read (replaced while being read?)".into(),
        ));
    }
    let outcome = Arc::new(Mutex::new(BodyOutcome::default()));
    let body = BodyReader {
        inner: raw,
        buffer: Vec::new(),
        start: 0,
        inner_done: false,
        hasher: Sha256::new(),
        len: 0,
        tail_len: header.tail_len(),
        expected_tail: expected.tail.clone(),
        outcome: outcome.clone(),
    };
    Ok((header, body, outcome))
}

/// Starts decoding a stored object whose tail the repository authenticated. `identities` are
/// needed only for encrypted objects.
pub(crate) fn decode<R: Read + Send + 'static>(
    raw: R,
    identities: &[age::x25519::Identity],
    expected: &Expected,
) -> Result<DecodedReader, DecodeStartError> {
    decode_with(raw, identities, expected, true)
}

/// Like [`decode`], but checks only the stored bytes (their SHA-256 and length) and the plain
/// length, not the SHA-256 of the plain bytes: for callers that check every plain byte they use
/// against checksums of their own, so a second full hash would only cost time. Packs of base
/// backups are read this way: every chunk is checked against its SHA-256 before it is written.
pub(crate) fn decode_contents_checked_by_caller<R: Read + Send + 'static>(
    raw: R,
    identities: &[age::x25519::Identity],
    expected: &Expected,
) -> Result<DecodedReader, DecodeStartError> {
    decode_with(raw, identities, expected, false)
}

fn decode_with<R: Read + Send + 'static>(
    raw: R,
    identities: &[age::x25519::Identity],
    expected: &Expected,
    verify_plain: bool,
) -> Result<DecodedReader, DecodeStartError> {
    let (header, body, outcome) = start_body(raw, expected)?;
    let shared = SharedBody(Arc::new(Mutex::new(Box::new(body))));
    let body = shared.clone();
    let decrypted: Box<dyn Read + Send> = if header.encrypted {
        let diagnose = |error: DecodeStartError| diagnose_start(&shared, error);
        if identities.is_empty() {
            return Err(DecodeStartError::NoIdentity);
        }
        let decryptor = age::Decryptor::new(body)
            .map_err(|e| match e {
                age::DecryptError::Io(io) => DecodeStartError::Io(io),
                other => DecodeStartError::Corrupt(format!("its age header is invalid: {other}")),
            })
            .map_err(diagnose)?;
        let identities = identities.iter().map(|i| i as &dyn age::Identity);
        Box::new(
            decryptor
                .decrypt(identities)
                .map_err(|e| match e {
                    age::DecryptError::NoMatchingKeys => DecodeStartError::WrongIdentity,
                    age::DecryptError::Io(io) => DecodeStartError::Io(io),
                    other => DecodeStartError::Corrupt(format!("its age header is invalid: {other}")),
                })
                .map_err(diagnose)?,
        )
    } else {
        Box::new(body)
    };
    let plain: Box<dyn Read + Send> = if header.compressed {
        Box::new(zstd::stream::read::Decoder::new(decrypted).map_err(DecodeStartError::Io)?)
    } else {
        decrypted
    };
    let hasher = verify_plain.then(Sha256::new);
    let max_len = expected.trailer.plain_len;
    Ok(DecodedReader { inner: plain, body: shared, outcome, hasher, len: 0, max_len, verified: None, header })
}

/// An age header that does not parse (or whose MAC fails) may be a damaged stored byte: read the
/// rest of the body through its checksum and report that mismatch when there is one, as
/// [`DecodedReader`] does for errors of the decoders. "No identity matches" is checked too: a
/// damaged recipient stanza looks like a wrong key, and sending a DBA to hunt for another key
/// when the object is damaged wastes the night.
fn diagnose_start(body: &SharedBody, error: DecodeStartError) -> DecodeStartError {
    if !matches!(error, DecodeStartError::Corrupt(_) | DecodeStartError::WrongIdentity) {
        return error;
    }
    match io::copy(&mut body.clone(), &mut io::sink()) {
        Err(stored) => integrity_reason(&stored).map(DecodeStartError::Corrupt).unwrap_or(error),
        Ok(_) => error,
    }
}

/// Reads an object's stored bytes through without decoding them, for encrypted objects whose
/// identity is not at hand: checks the header, the stored-bytes checksum and the length. Streams,
/// so memory stays bounded whatever the object size.
pub(crate) fn check_stored_bytes<R: Read>(raw: R, expected: &Expected) -> Result<(Header, Trailer), DecodeStartError> {
    let (header, mut body, outcome) = start_body(raw, expected)?;
    io::copy(&mut body, &mut io::sink()).map_err(|e| match integrity_reason(&e) {
        Some(reason) => DecodeStartError::Corrupt(reason),
        None => DecodeStartError::Io(e),
    })?;
    let trailer = outcome.lock().expect("outcome lock").trailer;
    trailer.map(|t| (header, t)).ok_or_else(|| DecodeStartError::Corrupt("its trailer is missing".into()))
}

/// Returns the integrity reason if this I/O error came from a failed verification.
pub fn integrity_reason(error: &io::Error) -> Option<String> {
    error.get_ref().and_then(|inner| inner.downcast_ref::<IntegrityError>()).map(|e| e.0.clone())
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Half compressible, half pseudo-random, so both compressor paths see real work.
        let mut state = 0x9E3779B97F4A7C15u64;
        (0..len)
            .map(|i| {
                if i % 2 == 0 {
                    (i / 7) as u8
                } else {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                }
            })
            .collect()
    }

    fn all_settings() -> Vec<(CodecSettings, Vec<age::x25519::Identity>)> {
        let identity = age::x25519::Identity::generate();
        vec![
            (CodecSettings::plain(), vec![]),
            (CodecSettings::new(Compression::zstd(3).unwrap(), vec![]), vec![]),
            (CodecSettings::new(Compression::None, vec![identity.to_public()]), vec![identity.clone()]),
            (CodecSettings::new(Compression::zstd(1).unwrap(), vec![identity.to_public()]), vec![identity]),
        ]
    }

    fn signer() -> SignWith {
        static KEY: std::sync::OnceLock<crate::auth::SigningKey> = std::sync::OnceLock::new();
        SignWith { key: KEY.get_or_init(crate::auth::SigningKey::generate).clone(), object_key: "c/object".into() }
    }

    fn enc(settings: &CodecSettings, plain: &[u8]) -> (Vec<u8>, Trailer) {
        encode_to_vec(settings, plain, Some(&signer())).unwrap()
    }

    /// What the repository would have authenticated: the header and tail of the intact object.
    fn expected_of(encoded: &[u8]) -> Expected {
        let header = Header::decode(encoded).unwrap();
        let tail = Tail::decode(&encoded[encoded.len() - header.tail_len()..]).unwrap();
        Expected { header: Some(encoded[..HEADER_LEN].try_into().unwrap()), trailer: tail.trailer, tail: tail.bytes }
    }

    fn decode_all(bytes: Vec<u8>, identities: &[age::x25519::Identity]) -> io::Result<Vec<u8>> {
        let expected = expected_of(&bytes);
        decode_expecting(bytes, identities, &expected)
    }

    fn decode_expecting(
        bytes: Vec<u8>,
        identities: &[age::x25519::Identity],
        expected: &Expected,
    ) -> io::Result<Vec<u8>> {
        let mut reader =
            decode(io::Cursor::new(bytes), identities, expected).map_err(|e| io::Error::other(format!("{e:?}")))?;
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        assert!(reader.verified_trailer().is_some());
        Ok(out)
    }

    #[test]
    fn decoding_checked_by_the_caller_still_refuses_damaged_stored_bytes() {
        for (settings, identities) in all_settings() {
            let plain = sample(300_000);
            let (encoded, _) = enc(&settings, &plain);
            let expected = expected_of(&encoded);
            let read = |bytes: Vec<u8>| -> io::Result<Vec<u8>> {
                let mut reader = decode_contents_checked_by_caller(io::Cursor::new(bytes), &identities, &expected)
                    .map_err(|e| io::Error::other(format!("{e:?}")))?;
                let mut out = Vec::new();
                reader.read_to_end(&mut out)?;
                Ok(out)
            };
            assert!(read(encoded.clone()).unwrap() == plain, "{settings:?}");
            for at in [HEADER_LEN + 10, encoded.len() / 2, encoded.len() - TRAILER_LEN - 1] {
                let mut damaged = encoded.clone();
                damaged[at] ^= 0x01;
                assert!(read(damaged).is_err(), "{settings:?}: a flipped byte at {at} is refused");
            }
        }
    }

    #[test]
    fn round_trips_every_setting_and_awkward_size() {
        // Sizes around age's 64 KiB chunks and the reader's buffer, where off-by-one bugs live.
        for (settings, identities) in all_settings() {
            for len in [0usize, 1, 87, 88, 89, 65_535, 65_536, 65_537, 131_072, 262_144, 1_000_003] {
                let plain = sample(len);
                let whole = enc(&settings, &plain);
                let streamed = encode_streaming(&settings, &plain, 10_000, Some(signer())).unwrap();
                for (how, (encoded, trailer)) in [("whole", whole), ("streamed", streamed)] {
                    assert_eq!(trailer.plain_len, len as u64);
                    assert_eq!(trailer.object_len(), encoded.len() as u64);
                    assert_eq!(trailer.plain_sha256_hex(), sha256_hex(&plain));
                    let decoded = decode_all(encoded, &identities).unwrap();
                    assert!(decoded == plain, "{how} {settings:?} len {len}");
                }
            }
        }
    }

    #[test]
    fn zstd_actually_compresses() {
        let plain = vec![7u8; 4 << 20];
        let (encoded, _) = enc(&CodecSettings::new(Compression::zstd(3).unwrap(), vec![]), &plain);
        assert!(encoded.len() < plain.len() / 100, "{}", encoded.len());
    }

    #[test]
    fn both_encoders_agree_on_everything_but_random_encryption() {
        let plain = sample(300_000);
        let settings = CodecSettings::new(Compression::zstd(3).unwrap(), vec![]);
        let (whole, whole_trailer) = enc(&settings, &plain);
        let (streamed, streamed_trailer) = encode_streaming(&settings, &plain, 4096, Some(signer())).unwrap();
        assert_eq!(whole_trailer.plain_sha256, streamed_trailer.plain_sha256);
        assert_eq!(whole[..HEADER_LEN], streamed[..HEADER_LEN], "same header");
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        for (settings, identities) in all_settings() {
            let plain = sample(5000);
            let (encoded, _) = encode_streaming(&settings, &plain, 1000, Some(signer())).unwrap();
            let expected = expected_of(&encoded);
            for position in (0..encoded.len()).step_by(97).chain([encoded.len() - 1, HEADER_LEN]) {
                let mut corrupt = encoded.clone();
                corrupt[position] ^= 0x20;
                let result = decode(io::Cursor::new(corrupt), &identities, &expected)
                    .map_err(|e| format!("{e:?}"))
                    .and_then(|mut r| {
                        let mut out = Vec::new();
                        r.read_to_end(&mut out).map(|_| out).map_err(|e| e.to_string())
                    });
                let Err(reason) = result else { panic!("{settings:?}: flipping byte {position} went unnoticed") };
                // A flip inside the body (not the header, not the trailer) is damage to the stored
                // bytes, and the error says so whichever decoder trips over it first.
                if (HEADER_LEN..encoded.len() - TRAILER_LEN - SIGNATURE_LEN).contains(&position) {
                    assert!(reason.contains("sha256 of the stored bytes"), "{settings:?} at {position}: {reason}");
                }
            }
        }
    }

    #[test]
    fn truncation_is_refused() {
        for (settings, identities) in all_settings() {
            let (encoded, _) = enc(&settings, &sample(200_000));
            let expected = expected_of(&encoded);
            for cut in [1usize, TRAILER_LEN, TRAILER_LEN + 1, SIGNATURE_LEN, 70_000, encoded.len() - HEADER_LEN] {
                let truncated = encoded[..encoded.len() - cut].to_vec();
                assert!(decode_expecting(truncated, &identities, &expected).is_err(), "{settings:?} cut {cut}");
            }
        }
    }

    #[test]
    fn integrity_failures_are_recognisable() {
        let (mut encoded, _) = enc(&CodecSettings::plain(), b"hello world");
        let expected = expected_of(&encoded);
        encoded[HEADER_LEN] ^= 1;
        let error = decode_expecting(encoded, &[], &expected).unwrap_err();
        let reason = integrity_reason(&error).expect("integrity error");
        assert!(reason.contains("sha256"), "{reason}");
    }

    #[test]
    fn wrong_or_missing_identity_is_named() {
        let identity = age::x25519::Identity::generate();
        let settings = CodecSettings::new(Compression::None, vec![identity.to_public()]);
        let (encoded, _) = enc(&settings, b"secret");
        let expected = expected_of(&encoded);
        let other = age::x25519::Identity::generate();
        assert!(matches!(
            decode(io::Cursor::new(encoded.clone()), &[other], &expected),
            Err(DecodeStartError::WrongIdentity)
        ));
        assert!(matches!(decode(io::Cursor::new(encoded), &[], &expected), Err(DecodeStartError::NoIdentity)));
    }

    #[test]
    fn encrypted_body_does_not_contain_the_plaintext() {
        let identity = age::x25519::Identity::generate();
        let settings = CodecSettings::new(Compression::None, vec![identity.to_public()]);
        let secret = b"credit card 4111 1111 1111 1111";
        let (encoded, _) = enc(&settings, secret);
        assert!(!encoded.windows(secret.len()).any(|w| w == secret));
    }

    #[test]
    fn recipients_are_validated_with_a_useful_message() {
        let identity = age::x25519::Identity::generate();
        let public = identity.to_public().to_string();
        assert_eq!(parse_recipients(&format!("{public}, {public}\n")).unwrap().len(), 2);
        let message = parse_recipients("age1notakey").unwrap_err().to_string();
        assert!(message.contains("encryption_recipients") && message.contains("age-keygen"), "{message}");
    }

    #[test]
    fn unknown_format_version_is_refused_with_upgrade_hint() {
        let (mut encoded, _) = enc(&CodecSettings::plain(), b"x");
        let mut expected = expected_of(&encoded);
        encoded[8] = 9;
        expected.header = None;
        match decode(io::Cursor::new(encoded), &[], &expected) {
            Err(DecodeStartError::Corrupt(reason)) => assert!(reason.contains("upgrade backstop"), "{reason}"),
            other => panic!("unexpected {:?}", other.err()),
        }
    }

    #[test]
    fn signed_objects_name_their_signer_and_unsigned_ones_are_format_1() {
        let (signed, trailer) = enc(&CodecSettings::plain(), b"wal bytes");
        let header = Header::decode(&signed).unwrap();
        assert!(header.signed());
        let tail = Tail::decode(&signed[signed.len() - header.tail_len()..]).unwrap();
        assert_eq!(tail.trailer, trailer);
        let block = tail.signature.unwrap();
        assert_eq!(block.signer, signer().key.public().to_bytes());
        assert_eq!(&block.header[..], &signed[..HEADER_LEN], "the tail carries the header it was signed with");
        let message = crate::auth::signed_message("c/object", &block.header, tail.trailer_bytes());
        let trust = crate::auth::Trust::new([signer().key.public()]);
        assert!(trust.check(&message, &block.signer, &block.signature).is_ok());
        assert_eq!(Tail::len_from_end(&signed[signed.len() - 8..]), Some(TRAILER_LEN + SIGNATURE_LEN));
        let (unsigned, _) = encode_to_vec(&CodecSettings::plain(), b"old", None).unwrap();
        assert!(!Header::decode(&unsigned).unwrap().signed());
        assert_eq!(Tail::len_from_end(&unsigned[unsigned.len() - 8..]), Some(TRAILER_LEN));
    }

    #[test]
    fn nothing_beyond_the_authenticated_length_is_ever_produced() {
        // A compressed body that inflates to far more than the trailer it was authenticated with.
        let bomb = vec![0u8; 64 << 20];
        let (encoded, _) = enc(&CodecSettings::new(Compression::zstd(3).unwrap(), vec![]), &bomb);
        let mut expected = expected_of(&encoded);
        expected.trailer.plain_len = 1 << 20;
        let mut reader = decode(io::Cursor::new(encoded), &[], &expected).unwrap();
        let mut produced = 0usize;
        let mut buffer = vec![0u8; 64 << 10];
        let error = loop {
            match reader.read(&mut buffer) {
                Ok(0) => panic!("a bomb decoded to its end"),
                Ok(n) => produced += n,
                Err(e) => break e,
            }
        };
        assert!(produced <= 1 << 20, "{produced}");
        assert!(integrity_reason(&error).unwrap().contains("more than"), "{error}");
    }

    #[test]
    fn an_object_swapped_for_another_genuine_one_is_refused() {
        let (first, _) = enc(&CodecSettings::plain(), b"first");
        let (second, _) = enc(&CodecSettings::plain(), b"second");
        let error = decode_expecting(second, &[], &expected_of(&first)).unwrap_err();
        assert!(integrity_reason(&error).unwrap().contains("authenticated"), "{error}");
    }
}
