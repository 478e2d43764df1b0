"""Design §8.9: a service's keys reach its own bucket only; unsigned, unknown, wrong and
skewed requests are refused; the admin key reaches every bucket; bucket-level answers."""

import datetime
import urllib.parse

import pytest
import requests

from conftest import ENDPOINT, client, service_client, tankd_only
from s3lib import Signer, EMPTY_SHA256, error_code, exists, s3_error

NOT_OURS = "moto has no tenancy: any key reaches any bucket"


@pytest.fixture
def a_things(s3a, svc_a, key):
    """An object and an open multipart upload of A's, for B to try to reach."""
    s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"A's data", Metadata={"owner": "a"})
    upload = s3a.create_multipart_upload(Bucket=svc_a.bucket, Key=key + "-mp")["UploadId"]
    yield key, upload
    s3a.abort_multipart_upload(Bucket=svc_a.bucket, Key=key + "-mp", UploadId=upload)


@tankd_only(NOT_OURS)
def test_b_reaches_nothing_of_a(s3a, s3b, svc_a, svc_b, a_things):
    key, upload = a_things
    bucket = svc_a.bucket
    mp = {"Bucket": bucket, "Key": key + "-mp", "UploadId": upload}
    attempts = {
        "HeadBucket": lambda: s3b.head_bucket(Bucket=bucket),
        "GetBucketLocation": lambda: s3b.get_bucket_location(Bucket=bucket),
        "ListObjects": lambda: s3b.list_objects(Bucket=bucket),
        "ListObjectsV2": lambda: s3b.list_objects_v2(Bucket=bucket),
        "ListMultipartUploads": lambda: s3b.list_multipart_uploads(Bucket=bucket),
        "DeleteBucket": lambda: s3b.delete_bucket(Bucket=bucket),
        "CreateBucket": lambda: s3b.create_bucket(Bucket=bucket),
        "GetObject": lambda: s3b.get_object(Bucket=bucket, Key=key),
        "HeadObject": lambda: s3b.head_object(Bucket=bucket, Key=key),
        "PutObject (new)": lambda: s3b.put_object(Bucket=bucket, Key=key + "-b", Body=b"B was here"),
        "PutObject (over)": lambda: s3b.put_object(Bucket=bucket, Key=key, Body=b"B was here"),
        "DeleteObject": lambda: s3b.delete_object(Bucket=bucket, Key=key),
        "DeleteObjects": lambda: s3b.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key}]}),
        "CopyObject (within A)": lambda: s3b.copy_object(
            Bucket=bucket, Key=key + "-b", CopySource={"Bucket": bucket, "Key": key}
        ),
        "CopyObject (B into A)": lambda: s3b.copy_object(
            Bucket=bucket, Key=key + "-b", CopySource={"Bucket": svc_b.bucket, "Key": "anything"}
        ),
        "CreateMultipartUpload": lambda: s3b.create_multipart_upload(Bucket=bucket, Key=key + "-b"),
        "UploadPart": lambda: s3b.upload_part(**mp, PartNumber=1, Body=b"B's part"),
        "ListParts": lambda: s3b.list_parts(**mp),
        "CompleteMultipartUpload": lambda: s3b.complete_multipart_upload(
            **mp, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"0123456789abcdef0123456789abcdef"'}]}
        ),
        "AbortMultipartUpload": lambda: s3b.abort_multipart_upload(**mp),
    }
    answers = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            answers[name] = "allowed"
        except s3b.exceptions.ClientError as e:
            answers[name] = (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
    denied = {name: ("403" if name.startswith("Head") else "AccessDenied", 403) for name in attempts}
    assert answers == denied

    # Nothing of A's changed.
    got = s3a.get_object(Bucket=bucket, Key=key)
    assert (got["Body"].read(), got["Metadata"]) == (b"A's data", {"owner": "a"})
    assert not exists(s3a, bucket, key + "-b")
    assert s3a.list_parts(**mp).get("Parts", []) == []


@tankd_only(NOT_OURS)
def test_b_cannot_copy_out_of_a(s3a, s3b, svc_a, svc_b, a_things):
    key, _ = a_things
    with s3_error("AccessDenied", 403):
        s3b.copy_object(Bucket=svc_b.bucket, Key=key, CopySource={"Bucket": svc_a.bucket, "Key": key})
    assert not exists(s3b, svc_b.bucket, key)
    upload = s3b.create_multipart_upload(Bucket=svc_b.bucket, Key=key)["UploadId"]
    with s3_error("AccessDenied", 403):
        s3b.upload_part_copy(
            Bucket=svc_b.bucket, Key=key, UploadId=upload, PartNumber=1, CopySource={"Bucket": svc_a.bucket, "Key": key}
        )
    s3b.abort_multipart_upload(Bucket=svc_b.bucket, Key=key, UploadId=upload)


@tankd_only(NOT_OURS)
def test_b_presigning_for_a_is_refused(svc_a, svc_b, a_things):
    key, _ = a_things
    presigner = service_client(svc_b, signature_version="s3v4")
    r = requests.get(presigner.generate_presigned_url("get_object", Params={"Bucket": svc_a.bucket, "Key": key}), timeout=60)
    assert (r.status_code, error_code(r)) == (403, "AccessDenied"), r.text
    url = presigner.generate_presigned_url("put_object", Params={"Bucket": svc_a.bucket, "Key": key + "-b"})
    r = requests.put(url, data=b"B was here", timeout=60)
    assert (r.status_code, error_code(r)) == (403, "AccessDenied"), r.text


@tankd_only("moto answers NoSuchBucket, tankd does not say whether a foreign bucket exists")
def test_a_missing_foreign_bucket_is_access_denied_too(s3b):
    with s3_error("403", 403):
        s3b.head_bucket(Bucket="no-such-bucket-anywhere")
    with s3_error("AccessDenied", 403):
        s3b.get_object(Bucket="no-such-bucket-anywhere", Key="k")
    with s3_error("AccessDenied", 403):
        s3b.list_objects_v2(Bucket="no-such-bucket-anywhere")


@tankd_only("moto lets anyone make buckets")
def test_a_service_makes_no_other_bucket(s3a):
    with s3_error("AccessDenied", 403):
        s3a.create_bucket(Bucket="svc-a-second-bucket")


@tankd_only(NOT_OURS)
def test_list_buckets_shows_only_ones_own(s3a, s3b, svc_a, svc_b):
    assert [b["Name"] for b in s3a.list_buckets()["Buckets"]] == [svc_a.bucket]
    assert [b["Name"] for b in s3b.list_buckets()["Buckets"]] == [svc_b.bucket]


def test_admin_key_reaches_every_bucket(s3admin, s3a, s3b, svc_a, svc_b, key):
    names = [b["Name"] for b in s3admin.list_buckets()["Buckets"]]
    assert {svc_a.bucket, svc_b.bucket} <= set(names)
    s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"from A")
    assert s3admin.get_object(Bucket=svc_a.bucket, Key=key)["Body"].read() == b"from A"
    s3admin.put_object(Bucket=svc_b.bucket, Key=key, Body=b"from the admin")
    assert s3b.get_object(Bucket=svc_b.bucket, Key=key)["Body"].read() == b"from the admin"
    s3admin.copy_object(Bucket=svc_b.bucket, Key=key + "-copy", CopySource={"Bucket": svc_a.bucket, "Key": key})
    assert s3b.get_object(Bucket=svc_b.bucket, Key=key + "-copy")["Body"].read() == b"from A"
    assert key in [o["Key"] for o in s3admin.list_objects_v2(Bucket=svc_a.bucket, Prefix=key)["Contents"]]


