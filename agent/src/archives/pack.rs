//! Cutting a stream into an archive's objects: fixed-size plain chunks, each encrypted
//! to the node's age recipient (when a passphrase is configured), named by the SHA-256
//! of its stored bytes and written to the repository.
//!
//! Three threads, a pipeline: this one reads and encrypts, the writer hashes and writes
//! what it encrypted to the object's temporary file, and when an object is whole, the
//! syncer waits for the disk to take it and moves it into place while the next one is
//! made. Each object is a whole age file, so any one can be checked or decrypted alone
//! (the `age` CLI opens it with the node's identity).
//!
//! The stream goes through in pieces of [`PIECE`] bytes that go round the pipeline and
//! back: an archive of any size, with any chunk size, holds a few MiB, and no page is
//! zeroed twice (fresh 32 MiB buffers per chunk made the kernel's page zeroing half of
//! the CPU time).

use std::io::{Read, Write};
use std::sync::mpsc;

use super::manifest::ObjectEntry;
use super::repo::{ObjectWriter, Repo, StagedObject};
use crate::error::{Error, Result};

/// Plain bytes per object: big enough that per-object costs (a request, an fsync, an age
/// header) vanish, small enough that a failed upload re-sends little.
pub const CHUNK_SIZE: usize = 32 << 20;

/// Bytes per piece handed from the reader to the writer.
const PIECE: usize = 1 << 20;
/// Pieces in the pipeline: the reader fills one while the writer hashes and writes one
/// and the rest wait in between.
const PIECES: usize = 4;

/// What packing a stream made.
#[derive(Debug, Default)]
pub struct Packed {
    pub objects: Vec<ObjectEntry>,
    pub original_size: u64,
    pub stored_size: u64,
}

/// From the reader to the writer.
enum Piece {
    /// The next stored bytes of the current object.
    Bytes(Vec<u8>),
    /// The current object is whole: `plain_size` bytes of the stream.
    End { plain_size: u64 },
}

/// Reads `input` to its end and stores it in `repo` as objects of `chunk_size` plain
/// bytes. Blocking: run it on a blocking thread. `written` gets every object stored,
/// also when packing fails part-way (the caller removes those no manifest names).
pub fn pack(
    input: &mut dyn Read,
    chunk_size: usize,
    recipient: Option<&age::x25519::Recipient>,
    repo: &Repo,
    written: &mut Vec<ObjectEntry>,
) -> Result<Packed> {
    let (to_writer, writer_in) = mpsc::sync_channel::<Piece>(PIECES - 2);
    let (to_syncer, syncer_in) = mpsc::sync_channel::<(Option<StagedObject>, ObjectEntry)>(1);
    // Written pieces back to the reader; only PIECES ever circulate.
    let (recycle, recycled) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<()> {
            let mut object: Option<ObjectWriter> = None;
            for piece in writer_in {
                match piece {
                    Piece::Bytes(bytes) => {
                        let w = match &mut object {
                            Some(w) => w,
                            None => object.insert(repo.object_writer()?),
                        };
                        w.write(&bytes)?;
                        let _ = recycle.send(bytes);
                    }
                    Piece::End { plain_size } => {
                        let w = object.take().ok_or_else(|| Error::internal("an archive object without bytes"))?;
                        let (sha256, stored_size, staged) = w.finish(repo);
                        if to_syncer.send((staged, ObjectEntry { sha256, stored_size, plain_size })).is_err() {
                            break;
                        }
                    }
                }
            }
            Ok(())
        });
        let syncer = scope.spawn(move || -> (Vec<ObjectEntry>, Result<()>) {
            let mut objects = Vec::new();
            for (staged, entry) in syncer_in {
                if let Some(staged) = staged
                    && let Err(e) = repo.commit_object(staged)
                {
                    // Returning drops the channel: the writer stops at its next object,
                    // and what it staged after this one is removed as it is dropped.
                    return (objects, Err(e));
                }
                objects.push(entry);
            }
            (objects, Ok(()))
        });
        let read = (|| -> Result<()> {
            let mut pieces = Pieces { to_writer, recycled, made: 0, current: Vec::with_capacity(PIECE) };
            let mut plain = vec![0u8; PIECE];
            loop {
                // An object starts with its first bytes: the stream's end makes none.
                let mut n = read_some(input, &mut plain[..PIECE.min(chunk_size)])?;
                if n == 0 {
                    return Ok(());
                }
                let mut sink = match recipient {
                    Some(r) => Sink::Age(start_encryption(r, pieces)?),
                    None => Sink::Plain(pieces),
                };
                let mut plain_size = 0u64;
                while n > 0 {
                    sink.write_all(&plain[..n]).map_err(|e| Error::os("encrypting a chunk", e))?;
                    plain_size += n as u64;
                    let want = (chunk_size as u64 - plain_size).min(PIECE as u64) as usize;
                    n = if want == 0 { 0 } else { read_some(input, &mut plain[..want])? };
                }
                pieces = sink.finish().map_err(|e| Error::os("encrypting a chunk", e))?;
                if !pieces.end_object(plain_size) {
                    // The writer stopped: its error is the one to report.
                    return Ok(());
                }
            }
        })();
        let wrote = writer.join().map_err(|_| Error::internal("the archive writer thread panicked"))?;
        let (objects, synced) = syncer.join().map_err(|_| Error::internal("the archive syncer thread panicked"))?;
        written.extend(objects.iter().cloned());
        synced?;
        wrote?;
        // A read that failed because the writer stopped is the writer's error, above.
        read?;
        let original_size = objects.iter().map(|o| o.plain_size).sum();
        let stored_size = objects.iter().map(|o| o.stored_size).sum();
        Ok(Packed { objects, original_size, stored_size })
    })
}

