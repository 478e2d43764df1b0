use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::Barrier;
use std::time::{Duration, SystemTime};

use super::{bucket, md5_hex, meta_of, put, read};
use crate::{Bucket, Commit, ErrorKind, Meta};

#[test]
fn put_stat_open_delete_round_trip_with_meta() {
    let b = bucket();
    let data = b"hello, object";
    let meta = Meta {
        etag: md5_hex(data),
        content_type: Some("text/plain".into()),
        cache_control: Some("no-cache".into()),
        user: BTreeMap::from([("owner".into(), "ops".into())]),
        ..Meta::default()
    };
    let mut temp = b.temp().unwrap();
    temp.write_all(data).unwrap();
    let before = SystemTime::now() - Duration::from_secs(2);
    let committed = b.commit(temp, "docs/2024/a.txt", &meta, Commit::Replace).unwrap();
    assert_eq!(committed.key, "docs/2024/a.txt");
    assert_eq!(committed.size, data.len() as u64);
    assert_eq!(committed.meta, meta);
    assert!(committed.modified > before);

    assert_eq!(b.stat("docs/2024/a.txt").unwrap(), committed);
    assert_eq!(read(&b, "docs/2024/a.txt"), data);
    assert_eq!(std::fs::read(b.path("objects/docs/2024/a.txt")).unwrap(), data, "the key is the path");
    let mode = std::fs::metadata(b.path("objects/docs/2024/a.txt")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(b.names(".tmp").is_empty(), "the temp was renamed, not copied");

    assert!(b.delete("docs/2024/a.txt").unwrap());
    assert_eq!(b.stat("docs/2024/a.txt").unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(b.open_object("docs/2024/a.txt").unwrap_err().kind, ErrorKind::NotFound);
    assert!(!b.delete("docs/2024/a.txt").unwrap(), "absent: false");
    assert!(b.names("objects").is_empty(), "the emptied directories went too");
}

#[test]
fn rmdir_up_stops_at_a_directory_that_still_holds_keys() {
    let b = bucket();
    put(&b, "a/b/c", b"1", Commit::Replace).unwrap();
    put(&b, "a/x", b"2", Commit::Replace).unwrap();
    assert!(b.delete("a/b/c").unwrap());
    assert_eq!(b.names("objects/a"), ["x"]);
    assert!(b.delete("a/x").unwrap());
    assert!(b.names("objects").is_empty());
}

#[test]
fn an_object_under_a_key_path_conflicts_both_ways() {
    let b = bucket();
    put(&b, "a", b"file a", Commit::Replace).unwrap();
    let err = put(&b, "a/b", b"x", Commit::Replace).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert_eq!(err.message, r#"key "a/b": "a" is an object"#);
    put(&b, "x/y", b"file x/y", Commit::Replace).unwrap();
    let err = put(&b, "x/y/z", b"x", Commit::Replace).unwrap_err();
    assert_eq!(err.message, r#"key "x/y/z": "x/y" is an object"#);

    put(&b, "p/q", b"file p/q", Commit::Replace).unwrap();
    for cond in [Commit::Replace, Commit::IfAbsent] {
        let err = put(&b, "p", b"x", cond).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Conflict, "{cond:?}");
        assert_eq!(err.message, r#"key "p" is a prefix of other keys"#);
    }
    assert_eq!(read(&b, "a"), b"file a");
    assert_eq!(read(&b, "x/y"), b"file x/y");
    assert_eq!(read(&b, "p/q"), b"file p/q");
    assert_eq!(b.stat("p").unwrap_err().kind, ErrorKind::NotFound, "a prefix is no object");
    assert!(!b.delete("p").unwrap(), "nor is it deleted as one");
    assert!(b.names(".tmp").is_empty(), "failed commits leave no temp");
}

#[test]
fn an_empty_directory_a_crash_left_does_not_block_its_key() {
    let b = bucket();
    std::fs::create_dir_all(b.path("objects/a/b")).unwrap();
    put(&b, "a/b", b"now a file", Commit::IfAbsent).unwrap();
    assert_eq!(read(&b, "a/b"), b"now a file");
}

#[test]
fn if_absent_publishes_once() {
    let b = bucket();
    put(&b, "k", b"first", Commit::IfAbsent).unwrap();
    let err = put(&b, "k", b"second", Commit::IfAbsent).unwrap_err();
    assert_eq!(err.kind, ErrorKind::PreconditionFailed);
    assert_eq!(read(&b, "k"), b"first");
    assert!(b.names(".tmp").is_empty());
    let nlink = std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(b.path("objects/k")).unwrap());
    assert_eq!(nlink, 1, "the temp's name was unlinked after the link");
}

#[test]
fn racing_if_absent_commits_publish_exactly_one() {
    let b = bucket();
    let start = Barrier::new(8);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (b, start) = (&b.bucket, &start);
                s.spawn(move || {
                    let data = format!("writer {i}");
                    let mut temp = b.temp().unwrap();
                    temp.write_all(data.as_bytes()).unwrap();
                    start.wait();
                    b.commit(temp, "race/k", &meta_of(data.as_bytes()), Commit::IfAbsent).map(|_| data)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for result in &results {
        if let Err(err) = result {
            assert_eq!(err.kind, ErrorKind::PreconditionFailed, "{err}");
        }
    }
    assert_eq!(read(&b, "race/k"), winners[0].as_bytes());
    assert!(b.names(".tmp").is_empty());
}

#[test]
fn if_match_compares_etags_without_quotes() {
    let b = bucket();
    let err = put(&b, "k", b"v0", Commit::IfMatch("*")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::PreconditionFailed, "no object matches nothing, not even *");
    let v1 = put(&b, "k", b"v1", Commit::Replace).unwrap();

    let err = put(&b, "k", b"v2", Commit::IfMatch(&md5_hex(b"other"))).unwrap_err();
    assert_eq!(err.kind, ErrorKind::PreconditionFailed);
    assert_eq!(read(&b, "k"), b"v1");

    let quoted = format!("\"{}\"", v1.meta.etag);
    let v2 = put(&b, "k", b"v2", Commit::IfMatch(&quoted)).unwrap();
    assert_eq!(read(&b, "k"), b"v2");
    put(&b, "k", b"v3", Commit::IfMatch(&v2.meta.etag)).unwrap();
    put(&b, "k", b"v4", Commit::IfMatch("*")).unwrap();
    assert_eq!(read(&b, "k"), b"v4");
    assert_eq!(b.stat("k").unwrap().meta.etag, md5_hex(b"v4"));
}

#[test]
fn replace_swaps_data_and_metadata() {
    let b = bucket();
    let meta = Meta { content_type: Some("a/b".into()), ..meta_of(b"old") };
    let mut temp = b.temp().unwrap();
    temp.write_all(b"old").unwrap();
    b.commit(temp, "k", &meta, Commit::Replace).unwrap();
    put(&b, "k", b"new!", Commit::Replace).unwrap();
    let info = b.stat("k").unwrap();
    assert_eq!(info.size, 4);
    assert_eq!(info.meta, meta_of(b"new!"), "no metadata carried over");
}

#[test]
fn a_temp_dropped_uncommitted_leaves_nothing() {
    let b = bucket();
    let mut temp = b.temp().unwrap();
    temp.write_all(&[7u8; 4096]).unwrap();
    assert_eq!(b.names(".tmp").len(), 1);
    let mode = std::fs::metadata(b.path(".tmp").join(&b.names(".tmp")[0])).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(temp);
    assert!(b.names(".tmp").is_empty());
    assert!(b.names("objects").is_empty());
}

#[test]
fn open_sweeps_what_an_earlier_run_left_in_tmp() {
    let b = bucket();
    put(&b, "kept", b"k", Commit::Replace).unwrap();
    let abandoned = b.temp().unwrap();
    std::mem::forget(abandoned); // as a crash would
    std::fs::create_dir_all(b.path(".tmp/upload-0123/deeper")).unwrap();
    std::fs::write(b.path(".tmp/upload-0123/deeper/part-00001"), b"p").unwrap();
    assert_eq!(b.names(".tmp").len(), 2);

    let reopened = Bucket::open(b.root()).unwrap();
    assert!(b.names(".tmp").is_empty());
    assert_eq!(read(&reopened, "kept"), b"k");
}

#[test]
fn create_is_idempotent_and_open_refuses_what_is_no_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("deep/er/root");
    Bucket::create(&root).unwrap();
    Bucket::create(&root).unwrap();
    for name in ["objects", ".tmp", ".uploads"] {
        assert!(root.join(name).is_dir(), "{name}");
    }
    let err = Bucket::open(&dir.path().join("missing")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(!err.message.contains(dir.path().to_str().unwrap()), "no absolute path: {err}");

    let odd = dir.path().join("odd");
    std::fs::create_dir(&odd).unwrap();
    std::fs::write(odd.join("objects"), b"not a directory").unwrap();
    let err = Bucket::open(&odd).unwrap_err();
    assert!(err.message.contains("objects"), "{err}");

    let fresh = dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    Bucket::open(&fresh).unwrap();
    assert!(fresh.join("objects").is_dir(), "open makes a missing layout");
}

#[test]
fn keys_breaking_a_rule_never_reach_the_disk() {
    let b = bucket();
    for key in ["a/../b", "/abs", "a//b", ""] {
        let err = put(&b, key, b"x", Commit::Replace).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidKey, "{key:?}");
        assert_eq!(b.stat(key).unwrap_err().kind, ErrorKind::InvalidKey);
        assert_eq!(b.delete(key).unwrap_err().kind, ErrorKind::InvalidKey);
    }
    assert_eq!(put(&b, &"k".repeat(1025), b"x", Commit::Replace).unwrap_err().kind, ErrorKind::KeyTooLong);
    assert!(b.names("objects").is_empty());
    assert!(b.names(".tmp").is_empty());
}

#[test]
fn symlinks_planted_under_objects_are_never_followed() {
    let b = bucket();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(outside.path(), b.path("objects/dir-link")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), b.path("objects/file-link")).unwrap();

    assert_eq!(b.stat("dir-link/secret").unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(b.open_object("file-link").unwrap_err().kind, ErrorKind::NotFound);
    assert!(!b.delete("dir-link/secret").unwrap());
    assert!(!b.delete("file-link").unwrap());
    assert!(put(&b, "dir-link/new", b"x", Commit::Replace).is_err());
    assert_eq!(b.set_meta("file-link", &Meta::default()).unwrap_err().kind, ErrorKind::NotFound);

    let mut outside_names: Vec<_> =
        std::fs::read_dir(outside.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    outside_names.sort();
    assert_eq!(outside_names, ["secret"], "nothing written outside");
    assert_eq!(std::fs::read(outside.path().join("secret")).unwrap(), b"secret");
}

#[test]
fn metadata_too_large_is_refused_and_nothing_is_published() {
    let b = bucket();
    let mut meta = meta_of(b"x");
    meta.user.insert("big".into(), "v".repeat(crate::META_MAX));
    let mut temp = b.temp().unwrap();
    temp.write_all(b"x").unwrap();
    let err = b.commit(temp, "k", &meta, Commit::Replace).unwrap_err();
    assert_eq!((err.kind, err.message.as_str()), (ErrorKind::InvalidKey, "metadata too large"));
    assert_eq!(b.stat("k").unwrap_err().kind, ErrorKind::NotFound);
    assert!(b.names(".tmp").is_empty());
}

#[test]
fn set_meta_replaces_the_metadata_and_the_time_but_not_the_data() {
    let b = bucket();
    put(&b, "k", b"data", Commit::Replace).unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options().write(true).open(b.path("objects/k")).unwrap().set_modified(old).unwrap();
    assert_eq!(b.stat("k").unwrap().modified, old);

    let meta = Meta { content_type: Some("image/png".into()), ..meta_of(b"data") };
    b.set_meta("k", &meta).unwrap();
    let info = b.stat("k").unwrap();
    assert_eq!(info.meta, meta);
    assert!(info.modified > old + Duration::from_secs(1));
    assert_eq!(read(&b, "k"), b"data");
    assert_eq!(b.set_meta("absent", &meta).unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn is_empty_counts_objects_only() {
    let b = bucket();
    assert!(b.is_empty().unwrap());
    b.create_upload("pending", &Meta::default()).unwrap();
    std::fs::create_dir_all(b.path("objects/left/by/crash")).unwrap();
    assert!(b.is_empty().unwrap(), "uploads and empty directories are not objects");
    put(&b, "deep/k", b"x", Commit::Replace).unwrap();
    assert!(!b.is_empty().unwrap());
    b.delete("deep/k").unwrap();
    assert!(b.is_empty().unwrap());
}

#[test]
fn a_copy_appends_the_source_and_keeps_its_etag() {
    let b = bucket();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let source = put(&b, "src", &data, Commit::Replace).unwrap();
    let (file, _) = b.open_object("src").unwrap();
    let mut temp = b.temp().unwrap();
    assert_eq!(temp.append_from(&file, 0, source.size).unwrap(), source.size);
    let copy = b.commit(temp, "dst", &source.meta, Commit::Replace).unwrap();
    assert_eq!(copy.size, source.size);
    assert_eq!(copy.meta.etag, md5_hex(&data));
    assert_eq!(read(&b, "dst"), data);
}

#[test]
fn a_temp_commits_only_into_its_own_bucket() {
    let (one, two) = (bucket(), bucket());
    let mut temp = one.temp().unwrap();
    temp.write_all(b"x").unwrap();
    let err = two.commit(temp, "k", &meta_of(b"x"), Commit::Replace).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Io);
    assert!(one.names(".tmp").is_empty(), "the refused temp still removed itself");
    assert!(two.names("objects").is_empty());
}

#[test]
fn a_commit_whose_new_directory_is_removed_before_the_rename_tries_again() {
    for cond in [Commit::Replace, Commit::IfAbsent] {
        let b = bucket();
        let fresh = b.path("objects/fresh");
        // As a delete of another key in fresh/ would, finding the directory empty.
        *b.before_move.lock().unwrap() = Some(Box::new(move || std::fs::remove_dir(fresh).unwrap()));
        put(&b, "fresh/k", b"data", cond).unwrap();
        assert!(b.before_move.lock().unwrap().is_none(), "the race was played");
        assert_eq!(read(&b, "fresh/k"), b"data", "{cond:?}");
        assert!(b.names(".tmp").is_empty());
    }
}

#[test]
fn commits_beside_a_delete_emptying_their_directory_succeed() {
    let b = bucket();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..40 {
                put(&b, "shared/churn", b"c", Commit::Replace).unwrap();
                assert!(b.delete("shared/churn").unwrap());
            }
        });
        s.spawn(|| {
            for i in 0..40 {
                let key = format!("shared/steady-{i}");
                put(&b, &key, b"s", Commit::Replace).unwrap();
                assert!(b.delete(&key).unwrap());
            }
        });
    });
    assert!(b.names("objects").is_empty());
}

#[test]
fn bucket_and_temp_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Bucket>();
    send::<crate::Temp>();
}