@tankd_only("moto serves unsigned requests")
def test_unsigned_requests_are_refused(s3a, svc_a, key):
    s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"private")
    for method, url in [
        ("GET", f"{ENDPOINT}/"),
        ("GET", f"{ENDPOINT}/{svc_a.bucket}"),
        ("GET", f"{ENDPOINT}/{svc_a.bucket}/{key}"),
        ("HEAD", f"{ENDPOINT}/{svc_a.bucket}/{key}"),
        ("PUT", f"{ENDPOINT}/{svc_a.bucket}/{key}-anon"),
        ("DELETE", f"{ENDPOINT}/{svc_a.bucket}/{key}"),
    ]:
        r = requests.request(method, url, data=b"anonymous" if method == "PUT" else None, timeout=60)
        assert r.status_code == 403, (method, url, r.status_code, r.text)
        if method != "HEAD":
            assert error_code(r) == "AccessDenied", (method, url, r.text)
    assert s3a.get_object(Bucket=svc_a.bucket, Key=key)["Body"].read() == b"private"
    assert not exists(s3a, svc_a.bucket, key + "-anon")


@tankd_only("moto checks no signature")
def test_unknown_key_and_wrong_secret(svc_a):
    with s3_error("InvalidAccessKeyId", 403):
        client("TKUNKNOWNUNKNOWN0000", "0" * 40).list_objects_v2(Bucket=svc_a.bucket)
    with s3_error("SignatureDoesNotMatch", 403):
        client(svc_a.access_key, svc_a.secret_key[:-1] + "x").list_objects_v2(Bucket=svc_a.bucket)


@tankd_only("moto checks no request time")
@pytest.mark.parametrize("minutes", [-20, 20])
def test_skewed_clock_is_refused(s3a, svc_a, key, minutes):
    s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"on time")
    url = f"{ENDPOINT}/{svc_a.bucket}/{urllib.parse.quote(key)}"
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes)
    r = requests.get(url, headers=Signer(svc_a.access_key, svc_a.secret_key, when=when).sign("GET", url, EMPTY_SHA256), timeout=60)
    assert (r.status_code, error_code(r)) == (403, "RequestTimeTooSkewed"), r.text
    # The same request on time is served: the signer is not what is wrong.
    r = requests.get(url, headers=Signer(svc_a.access_key, svc_a.secret_key).sign("GET", url, EMPTY_SHA256), timeout=60)
    assert (r.status_code, r.content) == (200, b"on time")


def test_head_bucket_and_location(s3a, svc_a):
    assert s3a.head_bucket(Bucket=svc_a.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3a.get_bucket_location(Bucket=svc_a.bucket)["LocationConstraint"] is None, "us-east-1 reads as None"


def test_a_bucket_with_objects_is_not_deleted(s3a, svc_a, key):
    s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"keeps the bucket")
    with s3_error("BucketNotEmpty", 409):
        s3a.delete_bucket(Bucket=svc_a.bucket)
    assert s3a.head_bucket(Bucket=svc_a.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200


@tankd_only("moto, like S3 in us-east-1, answers 200")
def test_creating_ones_own_bucket_again(s3a, svc_a):
    with s3_error("BucketAlreadyOwnedByYou", 409):
        s3a.create_bucket(Bucket=svc_a.bucket)
