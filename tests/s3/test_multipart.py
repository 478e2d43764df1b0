"""Design §8.5: multipart uploads by hand (ETag, ListParts, ListMultipartUploads, Abort,
the Complete refusals, UploadPartCopy) and through boto3's transfer manager."""

import hashlib
import os

import pytest
from boto3.s3.transfer import TransferConfig

from conftest import tankd_only
from s3lib import exists, md5_etag, multipart_etag, s3_error

MiB = 1024 * 1024


def upload_parts(s3, bucket, key, parts):
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = []
    for number, data in enumerate(parts, 1):
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=data)["ETag"]
        assert etag == md5_etag(data)
        done.append({"PartNumber": number, "ETag": etag})
    return upload, done


def test_three_parts(s3a, svc_a, key):
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(MiB + 7)]
    upload, done = upload_parts(s3a, svc_a.bucket, key, parts)

    listed = s3a.list_parts(Bucket=svc_a.bucket, Key=key, UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [
        (i, md5_etag(p), len(p)) for i, p in enumerate(parts, 1)
    ]
    uploads = s3a.list_multipart_uploads(Bucket=svc_a.bucket, Prefix=key).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [(key, upload)]
    assert not exists(s3a, svc_a.bucket, key), "nothing is visible before Complete"

    done_answer = s3a.complete_multipart_upload(
        Bucket=svc_a.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done}
    )
    assert done_answer["ETag"] == multipart_etag(parts)
    got = s3a.get_object(Bucket=svc_a.bucket, Key=key)
    assert got["ETag"] == multipart_etag(parts)
    assert got["Body"].read() == b"".join(parts)
    assert s3a.list_multipart_uploads(Bucket=svc_a.bucket, Prefix=key).get("Uploads", []) == []


def test_repeated_complete_changes_nothing(s3a, svc_a, key):
    parts = [os.urandom(5 * MiB), os.urandom(100)]
    upload, done = upload_parts(s3a, svc_a.bucket, key, parts)
    s3a.complete_multipart_upload(Bucket=svc_a.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done})
    # S3 answers a repeated Complete with the same result, or NoSuchUpload once it forgot it.
    try:
        again = s3a.complete_multipart_upload(
            Bucket=svc_a.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done}
        )
        assert again["ETag"] == multipart_etag(parts)
    except s3a.exceptions.NoSuchUpload:
        pass
    assert s3a.get_object(Bucket=svc_a.bucket, Key=key)["Body"].read() == b"".join(parts)


def test_abort(s3a, svc_a, key):
    upload, _ = upload_parts(s3a, svc_a.bucket, key, [os.urandom(1000)])
    s3a.abort_multipart_upload(Bucket=svc_a.bucket, Key=key, UploadId=upload)
    with s3_error("NoSuchUpload", 404):
        s3a.list_parts(Bucket=svc_a.bucket, Key=key, UploadId=upload)
    assert s3a.list_multipart_uploads(Bucket=svc_a.bucket, Prefix=key).get("Uploads", []) == []
    assert not exists(s3a, svc_a.bucket, key)


@tankd_only("moto answers 500 to a part or a Complete of an aborted upload")
def test_an_aborted_upload_takes_no_part_and_no_complete(s3a, svc_a, key):
    upload, done = upload_parts(s3a, svc_a.bucket, key, [os.urandom(1000)])
    s3a.abort_multipart_upload(Bucket=svc_a.bucket, Key=key, UploadId=upload)
    with s3_error("NoSuchUpload", 404):
        s3a.upload_part(Bucket=svc_a.bucket, Key=key, UploadId=upload, PartNumber=2, Body=b"late")
    with s3_error("NoSuchUpload", 404):
        s3a.complete_multipart_upload(Bucket=svc_a.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done})
    assert not exists(s3a, svc_a.bucket, key)