/// An age file to `recipient` whose bytes go to `pieces`.
fn start_encryption(recipient: &age::x25519::Recipient, pieces: Pieces) -> Result<age::stream::StreamWriter<Pieces>> {
    let encryptor = age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
        .map_err(|e| Error::internal(format!("age: {e}")))?;
    encryptor.wrap_output(pieces).map_err(|e| Error::os("encrypting a chunk", e))
}

/// Where one object's plain bytes go: through age, or as they are.
enum Sink {
    Age(age::stream::StreamWriter<Pieces>),
    Plain(Pieces),
}

impl Sink {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Age(w) => w.write_all(bytes),
            Sink::Plain(p) => p.write_all(bytes),
        }
    }

    /// The object's last bytes written (age's final chunk); the pieces back.
    fn finish(self) -> std::io::Result<Pieces> {
        match self {
            Sink::Age(w) => w.finish(),
            Sink::Plain(p) => Ok(p),
        }
    }
}

/// The reader's side of the pipeline: stored bytes written here go to the writer in
/// pieces of up to [`PIECE`] bytes, in buffers that come back once written.
struct Pieces {
    to_writer: mpsc::SyncSender<Piece>,
    recycled: mpsc::Receiver<Vec<u8>>,
    made: usize,
    current: Vec<u8>,
}

impl Pieces {
    /// Hands on the current piece; false when the writer has stopped.
    fn send_current(&mut self) -> bool {
        if self.current.is_empty() {
            return true;
        }
        let next = match self.recycled.try_recv() {
            Ok(b) => b,
            Err(_) if self.made < PIECES => {
                self.made += 1;
                Vec::with_capacity(PIECE)
            }
            // Every buffer is in the pipeline: wait for one (none comes back once the
            // writer has stopped).
            Err(_) => match self.recycled.recv() {
                Ok(b) => b,
                Err(_) => return false,
            },
        };
        let full = std::mem::replace(&mut self.current, next);
        self.current.clear();
        self.to_writer.send(Piece::Bytes(full)).is_ok()
    }

    /// The object's last bytes and its end to the writer; false when it has stopped.
    fn end_object(&mut self, plain_size: u64) -> bool {
        self.send_current() && self.to_writer.send(Piece::End { plain_size }).is_ok()
    }
}

impl Write for Pieces {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.current.len() >= PIECE && !self.send_current() {
            return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the archive writer stopped"));
        }
        let n = buf.len().min(PIECE - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Up to `buf.len()` bytes of `input`; fewer only at the end of the stream.
fn read_some(input: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::os("reading the stream to archive", e)),
        }
    }
    Ok(filled)
}

