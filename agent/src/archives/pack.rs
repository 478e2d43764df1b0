//! Cutting a stream into an archive's objects: fixed-size plain chunks, each encrypted
//! to the node's age recipient (when a passphrase is configured), named by the SHA-256
//! of its stored bytes and written to the repository.
//!
//! Two threads, as `age | sha256sum` runs two processes: this one reads and encrypts
//! chunk n+1 while the other hashes and writes chunk n. Each object is a whole age file,
//! so any one can be checked or decrypted alone (the `age` CLI opens it with the node's
//! identity). Memory is bounded: two chunks in flight plus the one being read.

use std::io::{Read, Write};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use super::manifest::ObjectEntry;
use super::repo::Repo;
use crate::error::{Error, Result};

/// Plain bytes per object: big enough that per-object costs (a request, an fsync, an age
/// header) vanish, small enough that a failed upload re-sends little.
pub const CHUNK_SIZE: usize = 32 << 20;

/// What packing a stream made.
#[derive(Debug, Default)]
pub struct Packed {
    pub objects: Vec<ObjectEntry>,
    pub original_size: u64,
    pub stored_size: u64,
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
    let (tx, rx) = mpsc::sync_channel::<(Vec<u8>, u64)>(1);
    std::thread::scope(|scope| {
        let store = scope.spawn(move || -> (Vec<ObjectEntry>, Result<()>) {
            let mut objects = Vec::new();
            for (stored, plain_size) in rx {
                let sha256 = hex::encode(Sha256::digest(&stored));
                if let Err(e) = repo.put_object(&sha256, &stored) {
                    return (objects, Err(e));
                }
                objects.push(ObjectEntry { sha256, stored_size: stored.len() as u64, plain_size });
            }
            (objects, Ok(()))
        });
        let read = (|| -> Result<()> {
            loop {
                let plain = read_chunk(input, chunk_size)?;
                if plain.is_empty() {
                    return Ok(());
                }
                let plain_size = plain.len() as u64;
                let stored = match recipient {
                    Some(r) => encrypt(r, &plain)?,
                    None => plain,
                };
                if tx.send((stored, plain_size)).is_err() {
                    // The writer stopped: its error is the one to report.
                    return Ok(());
                }
            }
        })();
        drop(tx);
        let (objects, stored) = store.join().map_err(|_| Error::internal("the archive writer thread panicked"))?;
        written.extend(objects.iter().cloned());
        stored?;
        read?;
        let original_size = objects.iter().map(|o| o.plain_size).sum();
        let stored_size = objects.iter().map(|o| o.stored_size).sum();
        Ok(Packed { objects, original_size, stored_size })
    })
}

/// Up to `size` bytes: fewer only at the end of the stream.
fn read_chunk(input: &mut dyn Read, size: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size);
    input.take(size as u64).read_to_end(&mut buf).map_err(|e| Error::os("reading the stream to archive", e))?;
    Ok(buf)
}

/// One chunk as a whole age file to `recipient`.
pub fn encrypt(recipient: &age::x25519::Recipient, plain: &[u8]) -> Result<Vec<u8>> {
    let encryptor = age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
        .map_err(|e| Error::internal(format!("age: {e}")))?;
    // age adds a ~200-byte header and 16 bytes per 64 KiB.
    let mut out = Vec::with_capacity(plain.len() + plain.len() / 4096 + 512);
    let mut w = encryptor.wrap_output(&mut out).map_err(|e| Error::os("encrypting a chunk", e))?;
    w.write_all(plain).map_err(|e| Error::os("encrypting a chunk", e))?;
    w.finish().map_err(|e| Error::os("encrypting a chunk", e))?;
    Ok(out)
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
}
