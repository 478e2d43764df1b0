"""Design §8.8: keys that cannot map onto a path are refused 400 with a message, and the
longest keys that can are served."""

import pytest

from conftest import tankd_only
from s3lib import exists, s3_error

UNMAPPABLE = {
    "dot-dot": "{k}/a/../b",
    "dot": "{k}/./b",
    "empty segment": "{k}/a//b",
    "leading slash": "/{k}/a",
    "trailing slash": "{k}/a/",
    "256-byte segment": "{k}/" + "x" * 256,
}


@tankd_only("moto stores any key")
@pytest.mark.parametrize("name", UNMAPPABLE)
def test_unmappable_key_is_refused(s3a, svc_a, key, name):
    bad = UNMAPPABLE[name].format(k=key)
    with s3_error("InvalidArgument", 400) as info:
        s3a.put_object(Bucket=svc_a.bucket, Key=bad, Body=b"x")
    assert info.value.response["Error"]["Message"], "the refusal says why"
    assert s3a.list_objects_v2(Bucket=svc_a.bucket, Prefix=key)["KeyCount"] == 0, "nothing was stored"
    if name != "leading slash":
        with s3_error("InvalidArgument", 400):
            s3a.create_multipart_upload(Bucket=svc_a.bucket, Key=bad)


@tankd_only("moto stores any key")
def test_a_key_cannot_be_both_an_object_and_a_prefix(s3a, svc_a, key):
    s3a.put_object(Bucket=svc_a.bucket, Key=f"{key}/a", Body=b"file")
    with s3_error("InvalidArgument", 400):
        s3a.put_object(Bucket=svc_a.bucket, Key=f"{key}/a/b", Body=b"under a file")
    s3a.put_object(Bucket=svc_a.bucket, Key=f"{key}/c/d", Body=b"file in c")
    with s3_error("InvalidArgument", 400):
        s3a.put_object(Bucket=svc_a.bucket, Key=f"{key}/c", Body=b"over a prefix")
    with s3_error("InvalidArgument", 400):
        s3a.copy_object(Bucket=svc_a.bucket, Key=f"{key}/c", CopySource={"Bucket": svc_a.bucket, "Key": f"{key}/a"})
    listed = [o["Key"] for o in s3a.list_objects_v2(Bucket=svc_a.bucket, Prefix=key + "/")["Contents"]]
    assert listed == [f"{key}/a", f"{key}/c/d"]
    # Once the prefix is empty again, the name is free.
    s3a.delete_object(Bucket=svc_a.bucket, Key=f"{key}/c/d")
    s3a.put_object(Bucket=svc_a.bucket, Key=f"{key}/c", Body=b"now a file")
    assert s3a.get_object(Bucket=svc_a.bucket, Key=f"{key}/c")["Body"].read() == b"now a file"


@tankd_only("moto does not limit key length")
def test_key_over_1024_bytes_is_too_long(s3a, svc_a, key):
    long_key = (f"{key}/" + "/".join(["k" * 200] * 6))[:1025]
    assert len(long_key.encode()) == 1025 and not long_key.endswith("/")
    with s3_error("KeyTooLongError", 400):
        s3a.put_object(Bucket=svc_a.bucket, Key=long_key, Body=b"x")


def test_long_keys_that_fit_are_served(s3a, svc_a, key):
    # 1024 bytes in 255-byte segments, and a 255-byte segment of 2-byte characters.
    long_key = "/".join([key.ljust(255, "s"), "x" * 255, "x" * 255, "x" * 253, "yy"])
    assert len(long_key.encode()) == 1024
    utf8_key = f"{key}/" + "é" * 127
    for k in (long_key, utf8_key):
        s3a.put_object(Bucket=svc_a.bucket, Key=k, Body=k.encode())
        assert s3a.get_object(Bucket=svc_a.bucket, Key=k)["Body"].read() == k.encode()
        assert exists(s3a, svc_a.bucket, k)
