"""The boto3 side of scripts/bench/s3: the same client code for tankd, the peer servers
and a trivial server, so the figures differ only by the server.

    s3-driver.py ports N                        N free TCP ports on 127.0.0.1
    s3-driver.py mkbucket URL BUCKET            create BUCKET (peers; tankd provisions)
    s3-driver.py put URL BUCKET KEY FILE        upload_file, prints "<seconds> <client CPU s>"
    s3-driver.py get URL BUCKET KEY FILE        download_file, the same
    s3-driver.py delete URL BUCKET KEY          delete_object
    s3-driver.py small URL BUCKET PREFIX PROCS PAIRS
                                                PAIRS 4 KiB PUT+GET over PROCS processes,
                                                prints "<ops/s> <seconds> <client CPU s>" (a
                                                PUT and a GET are two operations)
    s3-driver.py trivial PORT FILE              a trivial S3 server for the client's
                                                ceiling: no signature check, no hashing, no
                                                fsync; GET of any unknown key sends FILE
                                                (sendfile, ranges), multipart parts are
                                                discarded, small objects kept in memory

Keys and region come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION.
"""

import multiprocessing
import os
import resource
import socket
import sys
import time
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MIB = 1 << 20


def client(url):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def cpu():
    """This process's CPU seconds (all its threads), user and system."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=4)


def timed_transfer(op, url, bucket, key, path):
    s3 = client(url)
    s3.head_bucket(Bucket=bucket)  # the connection is up and the client warm before the clock
    config = transfer_config()
    t0, c0 = time.monotonic(), cpu()
    if op == "put":
        s3.upload_file(path, bucket, key, Config=config)
    else:
        s3.download_file(bucket, key, path, Config=config)
    print(f"{time.monotonic() - t0:.3f} {cpu() - c0:.3f}")


def small_worker(url, bucket, prefix, index, count, barrier, results):
    try:
        s3 = client(url)
        body = os.urandom(4096)
        s3.head_bucket(Bucket=bucket)
        barrier.wait()
        t0, c0 = time.monotonic(), cpu()
        for i in range(count):
            key = f"{prefix}/{index}/{i}"
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            if got != body:
                raise RuntimeError(f"{key}: GET returned {len(got)} bytes, not what was PUT")
        results.put((t0, time.monotonic(), cpu() - c0, None))
    except BaseException as e:  # reported by the parent, which fails the run
        barrier.abort()
        results.put((0.0, 0.0, 0.0, f"{type(e).__name__}: {e}"))


def small(url, bucket, prefix, procs, pairs):
    import boto3  # noqa: F401  (imported once, before the fork)

    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    per = -(-pairs // procs)
    workers = [
        ctx.Process(target=small_worker, args=(url, bucket, prefix, i, per, barrier, results)) for i in range(procs)
    ]
    for w in workers:
        w.start()
    got = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    errors = [e for *_, e in got if e]
    if errors:
        sys.exit(f"small: {len(errors)} of {procs} clients failed, first: {errors[0]}")
    seconds = max(t1 for _, t1, _, _ in got) - min(t0 for t0, *_ in got)
    print(f"{2 * per * procs / seconds:.1f} {seconds:.3f} {sum(c for _, _, c, _ in got):.3f}")


class Trivial(BaseHTTPRequestHandler):
    """Just enough S3 for upload_file, download_file, put_object and get_object."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    small = {}

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def drain(self, keep):
        left = int(self.headers.get("Content-Length", "0"))
        buf, kept = memoryview(bytearray(MIB)), []
        while left:
            n = self.rfile.readinto(buf[: min(left, MIB)])
            if not n:
                raise ConnectionError("body cut short")
            if keep:
                kept.append(bytes(buf[:n]))
            left -= n
        return b"".join(kept)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        key = url.path.lstrip("/").partition("/")[2]
        if not key:  # HeadBucket
            return self.reply(200)
        meta = [("ETag", '"0"'), ("Last-Modified", formatdate(usegmt=True)), ("Content-Type", "binary/octet-stream")]
        if key in self.small:
            return self.reply(200, self.small[key], meta)
        size = os.path.getsize(self.server.file)
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        if rng:
            a, _, b = rng.removeprefix("bytes=").partition("-")
            start, end = int(a), min(int(b), size - 1) if b else size - 1
            meta.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        self.send_response(206 if rng else 200)
        for k, v in meta:
            self.send_header(k, v)
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if self.command == "GET":
            with open(self.server.file, "rb") as f:
                self.connection.sendfile(f, start, end - start + 1)

    def do_PUT(self):
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        body = self.drain(keep="uploadId" not in q)
        if "uploadId" not in q:
            self.small[url.path.lstrip("/").partition("/")[2]] = body
        self.reply(200, headers=[("ETag", '"0"')])

    def do_DELETE(self):
        self.small.pop(urlsplit(self.path).path.lstrip("/").partition("/")[2], None)
        self.send_response(204)
        self.end_headers()

    def do_POST(self):
        url = urlsplit(self.path)
        bucket, _, key = url.path.lstrip("/").partition("/")
        self.drain(keep=False)
        if "uploads" in parse_qs(url.query, keep_blank_values=True):
            xml = (
                "<InitiateMultipartUploadResult><Bucket>{}</Bucket><Key>{}</Key>"
                "<UploadId>{}</UploadId></InitiateMultipartUploadResult>"
            ).format(bucket, key, uuid.uuid4().hex)
        else:
            xml = (
                "<CompleteMultipartUploadResult><Bucket>{}</Bucket><Key>{}</Key>"
                '<ETag>"0-1"</ETag></CompleteMultipartUploadResult>'
            ).format(bucket, key)
        self.reply(200, xml.encode(), [("Content-Type", "application/xml")])


def trivial(port, path):
    server = ThreadingHTTPServer(("127.0.0.1", port), Trivial)
    server.daemon_threads = True
    server.file = path
    server.serve_forever()


def ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def main(argv):
    cmd, args = argv[0], argv[1:]
    if cmd == "ports":
        ports(int(args[0]))
    elif cmd == "mkbucket":
        client(args[0]).create_bucket(Bucket=args[1])
    elif cmd in ("put", "get"):
        timed_transfer(cmd, *args)
    elif cmd == "delete":
        client(args[0]).delete_object(Bucket=args[1], Key=args[2])
    elif cmd == "small":
        small(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif cmd == "trivial":
        trivial(int(args[0]), args[1])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
