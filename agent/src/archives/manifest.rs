//! An archive's manifest: what it holds (dataset, snapshot, GUIDs), the objects that make
//! up its stream in order, and how they are encrypted. It is written last, to the local
//! repository and to every target: an archive without a manifest does not exist.
//!
//! What is in clear is what a restore needs before the passphrase is asked: names,
//! sizes, SHA-256 sums, the age recipient, and the node's age identity encrypted with
//! the passphrase (scrypt). Nothing here decrypts an object without the passphrase.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The manifest format this tankd writes and reads.
pub const VERSION: u32 = 1;

/// Largest manifest read back (from disk, a target or a client): ~10,000 objects of a
/// 32 MiB chunk each (300 GiB) fit in far less.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub id: String,
    /// The service the archived dataset belongs to (whose token may read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The dataset, relative to the node's dataset root.
    pub dataset: String,
    pub snapshot: String,
    /// The snapshot's GUID (a decimal string: JSON numbers lose bits past 2^53).
    pub guid: String,
    /// For an incremental: the archive it applies on, and that archive's snapshot GUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_guid: Option<String>,
    /// `zfs send` flags the stream was made with (`-c`, `-w`), so a reader knows what
    /// `zfs receive` will get.
    pub send_flags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    pub objects: Vec<ObjectEntry>,
    /// Bytes of the send stream (the objects' plain sizes summed).
    pub original_size: u64,
    /// Bytes stored (the objects' stored sizes summed).
    pub stored_size: u64,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// Nanoseconds since the epoch: orders archives made within one second.
    #[serde(default)]
    pub created_at_nanos: u128,
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectEntry {
    /// SHA-256 of the stored (encrypted) bytes, lower-case hex: also the object's name.
    pub sha256: String,
    pub stored_size: u64,
    pub plain_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Encryption {
    /// `age-x25519`: every object is an age file to `recipient`.
    pub scheme: String,
    /// The node's age recipient (`age1…`).
    pub recipient: String,
    /// The node's age identity as an age file encrypted with the passphrase (scrypt,
    /// pinned work factor), base64: what a new node needs, with the passphrase, to
    /// decrypt the objects.
    pub wrapped_identity: String,
}

pub const SCHEME_AGE_X25519: &str = "age-x25519";

impl Manifest {
    /// Checks what a manifest read from elsewhere claims before any of it names a file
    /// or an object: a tampered manifest is refused, not followed.
    pub fn check(&self) -> Result<()> {
        if self.version != VERSION {
            return Err(Error::invalid(
                "manifest.version",
                format!("{} is not a version this tankd reads ({VERSION})", self.version),
            ));
        }
        check_id("manifest.id", &self.id)?;
        if let Some(p) = &self.parent_id {
            check_id("manifest.parentId", p)?;
        }
        if self.parent_id.is_some() != self.parent_guid.is_some() {
            return Err(Error::invalid("manifest.parentGuid", "an incremental names both its parent archive and GUID"));
        }
        for (i, o) in self.objects.iter().enumerate() {
            check_sha256(&format!("manifest.objects[{i}].sha256"), &o.sha256)?;
        }
        let plain: u64 = self.objects.iter().map(|o| o.plain_size).sum();
        let stored: u64 = self.objects.iter().map(|o| o.stored_size).sum();
        if plain != self.original_size || stored != self.stored_size {
            return Err(Error::invalid(
                "manifest.objects",
                "the objects' sizes do not add up to originalSize and storedSize",
            ));
        }
        if let Some(e) = &self.encryption
            && e.scheme != SCHEME_AGE_X25519
        {
            return Err(Error::invalid(
                "manifest.encryption.scheme",
                format!("{:?} is not a scheme this tankd reads", e.scheme),
            ));
        }
        Ok(())
    }

    /// The entry of object `sha256`, if this archive has it.
    pub fn object(&self, sha256: &str) -> Option<&ObjectEntry> {
        self.objects.iter().find(|o| o.sha256 == sha256)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Manifest> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(Error::invalid("manifest", format!("larger than {MAX_MANIFEST_BYTES} bytes")));
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| Error::invalid("manifest", format!("not a manifest: {e}")))?;
        m.check()?;
        Ok(m)
    }
}

/// An archive id: 16 lower-case hex digits (from the snapshot's GUID), never a path.
pub fn check_id(field: &str, id: &str) -> Result<()> {
    if id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(Error::invalid(field, "an archive id is 16 lower-case hex digits"))
    }
}

/// An object's name: 64 lower-case hex digits.
pub fn check_sha256(field: &str, sha: &str) -> Result<()> {
    if sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(Error::invalid(field, "an object is named by its SHA-256: 64 lower-case hex digits"))
    }
}

/// The id of the archive of the snapshot with `guid` on the dataset: the same snapshot
/// always gets the same id, so archiving it twice finds the first archive.
pub fn archive_id(dataset: &str, guid: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{dataset}\0{guid}"));
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            version: VERSION,
            id: archive_id("services/a", "42"),
            service: Some("a".into()),
            dataset: "services/a".into(),
            snapshot: "s1".into(),
            guid: "42".into(),
            parent_id: None,
            parent_guid: None,
            send_flags: vec!["-c".into()],
            encryption: None,
            objects: vec![ObjectEntry { sha256: "a".repeat(64), stored_size: 10, plain_size: 9 }],
            original_size: 9,
            stored_size: 10,
            created_at: 1,
            created_at_nanos: 1_000_000_000,
            tags: Default::default(),
        }
    }

    #[test]
    fn round_trips_and_refuses_what_does_not_add_up() {
        let m = manifest();
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        let mut bad = m.clone();
        bad.objects[0].sha256 = "../../etc/passwd".into();
        assert_eq!(
            Manifest::from_json(&bad.to_json()).unwrap_err().field.as_deref(),
            Some("manifest.objects[0].sha256")
        );
        let mut bad = m.clone();
        bad.stored_size = 11;
        assert!(Manifest::from_json(&bad.to_json()).is_err());
        let mut bad = m.clone();
        bad.id = "../x".into();
        assert!(Manifest::from_json(&bad.to_json()).is_err());
        let mut bad = m;
        bad.parent_id = Some("0".repeat(16));
        assert!(Manifest::from_json(&bad.to_json()).is_err(), "a parent id without its GUID");
    }

    #[test]
    fn ids_are_stable_and_safe() {
        assert_eq!(archive_id("a", "1"), archive_id("a", "1"));
        assert_ne!(archive_id("a", "1"), archive_id("a", "2"));
        check_id("id", &archive_id("a", "1")).unwrap();
        assert!(check_id("id", "-rf").is_err());
    }
}
