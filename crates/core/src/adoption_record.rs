//! The adoption record (`adopted/<id>.json`): one signed object listing the header and tail of
//! each backstop 0.2 object that `adopt_repository()` vouched for. Written by [`crate::adopt`],
//! consulted by the repository's read path for every unsigned object: it sits below both, so
//! neither imports the other.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const RECORD_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdoptionRecord {
    pub format_version: u32,
    pub id: String,
    pub cluster: String,
    pub adopted_at_unix: f64,
    pub adopted_by: String,
    pub objects: Vec<AdoptedObject>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdoptedObject {
    pub path: String,
    #[serde(with = "hex_array")]
    pub header: [u8; crate::codec::HEADER_LEN],
    #[serde(with = "hex_bytes")]
    pub tail: Vec<u8>,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

mod hex_array {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        hex::decode(text).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| serde::de::Error::custom("16 hex bytes"))
    }
}

impl AdoptionRecord {
    /// Parses a record read (authenticated) from `key`, which must belong to namespace `cluster`.
    pub fn parse(key: &str, cluster: &str, bytes: &[u8]) -> Result<AdoptionRecord> {
        let record: AdoptionRecord = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            key: key.to_string(),
            reason: format!("it is not an adoption record: {e}"),
        })?;
        if record.cluster != cluster {
            return Err(Error::Corrupt {
                key: key.to_string(),
                reason: format!("it adopts objects of namespace {}", record.cluster),
            });
        }
        Ok(record)
    }
}
