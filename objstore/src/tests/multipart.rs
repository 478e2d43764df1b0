use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use md5::{Digest, Md5};

use super::{TestBucket, bucket, md5_hex, put, read};
use crate::{Commit, ErrorKind, Meta, PartMeta};

fn put_part(b: &TestBucket, id: &str, number: u32, data: &[u8]) -> PartMeta {
    let mut temp = b.temp().unwrap();
    temp.write_all(data).unwrap();
    b.put_part(id, number, temp, BTreeMap::new()).unwrap()
}

/// An upload of "big" with parts 1..=3 of 8, 8 and 3 bytes; returns its id.
fn three_parts(b: &TestBucket) -> (String, Vec<(u32, String)>) {
    let id = b.create_upload("big", &Meta::default()).unwrap();
    let listed = [(1, &b"aaaaaaaa"[..]), (2, b"bbbbbbbb"), (3, b"ccc")]
        .into_iter()
        .map(|(n, data)| (n, put_part(b, &id, n, data).etag))
        .collect();
    (id, listed)
}

#[test]
fn a_completed_upload_is_the_parts_in_order_with_the_s3_etag() {
    let b = bucket();
    let meta = Meta { content_type: Some("application/zip".into()), ..Meta::default() };
    let id = b.create_upload("archive/big.zip", &meta).unwrap();
    assert_eq!(id.len(), 32);
    let upload = b.upload(&id).unwrap();
    assert_eq!((upload.key.as_str(), &upload.meta), ("archive/big.zip", &meta));

    let datas: [&[u8]; 3] = [&[1u8; 6000], &[2u8; 6000], b"tail"];
    // Out of order, and part 2 sent twice: the second replaces the first.
    let p3 = put_part(&b, &id, 3, datas[2]);
    put_part(&b, &id, 2, b"stale");
    let p2 = put_part(&b, &id, 2, datas[1]);
    let p1 = put_part(&b, &id, 1, datas[0]);
    assert_eq!(p1.etag, md5_hex(datas[0]));
    assert_eq!((p1.size, p3.size), (6000, 4));

    let listed = vec![(1, format!("\"{}\"", p1.etag)), (2, p2.etag.clone()), (3, p3.etag.clone())];
    let object = b.complete(&id, &listed, 5000, b.upload(&id).unwrap().meta, Commit::IfAbsent).unwrap();

    let mut md5s = Md5::new();
    for data in datas {
        md5s.update(Md5::digest(data));
    }
    let expected_etag = format!("{}-3", hex::encode(md5s.finalize()));
    assert_eq!(object.meta.etag, expected_etag);
    assert_eq!(object.meta.parts, Some(3));
    assert_eq!(object.meta.content_type.as_deref(), Some("application/zip"));
    assert_eq!(object.size, 12_004);
    assert_eq!(read(&b, "archive/big.zip"), datas.concat());
    assert_eq!(b.stat("archive/big.zip").unwrap(), object);

    assert_eq!(b.upload(&id).unwrap_err().kind, ErrorKind::NotFound);
    assert!(b.names(".uploads").is_empty());
    assert!(b.names(".tmp").is_empty());
}

