//! Who wrote an object: Ed25519 signatures over every object the repository holds.
//!
//! Whoever can write the bucket can write any bytes under any name, so checksums prove nothing
//! about *who* stored an object. Every object backstop writes is signed with the cluster's
//! signing key; every read refuses an object whose signature is not from a trusted public key.
//! The verifier needs no secret: a recovery host holds only public keys.
//!
//! What a signature covers (see [`signed_message`]): the object's full key in the store's
//! namespace (`<cluster>/<path>`, so a genuine object copied to another name or namespace is
//! refused), its header and its trailer, which holds the SHA-256 and length of both the stored
//! and the plain bytes. The reader checks the bytes against the trailer, so signing the trailer
//! signs the bytes.
//!
//! Invariants:
//! - The private key lives only in the data directory ([`SIGNING_KEY_FILE`], mode 0600), is never
//!   written to the repository and is left out of base backups; a restored copy of a cluster signs
//!   with a key of its own, which production does not trust.
//! - The key file is created once, create-if-absent (`link(2)` of an fsynced temporary file): two
//!   processes creating it at once end up with the same key.
//! - Accepting an unauthenticated object is a property of a [`Trust`] built with
//!   [`Trust::accept_unauthenticated`]; only the CLI, on an explicit flag, builds one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, Verifier};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The signing key's file in the data directory.
pub const SIGNING_KEY_FILE: &str = "backstop_signing.key";
/// The prefix of a public key's text form.
pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";
const SECRET_HEADER: &str = "# backstop signing key: keep this file private; its public key is ";
const DOMAIN: &[u8] = b"backstop object signature v1\0";

/// The public half of a signing key: what a verifier trusts. Text form `ed25519:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes).ok().map(PublicKey)
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// A short id for messages: the first 16 hex digits of the key.
    pub fn id(&self) -> String {
        hex::encode(&self.to_bytes()[..8])
    }

    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidSetting {
            setting: "trusted_keys",
            reason: format!(
                "\"{}\" is not a backstop public key (expected ed25519: and 64 hex digits, as backstop.repository_key() shows)",
                text.chars().take(80).collect::<String>().escape_debug()
            ),
        }
        };
        let hex_part = text.trim().strip_prefix(PUBLIC_KEY_PREFIX).ok_or_else(bad)?;
        let bytes: [u8; 32] = hex::decode(hex_part).ok().and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
        PublicKey::from_bytes(&bytes).ok_or_else(bad)
    }

    /// Parses a list separated by commas, spaces or newlines (the setting, the CLI flag).
    pub fn parse_list(text: &str) -> Result<Vec<Self>> {
        text.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()).map(PublicKey::parse).collect()
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PUBLIC_KEY_PREFIX}{}", hex::encode(self.to_bytes()))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

/// A cluster's signing key. Never printed, never stored outside the data directory.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public {})", self.public().id())
    }
}

