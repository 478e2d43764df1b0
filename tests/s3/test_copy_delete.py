"""Design §8.7: CopyObject (same bucket, metadata COPY and REPLACE, to itself,
CopySourceIf*) and DeleteObjects (1000 keys with missing ones, Quiet)."""

import concurrent.futures

from conftest import tankd_only
from s3lib import exists, md5_etag, s3_error


def test_copy_keeps_data_and_metadata(s3a, svc_a, key):
    s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"original", ContentType="text/x-a", Metadata={"m": "1"})
    copied = s3a.copy_object(Bucket=svc_a.bucket, Key=key + "-copy", CopySource={"Bucket": svc_a.bucket, "Key": key})
    assert copied["CopyObjectResult"]["ETag"] == md5_etag(b"original")
    got = s3a.get_object(Bucket=svc_a.bucket, Key=key + "-copy")
    assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (b"original", "text/x-a", {"m": "1"})
    # The copy is its own object: changing the source leaves it alone.
    s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"changed")
    assert s3a.get_object(Bucket=svc_a.bucket, Key=key + "-copy")["Body"].read() == b"original"


def test_copy_with_replaced_metadata(s3a, svc_a, key):
    s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"data", ContentType="text/x-a", Metadata={"m": "1"})
    s3a.copy_object(
        Bucket=svc_a.bucket,
        Key=key + "-copy",
        CopySource={"Bucket": svc_a.bucket, "Key": key},
        MetadataDirective="REPLACE",
        ContentType="text/x-b",
        Metadata={"n": "2"},
    )
    head = s3a.head_object(Bucket=svc_a.bucket, Key=key + "-copy")
    assert (head["ContentType"], head["Metadata"], head["ETag"]) == ("text/x-b", {"n": "2"}, md5_etag(b"data"))


def test_copy_to_itself(s3a, svc_a, key):
    s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"self", Metadata={"m": "1"})
    with s3_error("InvalidRequest", 400):
        s3a.copy_object(Bucket=svc_a.bucket, Key=key, CopySource={"Bucket": svc_a.bucket, "Key": key})
    # Replacing the metadata is a change: allowed, and the data stays.
    s3a.copy_object(
        Bucket=svc_a.bucket,
        Key=key,
        CopySource={"Bucket": svc_a.bucket, "Key": key},
        MetadataDirective="REPLACE",
        Metadata={"m": "2"},
    )
    got = s3a.get_object(Bucket=svc_a.bucket, Key=key)
    assert (got["Body"].read(), got["Metadata"]) == (b"self", {"m": "2"})


@tankd_only("moto ignores CopySourceIf*")
def test_copy_source_conditions(s3a, svc_a, key):
    etag = s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"conditional")["ETag"]
    source = {"Bucket": svc_a.bucket, "Key": key}
    with s3_error("PreconditionFailed", 412):
        s3a.copy_object(Bucket=svc_a.bucket, Key=key + "-c", CopySource=source, CopySourceIfMatch=md5_etag(b"other"))
    with s3_error("PreconditionFailed", 412):
        s3a.copy_object(Bucket=svc_a.bucket, Key=key + "-c", CopySource=source, CopySourceIfNoneMatch=etag)
    assert not exists(s3a, svc_a.bucket, key + "-c")
    s3a.copy_object(Bucket=svc_a.bucket, Key=key + "-c", CopySource=source, CopySourceIfMatch=etag)
    assert s3a.get_object(Bucket=svc_a.bucket, Key=key + "-c")["Body"].read() == b"conditional"


def test_copy_of_a_missing_source(s3a, svc_a, key):
    with s3_error("NoSuchKey", 404):
        s3a.copy_object(Bucket=svc_a.bucket, Key=key + "-c", CopySource={"Bucket": svc_a.bucket, "Key": key})


def put_many(s3, bucket, keys):
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for f in [pool.submit(s3.put_object, Bucket=bucket, Key=k, Body=k.encode()) for k in keys]:
            f.result()


def test_delete_objects_1000_with_missing_keys(s3a, svc_a, key):
    present = [f"{key}/p{i:04d}" for i in range(500)]
    missing = [f"{key}/m{i:04d}" for i in range(500)]
    put_many(s3a, svc_a.bucket, present)
    answer = s3a.delete_objects(
        Bucket=svc_a.bucket, Delete={"Objects": [{"Key": k} for k in present + missing]}
    )
    # S3 reports a key that was not there as deleted, too.
    assert sorted(d["Key"] for d in answer["Deleted"]) == sorted(present + missing)
    assert answer.get("Errors", []) == []
    assert s3a.list_objects_v2(Bucket=svc_a.bucket, Prefix=key + "/")["KeyCount"] == 0


@tankd_only("moto lists the deleted keys in Quiet mode")
def test_delete_objects_quiet(s3a, svc_a, key):
    present = [f"{key}/p{i}" for i in range(10)]
    put_many(s3a, svc_a.bucket, present)
    answer = s3a.delete_objects(
        Bucket=svc_a.bucket, Delete={"Objects": [{"Key": k} for k in present + [key + "/missing"]], "Quiet": True}
    )
    assert (answer.get("Deleted", []), answer.get("Errors", [])) == ([], [])
    assert s3a.list_objects_v2(Bucket=svc_a.bucket, Prefix=key + "/")["KeyCount"] == 0
