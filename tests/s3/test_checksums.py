"""Design §8.3: checksums in every form a client sends them — a header (boto3 over http),
a trailer after unsigned chunks (boto3 over https, here through a TLS front), signed chunks
(by hand: no installed client sends them) — and a wrong one refused with nothing stored."""

import hashlib
import os
import urllib.parse

import pytest
import requests

from conftest import ENDPOINT, client, service_client, tankd_only
from s3lib import (
    Signer,
    TlsProxy,
    checksum,
    error_code,
    exists,
    has_awscrt,
    header,
    md5_etag,
    s3_error,
    sent_headers,
    unsigned_trailer_body,
)

ALGORITHMS = [
    "CRC32",
    pytest.param("CRC32C", marks=pytest.mark.skipif(not has_awscrt(), reason="boto3 needs awscrt for CRC32C")),
    "SHA256",
]


def object_url(svc, key):
    return f"{ENDPOINT}/{svc.bucket}/{urllib.parse.quote(key, safe='/~')}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_header_checksum_is_stored_and_returned(svc_a, key, algorithm):
    s3 = service_client(svc_a)
    sent = sent_headers(s3)
    data = os.urandom(300_000)
    put = s3.put_object(Bucket=svc_a.bucket, Key=key, Body=data, ChecksumAlgorithm=algorithm)
    assert header(sent[-1], f"x-amz-checksum-{algorithm.lower()}") == checksum(algorithm, data), "sent as a header"
    assert put[f"Checksum{algorithm}"] == checksum(algorithm, data)

    head = s3.head_object(Bucket=svc_a.bucket, Key=key, ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == checksum(algorithm, data)
    # botocore checks the body against the returned checksum, and fails the read if it differs.
    got = s3.get_object(Bucket=svc_a.bucket, Key=key, ChecksumMode="ENABLED")
    assert got[f"Checksum{algorithm}"] == checksum(algorithm, data)
    assert got["Body"].read() == data


def test_default_put_sends_crc32_and_when_required_sends_none(svc_a, key):
    default = service_client(svc_a)
    sent = sent_headers(default)
    default.put_object(Bucket=svc_a.bucket, Key=key, Body=b"default")
    assert header(sent[-1], "x-amz-checksum-crc32") == checksum("CRC32", b"default")

    s3 = service_client(svc_a, request_checksum_calculation="when_required")
    sent = sent_headers(s3)
    s3.put_object(Bucket=svc_a.bucket, Key=key, Body=b"when required")
    assert not [k for k in sent[-1] if k.lower().startswith("x-amz-checksum-")], sent[-1]
    assert s3.get_object(Bucket=svc_a.bucket, Key=key)["Body"].read() == b"when required"


@tankd_only("moto does not verify a checksum header")
@pytest.mark.parametrize("algorithm", ["CRC32", "SHA256"])
def test_wrong_header_checksum_is_bad_digest(s3a, svc_a, key, algorithm):
    wrong = checksum(algorithm, b"something else")
    with s3_error("BadDigest", 400):
        s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"data", **{f"Checksum{algorithm}": wrong})
    assert not exists(s3a, svc_a.bucket, key)


@tankd_only("moto does not verify Content-MD5")
def test_wrong_content_md5_is_bad_digest(s3a, svc_a, key):
    import base64

    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    with s3_error("BadDigest", 400):
        s3a.put_object(Bucket=svc_a.bucket, Key=key, Body=b"data", ContentMD5=wrong)
    assert not exists(s3a, svc_a.bucket, key)


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    proxy = TlsProxy(ENDPOINT, tmp_path_factory.mktemp("ca"))
    yield proxy
    proxy.close()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_trailer_checksum_over_https(svc_a, tls, key, algorithm):
    s3 = client(svc_a.access_key, svc_a.secret_key, endpoint=tls.url, verify=tls.ca_file)
    data = os.urandom(200_000)
    before = len(tls.sent)
    put = s3.put_object(Bucket=svc_a.bucket, Key=key, Body=data, ChecksumAlgorithm=algorithm)
    request = bytes(tls.sent[before:]).lower()
    assert b"x-amz-content-sha256: streaming-unsigned-payload-trailer" in request, request[:2000]
    assert f"x-amz-trailer: x-amz-checksum-{algorithm.lower()}".encode() in request
    assert f"x-amz-checksum-{algorithm.lower()}:{checksum(algorithm, data)}".lower().encode() in request
    assert put["ETag"] == md5_etag(data)
    got = s3.get_object(Bucket=svc_a.bucket, Key=key, ChecksumMode="ENABLED")
    assert got[f"Checksum{algorithm}"] == checksum(algorithm, data)
    assert got["Body"].read() == data


