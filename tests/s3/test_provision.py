"""Design §8.1: what provisioning object storage gives a service, the same again on
re-provisioning, and deprovisioning removing the bucket, its data and its keys."""

import os
import pathlib
import re
import urllib.parse

import pytest

from conftest import ENDPOINT, deprovision, provision, service_client, tankd_only
from s3lib import s3_error

pytestmark = tankd_only("provisioning is tankd's control API")

S3_NAMES = ["S3_BUCKET", "S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"]


def bucket_dir(svc):
    return pathlib.Path(os.environ["TANKD_DATA_DIR"]) / "s3" / svc.id / svc.bucket


def test_provision_gives_every_s3_name(svc_a, svc_b):
    env = svc_a.env
    assert set(S3_NAMES) <= set(env), sorted(env)
    assert env["S3_ENDPOINT"] == env["AWS_ENDPOINT_URL"]
    assert urllib.parse.urlsplit(env["S3_ENDPOINT"]).port == urllib.parse.urlsplit(ENDPOINT).port
    assert env["AWS_REGION"] == "us-east-1"
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", env["S3_BUCKET"]), env["S3_BUCKET"]
    assert re.fullmatch(r"[A-Z0-9]{20}", env["AWS_ACCESS_KEY_ID"]), "AWS-shaped"
    assert len(env["AWS_SECRET_ACCESS_KEY"]) == 40
    assert env["TANKD_SERVICE_ID"] == "svc-a"
    # Each service its own bucket and keys.
    for name in ["S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
        assert svc_a.env[name] != svc_b.env[name], name
    assert bucket_dir(svc_a).is_dir()


def test_provisioning_again_gives_the_same_values(svc_a):
    again = provision("svc-a").env
    assert {n: again[n] for n in S3_NAMES} == {n: svc_a.env[n] for n in S3_NAMES}


def test_deprovision_removes_bucket_data_and_keys(tmp_path):
    svc = provision("svc-gone")
    s3 = service_client(svc)
    s3.put_object(Bucket=svc.bucket, Key="dir/object", Body=b"soon gone")
    stored = bucket_dir(svc) / "objects" / "dir" / "object"
    assert stored.read_bytes() == b"soon gone", "an object is a plain file at its key"

    deprovision("svc-gone")
    assert not bucket_dir(svc).exists()
    with s3_error("InvalidAccessKeyId", 403):
        s3.list_objects_v2(Bucket=svc.bucket)
    with s3_error("InvalidAccessKeyId", 403):
        s3.put_object(Bucket=svc.bucket, Key="dir/object", Body=b"back?")
    assert not bucket_dir(svc).exists()

    # Provisioning it again gives the same keys, on an empty bucket.
    back = provision("svc-gone")
    assert (back.access_key, back.secret_key, back.bucket) == (svc.access_key, svc.secret_key, svc.bucket)
    assert service_client(back).list_objects_v2(Bucket=back.bucket)["KeyCount"] == 0
    deprovision("svc-gone")


@pytest.mark.parametrize("service_id", ["Svc_Upper.Case", "x" * 100])
def test_a_service_id_that_is_no_bucket_name_gets_one(service_id):
    svc = provision(service_id)
    try:
        assert re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", svc.bucket), svc.bucket
        s3 = service_client(svc)
        s3.put_object(Bucket=svc.bucket, Key="k", Body=b"v")
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [svc.bucket]
    finally:
        deprovision(service_id)
