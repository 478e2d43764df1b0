"""kill -9 during a stream of PUTs (design §8.11), the client half; agent/tests/s3.rs kills
and restarts tankd.

  crash.py write <acked-file>    PUT objects one after another until a PUT fails; after each
                                 200, append "<key> <md5>" to acked-file (flushed, fsynced)
  crash.py verify <acked-file>   every acked key reads back with its md5; an object that was
                                 not acked can only be the one in flight when tankd died, and
                                 then it is whole

An object's content follows from its key (a PRNG seeded with it), so verify can tell a
whole in-flight object from a partial one without having been told what it was.

Environment: S3_TEST_ENDPOINT, S3_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY."""

import hashlib
import os
import random
import sys
import uuid

import boto3
from botocore.config import Config

PREFIX = "crash/"


def content(key):
    rng = random.Random(key)
    return rng.randbytes(rng.randint(1, 1 << 20))


def s3_client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["S3_TEST_ENDPOINT"],
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 1}, connect_timeout=5
        ),
    )


def write(acked_path):
    s3, bucket = s3_client(), os.environ["S3_BUCKET"]
    run = uuid.uuid4().hex[:8]
    with open(acked_path, "a") as acked:
        for n in range(10**9):
            key = f"{PREFIX}{run}/{n:07d}"
            data = content(key)
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=data)
            except Exception as e:  # noqa: BLE001 - tankd was killed: the stream ends here
                print(f"crash.py: PUT {key} failed after {n} acks: {e!r}", file=sys.stderr)
                return 1
            acked.write(f"{key} {hashlib.md5(data).hexdigest()}\n")
            acked.flush()
            os.fsync(acked.fileno())
    return 0


def verify(acked_path):
    s3, bucket = s3_client(), os.environ["S3_BUCKET"]
    with open(acked_path) as f:
        acked = dict(line.split() for line in f if line.strip())
    problems = []
    for key, md5 in acked.items():
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if hashlib.md5(data).hexdigest() != md5 or data != content(key):
            problems.append(f"{key}: acked with md5 {md5}, reads back {hashlib.md5(data).hexdigest()}")
    stored = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX)
              for o in page.get("Contents", [])]
    missing = sorted(set(acked) - set(stored))
    if missing:
        problems.append(f"acked but not listed: {missing[:5]}")
    extra = sorted(set(stored) - set(acked))
    last_acked = max(acked) if acked else ""
    in_flight = "none"
    if len(extra) > 1:
        problems.append(f"{len(extra)} objects that were never acked: {extra[:5]}")
    elif extra:
        key = extra[0]
        in_flight = key
        if key < last_acked:
            problems.append(f"{key} was never acked and is not the last one written")
        elif s3.get_object(Bucket=bucket, Key=key)["Body"].read() != content(key):
            problems.append(f"{key}, in flight at the crash, is visible but not whole")
    if not acked:
        problems.append("nothing was acked")
    for p in problems:
        print(f"crash.py verify: {p}", file=sys.stderr)
    print(f"crash.py verify: {len(acked)} acked objects checked, in flight and visible: {in_flight}, "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "verify"):
        sys.exit(__doc__)
    sys.exit(write(sys.argv[2]) if sys.argv[1] == "write" else verify(sys.argv[2]))