impl SigningKey {
    pub fn generate() -> Self {
        let seed: [u8; 32] = rand::random();
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    fn to_file_text(&self) -> String {
        format!("{SECRET_HEADER}{}\n{}\n", self.public(), hex::encode(self.0.to_bytes()))
    }

    fn from_file_text(text: &str) -> Option<Self> {
        let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'))?;
        let seed: [u8; 32] = hex::decode(line).ok()?.try_into().ok()?;
        Some(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SIGNING_KEY_FILE)
}

/// The data directory's signing key, if it has one.
pub fn load_signing_key(data_dir: &Path) -> Result<Option<SigningKey>> {
    let path = key_path(data_dir);
    match fs::read_to_string(&path) {
        Ok(text) => SigningKey::from_file_text(&text).map(Some).ok_or_else(|| Error::Corrupt {
            key: path.display().to_string(),
            reason: "it does not hold a backstop signing key".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", &path, e)),
    }
}

/// The data directory's signing key, created (0600, create-if-absent, durable) on first use.
pub fn load_or_create_signing_key(data_dir: &Path) -> Result<SigningKey> {
    if let Some(key) = load_signing_key(data_dir)? {
        return Ok(key);
    }
    let path = key_path(data_dir);
    let temp = temp_key_path(data_dir);
    let written = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp).and_then(|mut file| {
        file.write_all(SigningKey::generate().to_file_text().as_bytes()).and_then(|_| file.sync_all())
    });
    let linked = written.and_then(|_| match fs::hard_link(&temp, &path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = fs::remove_file(&temp);
    linked.map_err(|e| Error::io("create", &path, e))?;
    fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync directory", data_dir, e))?;
    // Whichever process linked first, everyone uses the key that is in the file.
    let key = load_signing_key(data_dir)?
        .ok_or_else(|| Error::NotFound { store: "the data directory".into(), key: SIGNING_KEY_FILE.into() })?;
    let mode = fs::metadata(&path).map_err(|e| Error::io("stat", &path, e))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Error::InvalidInput(format!(
            "{} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        )));
    }
    Ok(key)
}

fn temp_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(format!(".{SIGNING_KEY_FILE}.tmp-{}", std::process::id()))
}

/// True for the key file and the temporary files it is created through: what a base backup must
/// never copy.
pub fn is_signing_key_file(name: &str) -> bool {
    name == SIGNING_KEY_FILE || name.starts_with(&format!(".{SIGNING_KEY_FILE}.tmp-"))
}

/// The bytes a signature covers. Length-prefixed, so no two (key, header, trailer) triples share
/// a message.
pub(crate) fn signed_message(object_key: &str, header: &[u8], trailer: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(DOMAIN.len() + 12 + object_key.len() + header.len() + trailer.len());
    message.extend_from_slice(DOMAIN);
    for part in [object_key.as_bytes(), header, trailer] {
        message.extend_from_slice(&(part.len() as u32).to_le_bytes());
        message.extend_from_slice(part);
    }
    message
}

/// Which public keys a reader accepts signatures from.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    keys: Vec<PublicKey>,
    unauthenticated: bool,
}

/// How an object's signature turned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticity {
    /// Signed by this trusted key.
    Signed(PublicKey),
    /// An unsigned object of backstop 0.2 that `adopt_repository` read, checked and recorded.
    Adopted,
    /// Accepted without a valid trusted signature because the reader asked for it (CLI only).
    TrustedUnauthenticated(String),
}

/// Objects this process accepted without authentication (CLI `--trust-unauthenticated`): each is
/// warned about once on stderr, and a restore records how many it used.
static UNAUTHENTICATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

pub(crate) fn note_unauthenticated(key: &str, why: &str) {
    let mut seen = UNAUTHENTICATED.lock().expect("unauthenticated lock");
    if !seen.iter().any(|k| k == key) {
        eprintln!("backstop: WARNING: using {key} without authentication ({why}), as --trust-unauthenticated asked");
        seen.push(key.to_string());
    }
}

/// How many objects this process used without authentication so far.
pub fn unauthenticated_count() -> usize {
    UNAUTHENTICATED.lock().expect("unauthenticated lock").len()
}

impl Trust {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut trust = Trust::default();
        for key in keys {
            if !trust.keys.contains(&key) {
                trust.keys.push(key);
            }
        }
        trust
    }

    /// Accepts objects that are not signed by a trusted key, keeping every checksum check. A
    /// signature that claims a trusted key and does not verify is still refused: that object was
    /// altered. Only the CLI builds this, on `--trust-unauthenticated`.
    pub fn accept_unauthenticated(mut self) -> Self {
        self.unauthenticated = true;
        self
    }

    pub fn accepts_unauthenticated(&self) -> bool {
        self.unauthenticated
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.unauthenticated
    }

    pub fn with_key(mut self, key: PublicKey) -> Self {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
        self
    }

    /// Checks a signature block (signer public key, signature) over `message`. Err is the reason,
    /// for a message naming the object.
    pub(crate) fn check(
        &self,
        message: &[u8],
        signer: &[u8; 32],
        signature: &[u8; 64],
    ) -> Result<Authenticity, String> {
        let signer_key = PublicKey::from_bytes(signer);
        let trusted = signer_key.filter(|k| self.keys.contains(k));
        match trusted {
            Some(key) => {
                let signature = ed25519_dalek::Signature::from_bytes(signature);
                key.0.verify(message, &signature).map(|_| Authenticity::Signed(key)).map_err(|_| {
                    format!(
                        "its signature claims the trusted key {} but does not verify: it was altered after it was written, or written under another name",
                        key.id()
                    )
                })
            }
            None => {
                let who = match signer_key {
                    Some(key) => format!("signed by the key {}, which is not trusted here", key.id()),
                    None => "its signature names no valid public key".into(),
                };
                self.unauthenticated_or(who)
            }
        }
    }

    /// An object with no signature at all (written by backstop 0.2 or earlier, or by someone else).
    pub(crate) fn unsigned(&self, why: &str) -> Result<Authenticity, String> {
        self.unauthenticated_or(why.to_string())
    }

    fn unauthenticated_or(&self, why: String) -> Result<Authenticity, String> {
        if self.unauthenticated {
            Ok(Authenticity::TrustedUnauthenticated(why))
        } else if self.keys.is_empty() {
            Err(format!("{why}; no key is trusted (set backstop.trusted_keys or pass --trusted-key)"))
        } else {
            let ids: Vec<String> = self.keys.iter().map(PublicKey::id).collect();
            Err(format!("{why} (trusted: {})", ids.join(", ")))
        }
    }
}

/// A short fingerprint of a public key set, for messages and doctor.
pub fn describe_keys(keys: &[PublicKey]) -> String {
    keys.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ")
}

/// SHA-256 of a key's bytes, hex: stable ids for records that must not embed the key itself.
pub fn key_digest(key: &PublicKey) -> String {
    hex::encode(Sha256::digest(key.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_round_trip_and_refuse_garbage() {
        let key = SigningKey::generate();
        let text = key.public().to_string();
        assert!(text.starts_with("ed25519:") && text.len() == 8 + 64, "{text}");
        assert_eq!(PublicKey::parse(&text).unwrap(), key.public());
        let two = PublicKey::parse_list(&format!("{text}, {}\n", SigningKey::generate().public())).unwrap();
        assert_eq!(two.len(), 2);
        for bad in ["", "ed25519:", "ed25519:zz", "age1qyqszqgp", &text[..40]] {
            let error = PublicKey::parse(bad).unwrap_err().to_string();
            assert!(error.contains("trusted_keys"), "{error}");
        }
    }

    #[test]
    fn only_trusted_keys_authenticate_and_any_change_breaks_a_signature() {
        let ours = SigningKey::generate();
        let theirs = SigningKey::generate();
        let message = signed_message("c/wal/x", b"header", b"trailer");
        let signature = ours.sign(&message);
        let trust = Trust::new([ours.public()]);
        assert_eq!(
            trust.check(&message, &ours.public().to_bytes(), &signature),
            Ok(Authenticity::Signed(ours.public()))
        );
        let moved = signed_message("c/wal/y", b"header", b"trailer");
        assert!(trust.check(&moved, &ours.public().to_bytes(), &signature).unwrap_err().contains("altered"));
        let foreign = theirs.sign(&message);
        let error = trust.check(&message, &theirs.public().to_bytes(), &foreign).unwrap_err();
        assert!(error.contains(&theirs.public().id()) && error.contains("not trusted"), "{error}");
        assert!(Trust::default().unsigned("it is not signed").unwrap_err().contains("no key is trusted"));
        // The CLI's explicit opt-in accepts unknown signers and unsigned objects, never a forgery
        // that claims a trusted key.
        let lax = Trust::new([ours.public()]).accept_unauthenticated();
        assert!(matches!(
            lax.check(&message, &theirs.public().to_bytes(), &foreign),
            Ok(Authenticity::TrustedUnauthenticated(_))
        ));
        assert!(lax.check(&moved, &ours.public().to_bytes(), &signature).is_err());
    }

    #[test]
    fn the_key_file_is_created_once_private_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_signing_key(dir.path()).unwrap().is_none());
        let first = load_or_create_signing_key(dir.path()).unwrap();
        let second = load_or_create_signing_key(dir.path()).unwrap();
        assert_eq!(first.public(), second.public());
        let mode = fs::metadata(dir.path().join(SIGNING_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = fs::read_to_string(dir.path().join(SIGNING_KEY_FILE)).unwrap();
        assert!(text.contains(&first.public().to_string()), "the file names its public key");
        assert!(is_signing_key_file(SIGNING_KEY_FILE) && is_signing_key_file(".backstop_signing.key.tmp-12"));
        assert!(!is_signing_key_file("backstop_signing.key.bak"));
    }
}
