"""Design §8.4: presigned GET and PUT used with `requests`, expired and tampered URLs.

boto3 1.44 presigns with the legacy SigV2 query (`AWSAccessKeyId=…&Signature=…&Expires=…`)
unless the client is made with `signature_version="s3v4"` (botocore keeps SigV2 as the
default for presigning against a custom endpoint); tankd speaks only SigV4, so its docs
must say to set it. The first test pins that finding."""

import time
import urllib.parse

import pytest
import requests

from conftest import service_client, tankd_only
from s3lib import error_code, exists, python_signer

V4 = {"signature_version": "s3v4"}


@pytest.fixture(params=["awscrt", "python"])
def presigner(request, svc_a):
    """A SigV4 presigning client of A, with awscrt's signer and with botocore's own."""
    if request.param == "python":
        with python_signer():
            yield service_client(svc_a, **V4)
    else:
        yield service_client(svc_a, **V4)


def test_default_presign_is_sigv2_and_s3v4_is_sigv4(s3a, svc_a):
    legacy = urllib.parse.parse_qs(urllib.parse.urlsplit(s3a.generate_presigned_url(
        "get_object", Params={"Bucket": svc_a.bucket, "Key": "k"})).query)
    assert {"AWSAccessKeyId", "Signature", "Expires"} <= set(legacy), legacy
    v4 = urllib.parse.parse_qs(urllib.parse.urlsplit(service_client(svc_a, **V4).generate_presigned_url(
        "get_object", Params={"Bucket": svc_a.bucket, "Key": "k"})).query)
    assert v4["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and v4["X-Amz-SignedHeaders"] == ["host"], v4


def test_presigned_put_then_get(presigner, s3a, svc_a, key):
    put_url = presigner.generate_presigned_url("put_object", Params={"Bucket": svc_a.bucket, "Key": key}, ExpiresIn=300)
    r = requests.put(put_url, data=b"presigned body", timeout=60)
    assert r.status_code == 200, r.text
    assert s3a.get_object(Bucket=svc_a.bucket, Key=key)["Body"].read() == b"presigned body"

    get_url = presigner.generate_presigned_url("get_object", Params={"Bucket": svc_a.bucket, "Key": key}, ExpiresIn=300)
    r = requests.get(get_url, timeout=60)
    assert (r.status_code, r.content) == (200, b"presigned body")
    r = requests.get(get_url, headers={"Range": "bytes=0-8"}, timeout=60)
    assert (r.status_code, r.content) == (206, b"presigned")


@tankd_only("tankd refuses SigV2 (moto checks no signature)")
def test_default_sigv2_presign_is_refused(s3a, svc_a, key):
    s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"x")
    url = s3a.generate_presigned_url("get_object", Params={"Bucket": svc_a.bucket, "Key": key})
    r = requests.get(url, timeout=60)
    assert (r.status_code, error_code(r)) == (403, "AccessDenied"), r.text


@tankd_only("moto does not check presigned URLs")
def test_expired_presign_is_refused(s3a, svc_a, key):
    s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"x")
    url = service_client(svc_a, **V4).generate_presigned_url(
        "get_object", Params={"Bucket": svc_a.bucket, "Key": key}, ExpiresIn=1
    )
    time.sleep(2.5)
    r = requests.get(url, timeout=60)
    assert (r.status_code, error_code(r)) == (403, "AccessDenied"), r.text


@tankd_only("moto does not check presigned URLs")
def test_tampered_presign_is_refused(s3a, svc_a, key):
    s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"secret")
    s3a.put_object(Bucket=svc_a.bucket, Key=key + "-other", Body=b"other")
    presigner = service_client(svc_a, **V4)
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": svc_a.bucket, "Key": key}, ExpiresIn=60)
    for tampered in [
        url.replace(f"/{key}?", f"/{key}-other?"),
        url.replace("X-Amz-Expires=60", "X-Amz-Expires=6000"),
        url[:-1] + ("0" if url[-1] != "0" else "1"),
    ]:
        assert tampered != url
        r = requests.get(tampered, timeout=60)
        assert (r.status_code, error_code(r)) == (403, "SignatureDoesNotMatch"), (tampered, r.text)

    put_url = presigner.generate_presigned_url("put_object", Params={"Bucket": svc_a.bucket, "Key": key}, ExpiresIn=60)
    r = requests.put(put_url.replace(f"/{key}?", f"/{key}-new?"), data=b"sneaked", timeout=60)
    assert r.status_code == 403, r.text
    assert not exists(s3a, svc_a.bucket, key + "-new")
