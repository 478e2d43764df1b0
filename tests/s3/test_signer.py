"""The hand signer (s3lib.Signer) against known answers, so a refusal of what it signs means
the server is wrong, not the test: S3's published chunked-upload example, and botocore's
own SigV4 code on the same request. No server involved."""

import datetime

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from s3lib import EMPTY_SHA256, Signer

# "Example: PUT Object" of S3's "Transferring Payload in Multiple Chunks" (sigv4-streaming).
EXAMPLE_KEY = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
EXAMPLE_TIME = datetime.datetime(2013, 5, 24, tzinfo=datetime.timezone.utc)


def test_chunked_upload_example():
    signer = Signer(*EXAMPLE_KEY, when=EXAMPLE_TIME)
    headers = signer.sign(
        "PUT",
        "https://s3.amazonaws.com/examplebucket/chunkObject.txt",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        {
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": "66560",
            "content-length": "66824",
        },
    )
    assert signer.signature == "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    assert headers["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders="
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
        "x-amz-storage-class, Signature="
    )
    body = signer.chunked_body([b"a" * 65536, b"a" * 1024])
    assert len(body) == 66824
    assert body.startswith(b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n")
    assert b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n" in body
    assert body.endswith(b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n")


def test_header_signature_matches_botocore():
    url = "http://127.0.0.1:9000/bucket/a%20b/%E2%82%AC%2B~?list-type=2&prefix=a%2Fb&max-keys=5&fetch-owner"
    request = AWSRequest(method="GET", url=url, headers={"x-amz-meta-x": "a  b "})
    S3SigV4Auth(Credentials("AKIDEXAMPLE", "secret"), "s3", "us-east-1").add_auth(request)
    when = datetime.datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    ours = Signer("AKIDEXAMPLE", "secret", when=when).sign("GET", url, EMPTY_SHA256, {"x-amz-meta-x": "a  b "})
    assert ours["authorization"] == request.headers["Authorization"]
