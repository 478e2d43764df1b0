"""Fixtures for the S3 client tests: the target (tankd, or moto's server to check the tests
themselves), services A and B with their buckets and keys, and boto3 clients for them.

Inputs (environment):
  S3_TEST_TARGET      tankd (default) or moto
  S3_TEST_ENDPOINT    http://127.0.0.1:<port> of the S3 listener
  TANKD_CONTROL_URL, TANKD_API_TOKEN             tankd's control API (provisioning)
  TANKD_S3_ADMIN_ACCESS_KEY_ID, TANKD_S3_ADMIN_SECRET_ACCESS_KEY   the node admin key
  TANKD_DATA_DIR      where tankd keeps buckets (<data_dir>/s3/<svc>/<bucket>/objects/<key>)
  TANKD_BIN           the tankd binary (tests that start a tankd of their own)
"""

import os
import uuid
from dataclasses import dataclass

import boto3
import pytest
import requests
from botocore.config import Config

TARGET = os.environ.get("S3_TEST_TARGET", "tankd")
assert TARGET in ("tankd", "moto"), f"S3_TEST_TARGET={TARGET!r}: tankd or moto"
ENDPOINT = os.environ.get("S3_TEST_ENDPOINT", "http://127.0.0.1:9000").rstrip("/")
REGION = "us-east-1"
# moto accepts any key; these only have to look like keys.
MOTO_ADMIN = ("AKIAMOTOADMIN0000000", "moto-admin-secret-000000000000000000000")


def tankd_only(reason):
    """Marks a test only tankd can pass (moto does not check signatures, tenancy...)."""
    return pytest.mark.tankd_only(reason=reason)


def pytest_configure(config):
    config.addinivalue_line("markers", "tankd_only(reason): needs tankd; skipped when S3_TEST_TARGET=moto")


def pytest_collection_modifyitems(config, items):
    if TARGET != "moto":
        return
    for item in items:
        mark = item.get_closest_marker("tankd_only")
        if mark:
            item.add_marker(pytest.mark.skip(reason=f"tankd only: {mark.kwargs['reason']}"))


@dataclass
class Service:
    id: str
    bucket: str
    access_key: str
    secret_key: str
    env: dict


def control(path, body):
    url = os.environ["TANKD_CONTROL_URL"].rstrip("/") + path
    token = os.environ["TANKD_API_TOKEN"]
    r = requests.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert r.status_code == 200, f"POST {path}: {r.status_code} {r.text}"
    return r.json()


def provision(service_id):
    """A service with object storage: tankd's control API, or a bucket of that name on moto."""
    if TARGET == "moto":
        env = {
            "S3_BUCKET": service_id,
            "AWS_ACCESS_KEY_ID": "AKIA" + service_id.upper().replace("-", "").ljust(16, "0"),
            "AWS_SECRET_ACCESS_KEY": f"moto-secret-{service_id}".ljust(40, "0"),
        }
        s3 = client(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
        if service_id not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            s3.create_bucket(Bucket=service_id)
    else:
        body = {"serviceId": service_id, "serviceName": service_id.upper(), "capabilities": ["objectstorage"]}
        env = control("/resources/provision", body)["env"]
    return Service(service_id, env["S3_BUCKET"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env)


def deprovision(service_id):
    return control("/resources/deprovision", {"serviceId": service_id})


def client(access_key, secret_key, endpoint=ENDPOINT, verify=None, **config):
    """A boto3 S3 client, path style, no retries (a loopback server must not need them);
    `verify` is a CA file for an https endpoint."""
    config.setdefault("retries", {"mode": "standard", "max_attempts": 1})
    config.setdefault("s3", {"addressing_style": "path"})
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        verify=verify,
        config=Config(**config),
    )


def service_client(svc, **config):
    return client(svc.access_key, svc.secret_key, **config)


@pytest.fixture(scope="session")
def svc_a():
    return provision("svc-a")


@pytest.fixture(scope="session")
def svc_b():
    return provision("svc-b")


@pytest.fixture(scope="session")
def s3a(svc_a):
    return service_client(svc_a)


@pytest.fixture(scope="session")
def s3b(svc_b):
    return service_client(svc_b)


@pytest.fixture(scope="session")
def admin_keys():
    if TARGET == "moto":
        return MOTO_ADMIN
    return os.environ["TANKD_S3_ADMIN_ACCESS_KEY_ID"], os.environ["TANKD_S3_ADMIN_SECRET_ACCESS_KEY"]


@pytest.fixture(scope="session")
def s3admin(admin_keys):
    return client(*admin_keys)


@pytest.fixture
def key(request):
    """A key no other test uses: the test's name and a random tail."""
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in request.node.name)[:60]
    return f"{name}-{uuid.uuid4().hex[:8]}"
