"""Design §8.6: listing 2,500 keys in S3 order (bytewise), pages, prefix and delimiter,
StartAfter, V1 markers, EncodingType=url."""

import concurrent.futures
import urllib.parse
import uuid

import pytest

from conftest import tankd_only

# Keys that sort differently bytewise than a directory walk would give them naively
# ("a-c" < "a.b" < "a/b" < "a0"), with spaces, +, %, ~ and UTF-8. No key is also a
# "directory" of another: tankd maps keys onto paths.
SPECIAL = [
    "a-c",
    "a.b",
    "a/b",
    "a/b.c/d",
    "a0",
    "b c/d e",
    "plus+sign",
    "per%cent",
    "per%25",
    "tilde~x",
    "amp&eq=q?",
    "Zed",
    "_under",
    "é",
    "ünïcødé/ключ",
    "日本語/キー",
    "z",
]
TOTAL = 2500


def listing_keys():
    nested = [f"d{i % 7}/s{i % 13}/f{i:05d}" for i in range(TOTAL - len(SPECIAL) - 50)]
    flat = [f"top{i:03d}" for i in range(50)]
    return nested + flat + SPECIAL


@pytest.fixture(scope="module")
def listed(s3a, svc_a):
    """2,500 objects under a prefix of their own; (prefix, keys relative to it)."""
    prefix = f"list-{uuid.uuid4().hex[:8]}/"
    keys = listing_keys()
    assert len(keys) == len(set(keys)) == TOTAL
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for f in [pool.submit(s3a.put_object, Bucket=svc_a.bucket, Key=prefix + k, Body=k.encode()) for k in keys]:
            f.result()
    return prefix, keys


def s3_order(keys):
    return sorted(keys, key=str.encode)


def expected(keys, prefix="", delimiter=None, start_after=""):
    """What S3 lists: (keys, common prefixes), both in bytewise order."""
    contents, common = [], set()
    for k in keys:
        if not k.startswith(prefix) or k.encode() <= start_after.encode():
            continue
        cut = k.find(delimiter, len(prefix)) if delimiter else -1
        if cut >= 0:
            common.add(k[: cut + len(delimiter)])
        else:
            contents.append(k)
    return s3_order(contents), s3_order(common)


def test_v2_paginator_lists_everything_in_byte_order(s3a, svc_a, listed):
    prefix, keys = listed
    pages = list(s3a.get_paginator("list_objects_v2").paginate(Bucket=svc_a.bucket, Prefix=prefix))
    assert [len(p.get("Contents", [])) for p in pages] == [1000, 1000, 500]
    assert [p["IsTruncated"] for p in pages] == [True, True, False]
    got = [o["Key"] for p in pages for o in p["Contents"]]
    assert got == s3_order(prefix + k for k in keys)
    sizes = {o["Key"]: o["Size"] for p in pages for o in p["Contents"]}
    assert all(sizes[prefix + k] == len(k.encode()) for k in keys)


@pytest.mark.parametrize(
    "sub, delimiter",
    [("", "/"), ("a", "/"), ("a/", "/"), ("d3/", "/"), ("d3/s1", "/"), ("", "0"), ("é", "/"), ("d", "s1")],
)
def test_prefix_and_delimiter(s3a, svc_a, listed, sub, delimiter):
    prefix, keys = listed
    full = [prefix + k for k in keys]
    # Small pages so continuation tokens fall between keys and between common prefixes.
    pages = s3a.get_paginator("list_objects_v2").paginate(
        Bucket=svc_a.bucket, Prefix=prefix + sub, Delimiter=delimiter, PaginationConfig={"PageSize": 3}
    )
    contents, common = [], []
    for page in pages:
        assert len(page.get("Contents", [])) + len(page.get("CommonPrefixes", [])) <= 3
        contents += [o["Key"] for o in page.get("Contents", [])]
        common += [c["Prefix"] for c in page.get("CommonPrefixes", [])]
    assert (contents, common) == expected(full, prefix + sub, delimiter)


def test_start_after(s3a, svc_a, listed):
    prefix, keys = listed
    full = [prefix + k for k in keys]
    for after in ["a-c", "a/b", "d3/s5/f00100", "zzz", "a"]:
        got = [
            o["Key"]
            for p in s3a.get_paginator("list_objects_v2").paginate(
                Bucket=svc_a.bucket, Prefix=prefix, StartAfter=prefix + after
            )
            for o in p.get("Contents", [])
        ]
        assert got == expected(full, prefix, start_after=prefix + after)[0], after


def test_v1_markers(s3a, svc_a, listed):
    prefix, keys = listed
    got, marker = [], ""
    while True:
        page = s3a.list_objects(Bucket=svc_a.bucket, Prefix=prefix, Marker=marker, MaxKeys=700)
        got += [o["Key"] for o in page["Contents"]]
        if not page["IsTruncated"]:
            break
        marker = page["Contents"][-1]["Key"]
    assert got == s3_order(prefix + k for k in keys)


@tankd_only("moto's V1 MaxKeys leaves out common prefixes, and its NextMarker is no key")
def test_v1_delimiter_pages_name_their_next_marker(s3a, svc_a, listed):
    prefix, keys = listed
    page = s3a.list_objects(Bucket=svc_a.bucket, Prefix=prefix, Delimiter="/", MaxKeys=5)
    want_contents, want_common = expected([prefix + k for k in keys], prefix, "/")
    assert page["IsTruncated"]
    first = sorted([o["Key"] for o in page.get("Contents", [])] + [c["Prefix"] for c in page.get("CommonPrefixes", [])],
                   key=str.encode)
    assert first == s3_order(want_contents + want_common)[:5]
    assert page["NextMarker"] == first[-1]


def test_encoding_type_url(s3a, svc_a, listed):
    prefix, keys = listed
    # botocore decodes only when it asked for the encoding itself: asked for here, the keys
    # come back as the server encoded them (a space may be "+" or "%20": botocore decodes
    # with unquote_plus, so "+" itself must be "%2B").
    raw = []
    for after, count in [("a0", 3), ("per", 3), ("top049", 4)]:
        page = s3a.list_objects_v2(
            Bucket=svc_a.bucket, Prefix=prefix, StartAfter=prefix + after, MaxKeys=count, EncodingType="url"
        )
        assert page.get("EncodingType") == "url"
        raw += [o["Key"] for o in page["Contents"]]
    decoded = [urllib.parse.unquote_plus(k) for k in raw]
    assert decoded == [prefix + k for k in ["amp&eq=q?", "b c/d e", "d0/s0/f00000", "per%25", "per%cent", "plus+sign",
                                            "z", "é", "ünïcødé/ключ", "日本語/キー"]]
    encoded = dict(zip(decoded, raw))
    assert " " not in encoded[prefix + "b c/d e"]
    assert "%2B" in encoded[prefix + "plus+sign"]
    assert encoded[prefix + "per%cent"].endswith("per%25cent")
    assert "日" not in encoded[prefix + "日本語/キー"] and "%E6%97%A5" in encoded[prefix + "日本語/キー"]


def test_max_keys_zero_and_empty_prefix(s3a, svc_a, listed):
    prefix, _ = listed
    page = s3a.list_objects_v2(Bucket=svc_a.bucket, Prefix=prefix + "no-such-", MaxKeys=1000)
    assert (page["KeyCount"], page.get("Contents", []), page["IsTruncated"]) == (0, [], False)
    page = s3a.list_objects_v2(Bucket=svc_a.bucket, Prefix=prefix, MaxKeys=2)
    assert page["KeyCount"] == 2 and page["IsTruncated"] and page["NextContinuationToken"]