def put_unsigned_trailer(svc, key, data, trailer, announce="x-amz-checksum-crc32"):
    """A PUT as boto3 sends it over https, by hand over http: unsigned chunks + trailer."""
    url = object_url(svc, key)
    body = unsigned_trailer_body([data[:40_000], data[40_000:]], trailer)
    headers = Signer(svc.access_key, svc.secret_key).sign(
        "PUT",
        url,
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        {
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": len(data),
            "x-amz-trailer": announce,
            "x-amz-sdk-checksum-algorithm": "CRC32",
        },
    )
    return requests.put(url, data=body, headers=headers, timeout=60)


def test_unsigned_trailer_by_hand(s3a, svc_a, key):
    data = os.urandom(100_000)
    r = put_unsigned_trailer(svc_a, key, data, ("x-amz-checksum-crc32", checksum("CRC32", data)))
    assert r.status_code == 200, r.text
    assert s3a.get_object(Bucket=svc_a.bucket, Key=key)["Body"].read() == data


@tankd_only("moto does not verify a trailing checksum")
def test_wrong_trailer_checksum_is_bad_digest(s3a, svc_a, key):
    data = os.urandom(100_000)
    r = put_unsigned_trailer(svc_a, key, data, ("x-amz-checksum-crc32", checksum("CRC32", b"other")))
    assert (r.status_code, error_code(r)) == (400, "BadDigest"), r.text
    assert not exists(s3a, svc_a.bucket, key)


@tankd_only("moto does not require the announced trailer")
def test_missing_announced_trailer_is_refused(s3a, svc_a, key):
    r = put_unsigned_trailer(svc_a, key, os.urandom(100_000), None)
    assert r.status_code == 400, r.text
    assert not exists(s3a, svc_a.bucket, key)


def put_signed_chunks(svc, key, chunks, trailer=None, bad_chunk=None):
    url = object_url(svc, key)
    signer = Signer(svc.access_key, svc.secret_key)
    headers = {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": sum(map(len, chunks))}
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    if trailer:
        mode += "-TRAILER"
        headers["x-amz-trailer"] = trailer[0]
    headers = signer.sign("PUT", url, mode, headers)
    body = signer.chunked_body(chunks, trailer=trailer, bad_chunk=bad_chunk)
    return requests.put(url, data=body, headers=headers, timeout=60)


def test_signed_chunks(s3a, svc_a, key):
    chunks = [os.urandom(65536), os.urandom(65536), os.urandom(100)]
    r = put_signed_chunks(svc_a, key, chunks)
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == md5_etag(b"".join(chunks))
    assert s3a.get_object(Bucket=svc_a.bucket, Key=key)["Body"].read() == b"".join(chunks)


SIGNED_TRAILER_ALGORITHMS = ["CRC32", pytest.param("CRC32C", marks=ALGORITHMS[1].marks), "SHA256"]


@pytest.mark.parametrize("algorithm", SIGNED_TRAILER_ALGORITHMS)
def test_signed_chunks_with_signed_trailer(s3a, svc_a, key, algorithm):
    chunks = [os.urandom(65536), os.urandom(1000)]
    data = b"".join(chunks)
    r = put_signed_chunks(svc_a, key, chunks, trailer=(f"x-amz-checksum-{algorithm.lower()}", checksum(algorithm, data)))
    assert r.status_code == 200, r.text
    assert s3a.get_object(Bucket=svc_a.bucket, Key=key)["Body"].read() == data


@tankd_only("moto does not keep a checksum that came in a signed trailer")
@pytest.mark.parametrize("algorithm", SIGNED_TRAILER_ALGORITHMS)
def test_signed_trailer_checksum_is_stored(s3a, svc_a, key, algorithm):
    data = os.urandom(70_000)
    r = put_signed_chunks(svc_a, key, [data], trailer=(f"x-amz-checksum-{algorithm.lower()}", checksum(algorithm, data)))
    assert r.status_code == 200, r.text
    got = s3a.get_object(Bucket=svc_a.bucket, Key=key, ChecksumMode="ENABLED")
    assert got[f"Checksum{algorithm}"] == checksum(algorithm, data)
    assert got["Body"].read() == data


@tankd_only("moto does not check chunk signatures")
def test_bad_chunk_signature_is_refused_and_nothing_stored(s3a, svc_a, key):
    r = put_signed_chunks(svc_a, key, [os.urandom(65536), os.urandom(65536), os.urandom(10)], bad_chunk=1)
    assert (r.status_code, error_code(r)) == (403, "SignatureDoesNotMatch"), r.text
    assert not exists(s3a, svc_a.bucket, key)


@tankd_only("moto does not verify a trailing checksum")
def test_signed_trailer_with_a_wrong_checksum_is_bad_digest(s3a, svc_a, key):
    chunks = [os.urandom(65536), os.urandom(1000)]
    r = put_signed_chunks(svc_a, key, chunks, trailer=("x-amz-checksum-crc32", checksum("CRC32", b"other")))
    assert (r.status_code, error_code(r)) == (400, "BadDigest"), r.text
    assert not exists(s3a, svc_a.bucket, key)
