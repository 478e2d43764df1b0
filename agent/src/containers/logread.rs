//! Reading a container's log file in bounded pieces: a log can grow to gigabytes, and
//! one request must neither read it all into memory nor hold a worker for long.
//!
//! - `tail=N`: the last N lines (N ≤ [`MAX_TAIL_LINES`]) found in the last
//!   [`MAX_READ`] bytes;
//! - `offset=B` (default 0) and `limit=L` (default and most [`MAX_READ`]): bytes B..B+L.
//!
//! Either way the answer says where the file ends and where the next page starts.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Error, Result};

/// The most one answer (or one step of a follow) reads.
pub const MAX_READ: u64 = 4 << 20;
/// The most lines `tail` takes.
pub const MAX_TAIL_LINES: usize = 100_000;

/// A piece of a log and where it sits in the file.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    pub bytes: Vec<u8>,
    /// Offset just past `bytes`: the `offset` of the next page.
    pub next: u64,
    /// The file's size when read.
    pub size: u64,
}

/// `limit` bytes of `path` from `offset` (a missing file reads as empty).
pub fn range(path: &Path, offset: u64, limit: Option<u64>) -> Result<Page> {
    let limit = match limit {
        Some(0) => return Err(Error::invalid("limit", "must be at least 1")),
        Some(l) if l > MAX_READ => return Err(Error::invalid("limit", format!("at most {MAX_READ} bytes a read"))),
        Some(l) => l,
        None => MAX_READ,
    };
    let Ok(mut f) = std::fs::File::open(path) else { return Ok(Page { bytes: vec![], next: 0, size: 0 }) };
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = offset.min(size);
    let mut bytes = Vec::new();
    f.seek(SeekFrom::Start(start))
        .and_then(|_| f.take(limit).read_to_end(&mut bytes))
        .map_err(|e| Error::internal(format!("reading {}: {e}", path.display())))?;
    Ok(Page { next: start + bytes.len() as u64, bytes, size })
}

/// The last `lines` lines of `path`, looked for in its last [`MAX_READ`] bytes.
pub fn tail(path: &Path, lines: usize) -> Result<Page> {
    if lines > MAX_TAIL_LINES {
        return Err(Error::invalid("tail", format!("at most {MAX_TAIL_LINES} lines")));
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut page = range(path, size.saturating_sub(MAX_READ), None)?;
    // Line starts, counted back from the end (a final newline ends the last line).
    let body = page.bytes.strip_suffix(b"\n").unwrap_or(&page.bytes);
    let cut = if lines == 0 {
        page.bytes.len()
    } else {
        body.iter().enumerate().rev().filter(|(_, b)| **b == b'\n').nth(lines - 1).map_or(0, |(i, _)| i + 1)
    };
    page.bytes.drain(..cut);
    Ok(page)
}

/// What the container appends to its log from `at` on, polled, until it is no longer
/// running and the file has nothing more: the rest of a `follow=true` answer.
pub fn follow(
    c: super::store::Containers,
    id: u64,
    path: std::path::PathBuf,
    at: u64,
) -> impl futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> {
    futures_util::stream::unfold((c, at), move |(c, mut at)| {
        let path = path.clone();
        async move {
            loop {
                let more = range(&path, at, None).map(|p| p.bytes).unwrap_or_default();
                if !more.is_empty() {
                    at += more.len() as u64;
                    return Some((Ok(axum::body::Bytes::from(more)), (c, at)));
                }
                let running = c.find(id).await.is_ok_and(|r| r.is_live());
                if !running {
                    return None;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_tails_are_bounded_and_say_where_they_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        std::fs::write(&log, "one\ntwo\nthree\n").unwrap();
        assert_eq!(tail(&log, 2).unwrap().bytes, b"two\nthree\n");
        assert_eq!(tail(&log, 10).unwrap().bytes, b"one\ntwo\nthree\n");
        assert_eq!(tail(&log, 0).unwrap().bytes, b"");
        let p = range(&log, 4, Some(3)).unwrap();
        assert_eq!((p.bytes.as_slice(), p.next, p.size), (&b"two"[..], 7, 14));
        assert_eq!(range(&log, 99, None).unwrap(), Page { bytes: vec![], next: 14, size: 14 });
        assert_eq!(range(&dir.path().join("none"), 0, None).unwrap().size, 0);
        assert_eq!(range(&log, 0, Some(MAX_READ + 1)).unwrap_err().field.as_deref(), Some("limit"));
        assert_eq!(tail(&log, MAX_TAIL_LINES + 1).unwrap_err().field.as_deref(), Some("tail"));

        // A log larger than one read: the answer is at most MAX_READ, the rest by offset.
        let big = vec![b'x'; (MAX_READ + 10) as usize];
        std::fs::write(&log, &big).unwrap();
        let first = range(&log, 0, None).unwrap();
        assert_eq!((first.bytes.len() as u64, first.next), (MAX_READ, MAX_READ));
        assert_eq!(range(&log, first.next, None).unwrap().bytes.len(), 10);
        assert_eq!(tail(&log, 1).unwrap().bytes.len() as u64, MAX_READ, "one huge line: the last MAX_READ bytes");
    }
}
