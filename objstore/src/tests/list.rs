use proptest::prelude::*;
use proptest::sample::Index;

use super::{TestBucket, bucket, md5_hex, put, shown};
use crate::{Commit, Entry, Page};

fn planted(keys: &[&str]) -> TestBucket {
    let b = bucket();
    for key in keys {
        b.plant(key);
    }
    b
}

fn list(b: &TestBucket, prefix: &str, delimiter: Option<&str>, after: Option<&str>, max: usize) -> Page {
    b.list(prefix, delimiter, after, max).unwrap()
}

/// Every entry, page after page of `max`, each page resuming after the last entry.
fn all_pages(b: &TestBucket, prefix: &str, delimiter: Option<&str>, max: usize) -> Vec<String> {
    let mut entries = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = list(b, prefix, delimiter, after.as_deref(), max);
        assert!(page.entries.len() <= max);
        if page.truncated {
            assert_eq!(page.entries.len(), max, "a truncated page is full");
        }
        entries.extend(shown(&page));
        match page.entries.last() {
            Some(last) if page.truncated => after = Some(last.name().to_owned()),
            _ => return entries,
        }
    }
}

const AWKWARD: &[&str] = &["a-c", "a/b", "a/c/d", "a.b", "a0", "a/b-x", "b"];

#[test]
fn keys_come_in_byte_order_across_directories() {
    let b = planted(AWKWARD);
    assert_eq!(shown(&list(&b, "", None, None, 100)), ["a-c", "a.b", "a/b", "a/b-x", "a/c/d", "a0", "b"]);
}

#[test]
fn utf8_keys_sort_by_their_bytes() {
    let keys = ["z", "ü", "日本/語", "u", "é/x", "e"];
    let b = planted(&keys);
    let mut expected: Vec<&str> = keys.to_vec();
    expected.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    assert_eq!(shown(&list(&b, "", None, None, 100)), expected);
    assert_eq!(shown(&list(&b, "", Some("/"), None, 100)), ["e", "u", "z", "prefix:é/", "ü", "prefix:日本/"]);
}

#[test]
fn the_slash_delimiter_groups_directories_into_prefixes() {
    let b = planted(AWKWARD);
    assert_eq!(shown(&list(&b, "", Some("/"), None, 100)), ["a-c", "a.b", "prefix:a/", "a0", "b"]);
    assert_eq!(shown(&list(&b, "a/", Some("/"), None, 100)), ["a/b", "a/b-x", "prefix:a/c/"]);
    assert_eq!(shown(&list(&b, "a", Some("/"), None, 100)), ["a-c", "a.b", "prefix:a/", "a0"]);
    assert_eq!(shown(&list(&b, "a/c", Some("/"), None, 100)), ["prefix:a/c/"]);
    assert_eq!(shown(&list(&b, "a/c/", Some("/"), None, 100)), ["a/c/d"]);
}

#[test]
fn a_prefix_limits_the_walk_to_matching_keys() {
    let b = planted(&["photos/2023/a.jpg", "photos/2024/b.jpg", "photos/2024/c.jpg", "photos/x", "phone", "other/p"]);
    assert_eq!(
        shown(&list(&b, "ph", None, None, 100)),
        ["phone", "photos/2023/a.jpg", "photos/2024/b.jpg", "photos/2024/c.jpg", "photos/x"]
    );
    assert_eq!(shown(&list(&b, "photos/2", Some("/"), None, 100)), ["prefix:photos/2023/", "prefix:photos/2024/"]);
    assert_eq!(shown(&list(&b, "photos/2024/", None, None, 100)), ["photos/2024/b.jpg", "photos/2024/c.jpg"]);
    assert!(list(&b, "nothing/", None, None, 100).entries.is_empty());
    assert!(list(&b, "phone/", None, None, 100).entries.is_empty(), "below an object");
    assert!(list(&b, "photos//", None, None, 100).entries.is_empty(), "no key has an empty segment");
    assert!(list(&b, "../", None, None, 100).entries.is_empty());
}

#[test]
fn paging_resumes_after_a_key_or_after_a_whole_prefix() {
    let b = planted(AWKWARD);
    let page = list(&b, "", Some("/"), None, 3);
    assert_eq!(shown(&page), ["a-c", "a.b", "prefix:a/"]);
    assert!(page.truncated);
    let page = list(&b, "", Some("/"), Some("a/"), 3);
    assert_eq!(shown(&page), ["a0", "b"], "no key under a/ again");
    assert!(!page.truncated);
    let page = list(&b, "", None, Some("a/b"), 2);
    assert_eq!(shown(&page), ["a/b-x", "a/c/d"]);
    assert!(page.truncated);
    assert_eq!(all_pages(&b, "", Some("/"), 1), ["a-c", "a.b", "prefix:a/", "a0", "b"]);
}

#[test]
fn a_page_of_exactly_the_remaining_entries_is_not_truncated() {
    let b = planted(&["x", "y"]);
    let page = list(&b, "", None, None, 2);
    assert_eq!(shown(&page), ["x", "y"]);
    assert!(!page.truncated);
    let empty = list(&b, "", None, None, 0);
    assert_eq!(empty, Page::default(), "max 0: empty and not truncated");
}