/// The plain bytes of one stored object.
pub fn decrypt(identity: &age::x25519::Identity, stored: &[u8], archive: &str, sha256: &str) -> Result<Vec<u8>> {
    let fail = |e: &dyn std::fmt::Display| {
        Error::invalid("archive", format!("archive {archive}: object {sha256} does not decrypt: {e}"))
    };
    let decryptor = age::Decryptor::new_buffered(stored).map_err(|e| fail(&e))?;
    let mut reader = decryptor.decrypt(std::iter::once(identity as &dyn age::Identity)).map_err(|e| fail(&e))?;
    let mut plain = Vec::with_capacity(stored.len());
    reader.read_to_end(&mut plain).map_err(|e| fail(&e))?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn chunks_are_named_by_their_stored_bytes_and_decrypt_back() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::open(dir.path()).unwrap();
        let identity = age::x25519::Identity::generate();
        let data: Vec<u8> = (0..250_000u32).map(|i| (i % 251) as u8).collect();
        let packed = pack(&mut &data[..], 100_000, Some(&identity.to_public()), &repo, &mut Vec::new()).unwrap();
        assert_eq!(packed.objects.iter().map(|o| o.plain_size).collect::<Vec<_>>(), [100_000, 100_000, 50_000]);
        assert_eq!(packed.original_size, 250_000);
        let mut back = Vec::new();
        for o in &packed.objects {
            let stored = std::fs::read(repo.object_path(&o.sha256)).unwrap();
            assert_eq!(hex::encode(Sha256::digest(&stored)), o.sha256);
            assert_eq!(stored.len() as u64, o.stored_size);
            back.extend(decrypt(&identity, &stored, "a", &o.sha256).unwrap());
        }
        assert_eq!(back, data);
        let other = age::x25519::Identity::generate();
        let stored = std::fs::read(repo.object_path(&packed.objects[0].sha256)).unwrap();
        assert!(decrypt(&other, &stored, "a", "x").is_err(), "another identity does not open it");
    }

    #[test]
    fn unencrypted_chunks_are_the_stream_itself() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::open(dir.path()).unwrap();
        let packed = pack(&mut &b"hello world"[..], 4, None, &repo, &mut Vec::new()).unwrap();
        assert_eq!(packed.objects.len(), 3);
        assert_eq!(std::fs::read(repo.object_path(&packed.objects[2].sha256)).unwrap(), b"rld");
        let empty = pack(&mut &b""[..], 4, None, &repo, &mut Vec::new()).unwrap();
        assert!(empty.objects.is_empty());
    }

    /// Objects of several pieces, a last object of one byte, each object whole and in
    /// order, with and without encryption.
    #[test]
    fn objects_larger_than_a_piece_come_out_whole() {
        let identity = age::x25519::Identity::generate();
        let data: Vec<u8> = (0..3 * PIECE as u32 + 1).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let chunk = PIECE + PIECE / 2;
        for recipient in [None, Some(identity.to_public())] {
            let dir = tempfile::tempdir().unwrap();
            let repo = Repo::open(dir.path()).unwrap();
            let packed = pack(&mut &data[..], chunk, recipient.as_ref(), &repo, &mut Vec::new()).unwrap();
            let sizes: Vec<u64> = packed.objects.iter().map(|o| o.plain_size).collect();
            assert_eq!(sizes, [chunk as u64, chunk as u64, 1]);
            let mut back = Vec::new();
            for o in &packed.objects {
                let stored = std::fs::read(repo.object_path(&o.sha256)).unwrap();
                assert_eq!(
                    (hex::encode(Sha256::digest(&stored)), stored.len() as u64),
                    (o.sha256.clone(), o.stored_size)
                );
                match &recipient {
                    Some(_) => back.extend(decrypt(&identity, &stored, "a", &o.sha256).unwrap()),
                    None => back.extend(stored),
                }
            }
            assert!(back == data, "the stream back, encrypted: {}", recipient.is_some());
        }
    }

    /// A failure part-way (here: an object cannot be moved into place) is reported and
    /// leaves no temporary file behind.
    #[test]
    fn a_failed_pack_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::open(dir.path()).unwrap();
        std::fs::remove_dir(dir.path().join("objects")).unwrap();
        std::fs::write(dir.path().join("objects"), b"not a directory").unwrap();
        let data = vec![7u8; 3 * PIECE];
        let mut written = Vec::new();
        let err = pack(&mut &data[..], PIECE / 2, None, &repo, &mut written).unwrap_err();
        assert!(err.message.contains("object directory"), "{err}");
        assert!(written.is_empty());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).unwrap().collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}