#[test]
fn each_bad_part_list_is_refused_and_the_upload_stays() {
    let b = bucket();
    let (id, listed) = three_parts(&b);
    let refuse = |parts: Vec<(u32, String)>, min: u64| {
        b.complete(&id, &parts, min, Meta::default(), Commit::Replace).unwrap_err()
    };
    let etag = |n: usize| listed[n].1.clone();

    let err = refuse(vec![(2, etag(1)), (1, etag(0))], 1);
    assert_eq!(err.kind, ErrorKind::InvalidPartOrder);
    assert_eq!(refuse(vec![(1, etag(0)), (1, etag(0))], 1).kind, ErrorKind::InvalidPartOrder, "repeated");

    let err = refuse(vec![(1, etag(0)), (4, etag(2))], 1);
    assert_eq!(err.kind, ErrorKind::InvalidPart);
    assert!(err.message.contains("part 4"), "{err}");
    let err = refuse(vec![(1, etag(0)), (2, etag(0))], 1);
    assert_eq!(err.kind, ErrorKind::InvalidPart);
    assert!(err.message.contains("part 2: the etag differs"), "{err}");
    assert_eq!(refuse(vec![], 1).kind, ErrorKind::InvalidPart);

    let err = refuse(listed.clone(), 9);
    assert_eq!(err.kind, ErrorKind::EntityTooSmall);
    assert!(err.message.contains("part 1 is 8 bytes"), "{err}");

    put(&b, "big", b"exists", Commit::Replace).unwrap();
    let err = b.complete(&id, &listed, 8, Meta::default(), Commit::IfAbsent).unwrap_err();
    assert_eq!(err.kind, ErrorKind::PreconditionFailed);
    assert_eq!(read(&b, "big"), b"exists");

    assert_eq!(b.parts(&id, 0, 10).unwrap().0.len(), 3, "every failure left the upload whole");
    assert!(b.names(".tmp").is_empty());
    // The last part may be small; the others meet the minimum of 8.
    let object = b.complete(&id, &listed, 8, Meta::default(), Commit::Replace).unwrap();
    assert_eq!(object.size, 19);
}

#[test]
fn a_subset_of_parts_can_complete() {
    let b = bucket();
    let (id, listed) = three_parts(&b);
    let object = b.complete(&id, &[listed[0].clone(), listed[2].clone()], 8, Meta::default(), Commit::Replace).unwrap();
    assert_eq!(read(&b, "big"), b"aaaaaaaaccc");
    assert_eq!(object.meta.parts, Some(2));
}

#[test]
fn parts_page_by_number_and_open_for_reading() {
    let b = bucket();
    let (id, _) = three_parts(&b);
    let (page, truncated) = b.parts(&id, 0, 2).unwrap();
    assert_eq!(page.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 2]);
    assert!(truncated);
    let (page, truncated) = b.parts(&id, 2, 2).unwrap();
    assert_eq!(page.iter().map(|p| (p.number, p.size)).collect::<Vec<_>>(), [(3, 3)]);
    assert!(!truncated);
    assert_eq!(page[0].meta.etag, md5_hex(b"ccc"));
    assert_eq!(b.parts(&id, 0, 0).unwrap(), (vec![], false));

    let (mut file, info) = b.part_file(&id, 2).unwrap();
    let mut data = Vec::new();
    file.read_to_end(&mut data).unwrap();
    assert_eq!((data.as_slice(), info.number), (&b"bbbbbbbb"[..], 2));
    assert_eq!(b.part_file(&id, 9).unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn part_numbers_and_ids_outside_their_rules_are_refused() {
    let b = bucket();
    let id = b.create_upload("k", &Meta::default()).unwrap();
    for number in [0, 10_001] {
        let temp = b.temp().unwrap();
        let err = b.put_part(&id, number, temp, BTreeMap::new()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidPart, "{number}");
    }
    for bad in ["../../objects", "", &id.to_uppercase(), &format!("{id}0")] {
        assert_eq!(b.upload(bad).unwrap_err().kind, ErrorKind::NotFound, "{bad:?}");
        assert_eq!(b.abort(bad).unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(b.parts(bad, 0, 5).unwrap_err().kind, ErrorKind::NotFound);
        let temp = b.temp().unwrap();
        assert_eq!(b.put_part(bad, 1, temp, BTreeMap::new()).unwrap_err().kind, ErrorKind::NotFound);
    }
    assert_eq!(b.create_upload("a/../b", &Meta::default()).unwrap_err().kind, ErrorKind::InvalidKey);
    assert!(b.names(".tmp").is_empty());
}

#[test]
fn a_part_with_appended_bytes_is_refused_for_want_of_an_md5() {
    let b = bucket();
    put(&b, "src", b"source bytes", Commit::Replace).unwrap();
    let id = b.create_upload("k", &Meta::default()).unwrap();
    let (src, _) = b.open_object("src").unwrap();
    let mut temp = b.temp().unwrap();
    temp.append_from(&src, 0, 6).unwrap();
    let err = b.put_part(&id, 1, temp, BTreeMap::new()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Io);
    assert_eq!(b.parts(&id, 0, 5).unwrap().0.len(), 0);
}

#[test]
fn checksums_are_kept_with_the_part() {
    let b = bucket();
    let id = b.create_upload("k", &Meta::default()).unwrap();
    let mut temp = b.temp().unwrap();
    temp.write_all(b"x").unwrap();
    let checksums = BTreeMap::from([("crc32".to_owned(), "jHNlIQ==".to_owned())]);
    let part = b.put_part(&id, 7, temp, checksums.clone()).unwrap();
    assert_eq!(part.checksums, checksums);
    assert_eq!(b.part_file(&id, 7).unwrap().1.meta, part);
}

#[test]
fn abort_removes_the_upload_and_its_parts() {
    let b = bucket();
    let (id, _) = three_parts(&b);
    b.abort(&id).unwrap();
    assert_eq!(b.upload(&id).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(b.abort(&id).unwrap_err().kind, ErrorKind::NotFound);
    let temp = b.temp().unwrap();
    assert_eq!(b.put_part(&id, 1, temp, BTreeMap::new()).unwrap_err().kind, ErrorKind::NotFound);
    assert!(b.names(".uploads").is_empty());
    assert!(b.names(".tmp").is_empty());
}

#[test]
fn uploads_list_by_key_then_start_then_id() {
    let b = bucket();
    let mut started = Vec::new();
    for key in ["b", "a", "a", "c/d", "a"] {
        started.push((key, b.create_upload(key, &Meta::default()).unwrap()));
        std::thread::sleep(Duration::from_millis(2));
    }
    let (all, truncated) = b.list_uploads("", None, None, 100).unwrap();
    assert!(!truncated);
    let order: Vec<(&str, &str)> = all.iter().map(|u| (u.key.as_str(), u.id.as_str())).collect();
    let id = |n: usize| started[n].1.as_str();
    assert_eq!(order, [("a", id(1)), ("a", id(2)), ("a", id(4)), ("b", id(0)), ("c/d", id(3))]);

    let (page, truncated) = b.list_uploads("", None, None, 2).unwrap();
    assert_eq!(page.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), [id(1), id(2)]);
    assert!(truncated);
    let (page, truncated) = b.list_uploads("", Some("a"), Some(id(2)), 2).unwrap();
    assert_eq!(page.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), [id(4), id(0)]);
    assert!(truncated);
    let (page, _) = b.list_uploads("", Some("a"), None, 10).unwrap();
    assert_eq!(page.iter().map(|u| u.key.as_str()).collect::<Vec<_>>(), ["b", "c/d"], "key marker alone: later keys");
    let (page, _) = b.list_uploads("c/", None, None, 10).unwrap();
    assert_eq!(page.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), [id(3)]);
    assert_eq!(b.list_uploads("", None, None, 0).unwrap(), (vec![], false));
}

