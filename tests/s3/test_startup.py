"""On a tankd of each test's own (TANKD_BIN), for settings the shared one does not have:
design §8.12, what start-up cleans (temp files a crash left) and multipart uploads that
expire (a 2-second expiry); and the region corestore's CORESTORE_REGION names."""

import os
import pathlib
import signal
import socket
import subprocess
import time

import boto3
import pytest
import requests
from botocore.config import Config

from conftest import client, tankd_only
from s3lib import s3_error

pytestmark = tankd_only("starts a tankd of its own")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnTankd:
    """A tankd with zfs = false on a data dir and ports of its own."""

    def __init__(self, root, **env):
        self.data = root / "data"
        self.data.mkdir(parents=True)
        self.log = root / "tankd.log"
        self.token = "startup-test-token-0123456789"
        api, control, s3 = free_port(), free_port(), free_port()
        self.health = f"http://127.0.0.1:{api}/health"
        self.control = f"http://127.0.0.1:{control}"
        self.s3 = f"http://127.0.0.1:{s3}"
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(root),
            "TANKD_DATA_DIR": str(self.data),
            "TANKD_ZFS": "false",
            "TANKD_LISTEN": f"127.0.0.1:{api}",
            "TANKD_SOCKET": str(self.data / "tankd.sock"),
            "TANKD_CONTROL_LISTEN": f"127.0.0.1:{control}",
            "TANKD_DOCKER_SOCKET": str(self.data / "docker-plugin.sock"),
            "TANKD_S3_LISTEN": f"127.0.0.1:{s3}",
            "TANKD_API_TOKEN": self.token,
            "TANKD_LOG": "info,tankd=debug",
            **env,
        }
        self.process = None

    def start(self):
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [os.environ["TANKD_BIN"], "--config", "/dev/null"], env=self.env, stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"tankd exited:\n{self.log.read_text()}"
            try:
                if requests.get(self.health, timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"tankd did not start:\n{self.log.read_text()}")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(30) == 0, self.log.read_text()

    def provision(self, service_id):
        r = requests.post(
            self.control + "/resources/provision",
            json={"serviceId": service_id, "serviceName": service_id, "capabilities": ["objectstorage"]},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        return r.json()["env"]


@pytest.fixture
def own_tankd(tmp_path):
    """Starts a tankd with the given environment; kills what is left at the end."""
    started = []

    def start(**env):
        t = OwnTankd(tmp_path / f"tankd{len(started)}", **env)
        started.append(t)
        t.start()
        return t

    yield start
    for t in started:
        if t.process.poll() is None:
            t.process.kill()
            t.process.wait()


@pytest.fixture
def tankd(own_tankd):
    return own_tankd(TANKD_S3_MULTIPART_EXPIRY="2")


def test_start_up_sweeps_temp_files_and_expires_uploads(tankd):
    env = tankd.provision("svc-sweep")
    bucket = env["S3_BUCKET"]
    s3 = client(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], endpoint=tankd.s3)
    s3.put_object(Bucket=bucket, Key="kept", Body=b"kept")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="abandoned")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="abandoned", UploadId=upload, PartNumber=1, Body=b"part")
    tmp = tankd.data / "s3" / "svc-sweep" / bucket / ".tmp"
    tmp.mkdir(exist_ok=True)
    (tmp / "left-by-a-crash").write_bytes(b"half an object")

    tankd.stop()
    time.sleep(2.5)
    tankd.start()
    assert not (tmp / "left-by-a-crash").exists(), "start-up removes what a crash left"
    assert (list(tmp.iterdir()) if tmp.exists() else []) == []
    wait_for_no_uploads(s3, bucket, 20, "the upload did not expire")
    with s3_error("NoSuchUpload", 404):
        s3.upload_part(Bucket=bucket, Key="abandoned", UploadId=upload, PartNumber=2, Body=b"late")
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"kept"
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 1


def wait_for_no_uploads(s3, bucket, seconds, why):
    """Polls ListMultipartUploads until it lists none; fails with `why` after `seconds`."""
    deadline = time.monotonic() + seconds
    while s3.list_multipart_uploads(Bucket=bucket).get("Uploads"):
        assert time.monotonic() < deadline, why
        time.sleep(0.5)


def test_an_upload_expires_while_tankd_runs(tankd):
    env = tankd.provision("svc-expire")
    bucket = env["S3_BUCKET"]
    s3 = client(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], endpoint=tankd.s3)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="slow")["UploadId"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload]
    # However often tankd looks, within a minute and a half.
    wait_for_no_uploads(s3, bucket, 90, "a running tankd does not expire uploads")
    with s3_error("NoSuchUpload", 404):
        s3.upload_part(Bucket=bucket, Key="slow", UploadId=upload, PartNumber=1, Body=b"too late")
    assert pathlib.Path(tankd.data, "s3", "svc-expire", bucket).is_dir()


def test_region_from_corestore_region(own_tankd):
    tankd = own_tankd(CORESTORE_REGION="eu-central-1")
    env = tankd.provision("svc-region")
    assert env["AWS_REGION"] == "eu-central-1"
    s3 = boto3.client(
        "s3",
        endpoint_url=tankd.s3,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 1}),
    )
    assert s3.get_bucket_location(Bucket=env["S3_BUCKET"])["LocationConstraint"] == "eu-central-1"
    s3.put_object(Bucket=env["S3_BUCKET"], Key="k", Body=b"in eu-central-1")
    assert s3.get_object(Bucket=env["S3_BUCKET"], Key="k")["Body"].read() == b"in eu-central-1"
