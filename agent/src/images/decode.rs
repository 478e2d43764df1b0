//! What the bytes of an image are: a compressed wrapper (gzip, xz, zstd), and inside it
//! either a `zfs send` stream or a raw disk image. Decided from the first bytes, never
//! from names or headers.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

pub fn sniff_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// DMU_BACKUP_MAGIC, the `drr_magic` of a stream's first (DRR_BEGIN) record, which sits
/// after the record's two u32 header words.
const DMU_BACKUP_MAGIC: u64 = 0x2F5B_ACBAC;

/// Whether `head` starts a `zfs send` stream (either byte order).
pub fn is_zfs_stream(head: &[u8]) -> bool {
    let Some(word) = head.get(8..16) else {
        return false;
    };
    let word: [u8; 8] = word.try_into().expect("8 bytes");
    let drr_type = head[..4].iter().all(|&b| b == 0);
    drr_type && (u64::from_le_bytes(word) == DMU_BACKUP_MAGIC || u64::from_be_bytes(word) == DMU_BACKUP_MAGIC)
}

/// Whether a stream's BEGIN record is that of a resumed send (`zfs send -t`): the
/// RESUMING feature flag in `drr_versioninfo` (bits 2..32 hold the feature flags).
pub fn is_resuming(head: &[u8]) -> bool {
    const DMU_BACKUP_FEATURE_RESUMING: u64 = 1 << 20;
    let (Some(magic), Some(info)) = (head.get(8..16), head.get(16..24)) else {
        return false;
    };
    let magic: [u8; 8] = magic.try_into().expect("8 bytes");
    let info: [u8; 8] = info.try_into().expect("8 bytes");
    let versioninfo =
        if u64::from_le_bytes(magic) == DMU_BACKUP_MAGIC { u64::from_le_bytes(info) } else { u64::from_be_bytes(info) };
    (versioninfo >> 2) & DMU_BACKUP_FEATURE_RESUMING != 0
}

/// The full snapshot name (`drr_toname`) from a stream's BEGIN record.
pub fn stream_toname(head: &[u8]) -> Option<String> {
    let name = head.get(56..56 + 256)?;
    let end = name.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&name[..end]).ok().map(str::to_owned)
}

/// The snapshot's short name (`drr_toname` after `@`) from a stream's BEGIN record:
/// 8 bytes of record header, then magic, versioninfo, creation time, type, flags,
/// toguid and fromguid (48 bytes), then `drr_toname[256]`.
pub fn stream_snapshot(head: &[u8]) -> Option<String> {
    let full = stream_toname(head)?;
    let short = full.split_once('@')?.1;
    zfs_sys_shim::name::check_component(short, short).ok()?;
    Some(short.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs() {
        assert_eq!(sniff_compression(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(sniff_compression(b"\xfd7zXZ\x00\x00"), Compression::Xz);
        assert_eq!(sniff_compression(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(sniff_compression(b"QFI\xfb"), Compression::None);
        let mut begin = vec![0u8; 16];
        begin[8..16].copy_from_slice(&DMU_BACKUP_MAGIC.to_le_bytes());
        assert!(is_zfs_stream(&begin));
        begin[8..16].copy_from_slice(&DMU_BACKUP_MAGIC.to_be_bytes());
        assert!(is_zfs_stream(&begin));
        assert!(!is_zfs_stream(&[0u8; 16]));
        assert!(!is_zfs_stream(&[0u8; 8]));
    }

    #[test]
    fn sees_the_resuming_flag() {
        let mut begin = vec![0u8; 24];
        begin[8..16].copy_from_slice(&DMU_BACKUP_MAGIC.to_le_bytes());
        let features: u64 = 1 << 20 | 1 << 2;
        begin[16..24].copy_from_slice(&(features << 2 | 1).to_le_bytes());
        assert!(is_resuming(&begin));
        begin[16..24].copy_from_slice(&((1u64 << 2) << 2 | 1).to_le_bytes());
        assert!(!is_resuming(&begin));
        begin[8..16].copy_from_slice(&DMU_BACKUP_MAGIC.to_be_bytes());
        begin[16..24].copy_from_slice(&(features << 2 | 1).to_be_bytes());
        assert!(is_resuming(&begin));
    }

    #[test]
    fn reads_the_snapshot_name_from_the_begin_record() {
        let mut head = vec![0u8; 400];
        head[56..56 + 13].copy_from_slice(b"tank/src@v1.2");
        assert_eq!(stream_snapshot(&head).as_deref(), Some("v1.2"));
        head[56..56 + 13].copy_from_slice(b"tank/src@-bad");
        assert_eq!(stream_snapshot(&head), None);
        assert_eq!(stream_snapshot(&head[..100]), None);
    }
}