#[test]
fn empty_directories_are_never_listed_or_prefixes() {
    let b = planted(&["k", "full/x"]);
    std::fs::create_dir_all(b.path("objects/empty/deeper/still")).unwrap();
    std::fs::create_dir_all(b.path("objects/full/hollow")).unwrap();
    std::fs::create_dir_all(b.path("objects/zz-empty")).unwrap();
    assert_eq!(shown(&list(&b, "", Some("/"), None, 100)), ["prefix:full/", "k"]);
    assert_eq!(shown(&list(&b, "", None, None, 100)), ["full/x", "k"]);
    assert_eq!(shown(&list(&b, "full/", Some("/"), None, 100)), ["full/x"]);
    let page = list(&b, "", Some("/"), None, 1);
    assert_eq!(shown(&page), ["prefix:full/"]);
    assert!(page.truncated, "k follows");
    let page = list(&b, "", Some("/"), Some("full/"), 1);
    assert_eq!(shown(&page), ["k"]);
    assert!(!page.truncated, "an empty directory after k is no next entry");
}

#[test]
fn other_delimiters_group_on_their_first_occurrence_after_the_prefix() {
    let b = planted(&["a-b-c", "a-b-d", "a-x", "a/y-z", "ab", "q-1"]);
    assert_eq!(shown(&list(&b, "", Some("-"), None, 100)), ["prefix:a-", "prefix:a/y-", "ab", "prefix:q-"]);
    assert_eq!(shown(&list(&b, "a-", Some("-"), None, 100)), ["prefix:a-b-", "a-x"]);
    assert_eq!(all_pages(&b, "", Some("-"), 1), ["prefix:a-", "prefix:a/y-", "ab", "prefix:q-"]);
    assert_eq!(shown(&list(&b, "", Some("y-"), None, 100)), ["a-b-c", "a-b-d", "a-x", "prefix:a/y-", "ab", "q-1"]);
    assert_eq!(shown(&list(&b, "", Some(""), None, 100)).len(), 6, "an empty delimiter is none");
}

#[test]
fn listed_objects_carry_size_and_metadata() {
    let b = bucket();
    put(&b, "dir/k", b"12345", Commit::Replace).unwrap();
    let page = list(&b, "", None, None, 10);
    let [Entry::Object(object)] = page.entries.as_slice() else { panic!("{page:?}") };
    assert_eq!((object.key.as_str(), object.size), ("dir/k", 5));
    assert_eq!(object.meta.etag, md5_hex(b"12345"));
    assert_eq!(object, &b.stat("dir/k").unwrap());
}

#[test]
fn the_stores_own_trees_never_show() {
    let b = planted(&["k"]);
    b.create_upload("up", &crate::Meta::default()).unwrap();
    let _temp = b.temp().unwrap();
    assert_eq!(shown(&list(&b, "", None, None, 100)), ["k"]);
    assert!(list(&b, ".tmp/", None, None, 100).entries.is_empty());
    assert!(list(&b, ".uploads", None, None, 100).entries.is_empty());
}

// Random key sets on a small alphabet that collides often ('-' and '.' sort before
// '/', '0' after it, 'é' is two bytes).
fn segment() -> impl Strategy<Value = String> {
    "[ab.0é-]{1,3}".prop_filter("a key segment", |s| s != "." && s != "..")
}

fn key_set() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop::collection::vec(segment(), 1..4).prop_map(|s| s.join("/")), 1..14).prop_map(
        |mut keys| {
            keys.sort();
            keys.dedup();
            // No key may be a directory of another (that is a Conflict, not a listing).
            let all = keys.clone();
            keys.retain(|k| !all.iter().any(|other| other.starts_with(&format!("{k}/"))));
            keys.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
            keys
        },
    )
}

/// What a listing must return, computed from the sorted keys alone.
fn reference(sorted: &[String], prefix: &str, delimiter: &str) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    for key in sorted.iter().filter(|k| k.starts_with(prefix)) {
        let entry = match key[prefix.len()..].find(delimiter) {
            Some(at) => format!("prefix:{}", &key[..prefix.len() + at + delimiter.len()]),
            None => key.clone(),
        };
        if entries.last() != Some(&entry) {
            entries.push(entry);
        }
    }
    entries
}

/// A prefix of one of the keys, cut at a character boundary (or nothing).
fn prefix_of(keys: &[String], which: Index, cut: Index) -> String {
    let key = which.get(keys);
    let boundaries: Vec<usize> = key.char_indices().map(|(at, _)| at).chain([key.len()]).collect();
    key[..*cut.get(&boundaries)].to_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn pages_without_delimiter_concatenate_to_all_keys(keys in key_set(), max in 1usize..7) {
        let b = bucket();
        for key in &keys {
            b.plant(key);
        }
        prop_assert_eq!(all_pages(&b, "", None, max), keys);
    }

    #[test]
    fn pages_with_slash_delimiter_match_the_reference(
        keys in key_set(),
        max in 1usize..7,
        which in any::<Index>(),
        cut in any::<Index>(),
    ) {
        let b = bucket();
        for key in &keys {
            b.plant(key);
        }
        let prefix = prefix_of(&keys, which, cut);
        prop_assert_eq!(all_pages(&b, &prefix, Some("/"), max), reference(&keys, &prefix, "/"), "prefix {:?}", prefix);
        prop_assert_eq!(all_pages(&b, "", Some("/"), max), reference(&keys, "", "/"));
    }
}
