//! Tests of the bucket on a real directory tree (a tempdir): what lands on disk is
//! checked through the filesystem, not only through the API.

mod list;
mod multipart;
mod objects;

use std::io::{Read, Write};
use std::path::PathBuf;

use md5::{Digest, Md5};

use crate::{Bucket, Commit, Entry, Meta, ObjectInfo, Page, Result};

pub(crate) struct TestBucket {
    _dir: tempfile::TempDir,
    pub(crate) bucket: Bucket,
}

impl std::ops::Deref for TestBucket {
    type Target = Bucket;
    fn deref(&self) -> &Bucket {
        &self.bucket
    }
}

impl TestBucket {
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.bucket.root().join(rel)
    }

    /// Names in a directory of the bucket, sorted.
    pub(crate) fn names(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(self.path(rel)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    /// An object written straight into objects/, without a commit: listing tests need
    /// many keys and no durability.
    pub(crate) fn plant(&self, key: &str) {
        let path = self.path("objects").join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, key.as_bytes()).unwrap();
    }
}

pub(crate) fn bucket() -> TestBucket {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bucket");
    Bucket::create(&root).unwrap();
    let bucket = Bucket::open(&root).unwrap();
    TestBucket { _dir: dir, bucket }
}

pub(crate) fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

pub(crate) fn meta_of(data: &[u8]) -> Meta {
    Meta { etag: md5_hex(data), ..Meta::default() }
}

pub(crate) fn put(bucket: &Bucket, key: &str, data: &[u8], cond: Commit<'_>) -> Result<ObjectInfo> {
    let mut temp = bucket.temp()?;
    temp.write_all(data)?;
    let meta = Meta { etag: hex::encode(temp.md5()), ..Meta::default() };
    bucket.commit(temp, key, &meta, cond)
}

pub(crate) fn read(bucket: &Bucket, key: &str) -> Vec<u8> {
    let (mut file, _) = bucket.open_object(key).unwrap();
    let mut data = Vec::new();
    file.read_to_end(&mut data).unwrap();
    data
}

/// A page as text: a key as itself, a common prefix as "prefix:<it>".
pub(crate) fn shown(page: &Page) -> Vec<String> {
    page.entries
        .iter()
        .map(|entry| match entry {
            Entry::Object(object) => object.key.clone(),
            Entry::Prefix(prefix) => format!("prefix:{prefix}"),
        })
        .collect()
}