#[test]
fn expire_removes_only_uploads_started_before_the_cutoff() {
    let b = bucket();
    let old = b.create_upload("old", &Meta::default()).unwrap();
    put_part(&b, &old, 1, b"p");
    std::thread::sleep(Duration::from_millis(300));
    let young = b.create_upload("young", &Meta::default()).unwrap();
    put_part(&b, &young, 1, b"p");

    assert_eq!(b.expire_uploads(Duration::from_secs(3600)).unwrap(), 0);
    assert_eq!(b.expire_uploads(Duration::from_millis(150)).unwrap(), 1);
    assert_eq!(b.upload(&old).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(b.upload(&young).unwrap().key, "young");
    assert_eq!(b.names(".uploads"), [young]);
    assert!(b.names(".tmp").is_empty());
}

#[test]
fn the_upload_record_lives_in_the_upload_directory() {
    let b = bucket();
    let id = b.create_upload("k", &Meta { cache_control: Some("max-age=1".into()), ..Meta::default() }).unwrap();
    let reopened = crate::Bucket::open(b.root()).unwrap();
    let upload = reopened.upload(&id).unwrap();
    assert_eq!(upload.meta.cache_control.as_deref(), Some("max-age=1"));
    let age = std::time::SystemTime::now().duration_since(upload.initiated).unwrap();
    assert!(age < Duration::from_secs(60), "{age:?}");
    assert_eq!(b.names(&format!(".uploads/{id}")), Vec::<String>::new());
}