def test_complete_refusals(s3a, svc_a, key):
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB)]
    upload, done = upload_parts(s3a, svc_a.bucket, key, parts)

    def complete(listed):
        s3a.complete_multipart_upload(Bucket=svc_a.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": listed})

    with s3_error("InvalidPart", 400):
        complete([done[0], {"PartNumber": 2, "ETag": md5_etag(b"not this part")}])
    with s3_error("InvalidPart", 400):
        complete([done[0], done[1], {"PartNumber": 3, "ETag": md5_etag(b"never uploaded")}])
    assert not exists(s3a, svc_a.bucket, key), "a refused Complete makes nothing"
    # The upload is still there and completes.
    complete(done)
    assert s3a.get_object(Bucket=svc_a.bucket, Key=key)["ETag"] == multipart_etag(parts)


@tankd_only("moto completes parts listed out of order")
def test_parts_out_of_order_are_invalid_part_order(s3a, svc_a, key):
    upload, done = upload_parts(s3a, svc_a.bucket, key, [os.urandom(5 * MiB), b"last"])
    with s3_error("InvalidPartOrder", 400):
        s3a.complete_multipart_upload(
            Bucket=svc_a.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": [done[1], done[0]]}
        )
    assert not exists(s3a, svc_a.bucket, key)
    s3a.abort_multipart_upload(Bucket=svc_a.bucket, Key=key, UploadId=upload)


def test_small_part_before_the_last_is_entity_too_small(s3a, svc_a, key):
    upload, done = upload_parts(s3a, svc_a.bucket, key, [b"small" * 100, b"last"])
    with s3_error("EntityTooSmall", 400):
        s3a.complete_multipart_upload(Bucket=svc_a.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done})
    assert not exists(s3a, svc_a.bucket, key)
    s3a.abort_multipart_upload(Bucket=svc_a.bucket, Key=key, UploadId=upload)


def test_upload_part_copy_with_a_range(s3a, svc_a, key):
    source = os.urandom(6 * MiB)
    s3a.put_object(Bucket=svc_a.bucket, Key=key + "-source", Body=source)
    upload = s3a.create_multipart_upload(Bucket=svc_a.bucket, Key=key)["UploadId"]
    copied = s3a.upload_part_copy(
        Bucket=svc_a.bucket,
        Key=key,
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": svc_a.bucket, "Key": key + "-source"},
        CopySourceRange=f"bytes=0-{5 * MiB - 1}",
    )["CopyPartResult"]
    assert copied["ETag"] == md5_etag(source[: 5 * MiB])
    tail = s3a.upload_part(Bucket=svc_a.bucket, Key=key, UploadId=upload, PartNumber=2, Body=b"tail")["ETag"]
    s3a.complete_multipart_upload(
        Bucket=svc_a.bucket,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": copied["ETag"]}, {"PartNumber": 2, "ETag": tail}]},
    )
    got = s3a.get_object(Bucket=svc_a.bucket, Key=key)
    assert got["Body"].read() == source[: 5 * MiB] + b"tail"
    assert got["ETag"] == multipart_etag([source[: 5 * MiB], b"tail"])


@tankd_only("moto has no object size limit (tankd runs with TANKD_S3_MAX_OBJECT_SIZE=64M)")
def test_multipart_over_the_size_limit_is_refused(s3a, svc_a, key):
    part = b"\0" * (33 * MiB)
    upload = s3a.create_multipart_upload(Bucket=svc_a.bucket, Key=key)["UploadId"]
    done = []
    try:
        for number in (1, 2):
            etag = s3a.upload_part(Bucket=svc_a.bucket, Key=key, UploadId=upload, PartNumber=number, Body=part)["ETag"]
            done.append({"PartNumber": number, "ETag": etag})
        with s3_error("EntityTooLarge", 400):
            s3a.complete_multipart_upload(Bucket=svc_a.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done})
    except s3a.exceptions.ClientError as e:
        # Refusing the part that crosses the limit is as good.
        assert e.response["Error"]["Code"] == "EntityTooLarge", e.response
    assert not exists(s3a, svc_a.bucket, key)


@pytest.mark.parametrize("size", [36 * MiB + 5])
def test_transfer_manager_upload_and_download(s3a, svc_a, key, tmp_path, size):
    source = tmp_path / "source"
    with open(source, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
        f.write(os.urandom(size % MiB))
    config = TransferConfig(
        multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4, preferred_transfer_client="classic"
    )
    s3a.upload_file(str(source), svc_a.bucket, key, Config=config)
    head = s3a.head_object(Bucket=svc_a.bucket, Key=key)
    assert head["ContentLength"] == size
    assert head["ETag"].endswith('-5"'), head["ETag"]
    target = tmp_path / "target"
    s3a.download_file(svc_a.bucket, key, str(target), Config=config)

    def sha256(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert sha256(target) == sha256(source)
