"""Design §8.10: the aws CLI (v1) and s3cmd, with their own MD5/ETag checks, against
service A's bucket."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.parse

import pytest

from conftest import ENDPOINT, REGION

BIN = pathlib.Path(sys.executable).parent
MiB = 1024 * 1024


def run(argv, env, check=True):
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert r.returncode == 0, f"{argv}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def random_file(path, size):
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@pytest.fixture
def aws(svc_a, tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": svc_a.access_key,
        "AWS_SECRET_ACCESS_KEY": svc_a.secret_key,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }

    def call(*args, check=True):
        return run([str(BIN / "aws"), "--endpoint-url", ENDPOINT, *args], env, check)

    return call


def test_aws_cp_multipart_and_head_object(aws, svc_a, key, tmp_path):
    source = random_file(tmp_path / "big.bin", 20 * MiB + 3)
    url = f"s3://{svc_a.bucket}/{key}/big.bin"
    aws("s3", "cp", "--no-progress", str(source), url)
    head = json.loads(aws("s3api", "head-object", "--bucket", svc_a.bucket, "--key", f"{key}/big.bin").stdout)
    assert head["ContentLength"] == 20 * MiB + 3
    assert head["ETag"].endswith('-3"'), f"the CLI's 8 MiB parts: {head['ETag']}"
    aws("s3", "cp", "--no-progress", url, str(tmp_path / "back.bin"))
    assert sha256(tmp_path / "back.bin") == sha256(source)


def test_aws_sync_twice_and_ls(aws, s3a, svc_a, key, tmp_path):
    tree = tmp_path / "tree"
    names = [f"f{i}.txt" for i in range(12)] + ["sub/deeper/g.bin", "with space.txt", "plus+percent%.txt", "ünï.txt"]
    for i, name in enumerate(names):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(os.urandom(100 + i * 1000))
        # sync sends a file again if it is newer than the object (LastModified has whole
        # seconds): files from an hour ago are not.
        os.utime(tree / name, (time.time() - 3600,) * 2)
    url = f"s3://{svc_a.bucket}/{key}/"

    def uploaded(output):
        """The destinations of the "upload: <local> to <url>" lines."""
        return sorted(line.rsplit(" to ", 1)[1] for line in output.splitlines() if line.startswith("upload:"))

    assert uploaded(aws("s3", "sync", "--no-progress", str(tree), url).stdout) == sorted(url + n for n in names)
    assert uploaded(aws("s3", "sync", "--no-progress", str(tree), url).stdout) == [], "the second sync sends nothing"
    (tree / "f3.txt").write_bytes(b"changed, and of another size")
    assert uploaded(aws("s3", "sync", "--no-progress", str(tree), url).stdout) == [url + "f3.txt"]

    listed = aws("s3", "ls", "--recursive", url).stdout.splitlines()
    # "2026-01-02 03:04:05       1234 prefix/name"
    sizes = {line.split(None, 3)[3]: int(line.split(None, 3)[2]) for line in listed}
    assert sizes == {f"{key}/{n}": (tree / n).stat().st_size for n in names}

    back = tmp_path / "back"
    aws("s3", "sync", "--no-progress", url, str(back))
    assert {n: sha256(back / n) for n in names} == {n: sha256(tree / n) for n in names}


@pytest.fixture
def s3cmd(svc_a, tmp_path):
    host = urllib.parse.urlsplit(ENDPOINT).netloc
    config = tmp_path / "s3cfg"
    config.write_text(
        "[default]\n"
        f"access_key = {svc_a.access_key}\n"
        f"secret_key = {svc_a.secret_key}\n"
        f"host_base = {host}\n"
        f"host_bucket = {host}\n"
        f"bucket_location = {REGION}\n"
        "use_https = False\n"
        "signature_v2 = False\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}

    def call(*args):
        r = run(
            [str(BIN / "s3cmd"), "-c", str(config), "--no-ssl", f"--host={host}", f"--host-bucket={host}", *args], env
        )
        output = r.stdout + r.stderr
        assert "MD5" not in output or "match" not in output, f"s3cmd saw an MD5 mismatch:\n{output}"
        assert "WARNING" not in r.stderr, r.stderr
        return output

    return call


def test_s3cmd_put_get_ls_sync_del(s3cmd, svc_a, key, tmp_path):
    source = random_file(tmp_path / "one.bin", 300_000)
    base = f"s3://{svc_a.bucket}/{key}"
    s3cmd("put", str(source), f"{base}/one.bin")
    s3cmd("get", "--force", f"{base}/one.bin", str(tmp_path / "one.back"))
    assert sha256(tmp_path / "one.back") == sha256(source)
    assert f"{base}/one.bin" in s3cmd("ls", f"{base}/")

    tree = tmp_path / "tree"
    for name in ["a.txt", "b/c.txt", "d e.txt"]:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(os.urandom(5000))
    first = s3cmd("sync", f"{tree}/", f"{base}/tree/")
    assert first.count("upload:") == 3, first
    second = s3cmd("sync", f"{tree}/", f"{base}/tree/")
    assert "upload:" not in second, second
    listing = s3cmd("ls", "--recursive", f"{base}/")
    assert all(f"{base}/tree/{n}" in listing for n in ["a.txt", "b/c.txt", "d e.txt"]), listing

    s3cmd("del", "--recursive", "--force", f"{base}/")
    assert s3cmd("ls", "--recursive", f"{base}/").strip() == ""


def test_s3cmd_multipart(s3cmd, s3a, svc_a, key, tmp_path):
    source = random_file(tmp_path / "parts.bin", 12 * MiB)
    url = f"s3://{svc_a.bucket}/{key}/parts.bin"
    s3cmd("put", "--multipart-chunk-size-mb=5", str(source), url)
    assert s3a.head_object(Bucket=svc_a.bucket, Key=f"{key}/parts.bin")["ETag"].endswith('-3"')
    # s3cmd checks the download against the MD5 it kept in the object's metadata.
    s3cmd("get", "--force", url, str(tmp_path / "parts.back"))
    assert sha256(tmp_path / "parts.back") == sha256(source)
