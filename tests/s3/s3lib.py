"""Helpers the S3 tests share: expected errors, checksums as S3 writes them, a SigV4 signer
written from the spec (for what no installed client sends: signed chunks, skewed clocks),
and a TLS front (boto3 sends checksums in a trailer only over https)."""

import asyncio
import base64
import contextlib
import datetime
import hashlib
import hmac
import ssl
import threading
import urllib.parse
import xml.etree.ElementTree as ET
import zlib

import pytest
from botocore.exceptions import ClientError

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@contextlib.contextmanager
def s3_error(code, status):
    """The block must fail with this S3 error code and HTTP status (a HEAD has no body:
    its code is the status as a string)."""
    with pytest.raises(ClientError) as info:
        yield info
    response = info.value.response
    assert (response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]) == (code, status), response


def error_code(response):
    """The <Code> of an S3 XML error body (a `requests` response)."""
    return ET.fromstring(response.content).findtext("Code")


def md5_etag(data):
    return '"' + hashlib.md5(data).hexdigest() + '"'


def multipart_etag(parts):
    """S3's ETag of a completed multipart upload: md5 of the parts' binary md5s, "-N"."""
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


def crc32c(data):
    from awscrt import checksums

    return checksums.crc32c(data)


def checksum(algorithm, data):
    """The x-amz-checksum-* value: base64 of the big-endian digest."""
    if algorithm == "CRC32":
        raw = zlib.crc32(data).to_bytes(4, "big")
    elif algorithm == "CRC32C":
        raw = crc32c(data).to_bytes(4, "big")
    elif algorithm == "SHA256":
        raw = hashlib.sha256(data).digest()
    else:
        raise ValueError(algorithm)
    return base64.b64encode(raw).decode()


def has_awscrt():
    try:
        import awscrt  # noqa: F401
    except ImportError:
        return False
    return True


def exists(s3, bucket, key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return False
        raise
    return True


def sent_headers(s3):
    """Records the headers of every request `s3` sends; returns the list they go into."""
    seen = []
    s3.meta.events.register("before-send.s3", lambda request, **_: seen.append(dict(request.headers)))
    return seen


def header(headers, name):
    """A header's value (str) from botocore's request headers, any case; None if absent."""
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v.decode() if isinstance(v, bytes) else v
    return None


@contextlib.contextmanager
def python_signer():
    """Signs with botocore's own SigV4 code instead of awscrt's (which botocore prefers when
    awscrt is installed): most users of boto3 have no awscrt."""
    from botocore import auth

    saved = dict(auth.AUTH_TYPE_MAPS)
    auth.AUTH_TYPE_MAPS.update(
        {"s3v4": auth.S3SigV4Auth, "s3v4-query": auth.S3SigV4QueryAuth, "v4": auth.SigV4Auth, "v4-query": auth.SigV4QueryAuth}
    )
    try:
        yield
    finally:
        auth.AUTH_TYPE_MAPS.clear()
        auth.AUTH_TYPE_MAPS.update(saved)


# --- SigV4 by hand (design §6) ---------------------------------------------------------


def _hmac(key, text):
    return hmac.new(key, text.encode() if isinstance(text, str) else text, hashlib.sha256).digest()


class Signer:
    """Header-form SigV4 for one request, and the chunk and trailer signatures that follow."""

    def __init__(self, access_key, secret_key, region="us-east-1", when=None):
        when = when or datetime.datetime.now(datetime.timezone.utc)
        self.access_key = access_key
        self.amz_date = when.strftime("%Y%m%dT%H%M%SZ")
        day = when.strftime("%Y%m%d")
        self.scope = f"{day}/{region}/s3/aws4_request"
        key = _hmac(("AWS4" + secret_key).encode(), day)
        for part in (region, "s3", "aws4_request"):
            key = _hmac(key, part)
        self.key = key
        self.signature = None

    def sign(self, method, url, payload_hash, headers=None):
        """The headers to send: `headers`, host, x-amz-date, x-amz-content-sha256 and
        Authorization. `url`'s path is signed as given (already percent-encoded)."""
        parts = urllib.parse.urlsplit(url)
        headers = {k.lower(): str(v) for k, v in (headers or {}).items()}
        headers.update({"host": parts.netloc, "x-amz-date": self.amz_date, "x-amz-content-sha256": payload_hash})
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        query = "&".join(
            f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}" for k, v in sorted(pairs)
        )
        names = sorted(headers)
        canonical = "\n".join(
            [
                method,
                parts.path or "/",
                query,
                "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names),
                ";".join(names),
                payload_hash,
            ]
        )
        self.signature = self._sign("AWS4-HMAC-SHA256", hashlib.sha256(canonical.encode()).hexdigest())
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{self.scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={self.signature}"
        )
        return headers

    def _sign(self, algorithm, last_line, previous=None):
        lines = [algorithm, self.amz_date, self.scope] + ([previous] if previous else []) + [last_line]
        return hmac.new(self.key, "\n".join(lines).encode(), hashlib.sha256).hexdigest()

    def chunked_body(self, chunks, trailer=None, bad_chunk=None):
        """`STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]` body after `sign()`: each chunk
        signed over the previous signature; `trailer` = (name, value) adds a signed trailer;
        chunk number `bad_chunk` gets a wrong signature."""
        previous, out = self.signature, b""
        for i, data in enumerate(list(chunks) + [b""]):
            line = EMPTY_SHA256 + "\n" + hashlib.sha256(data).hexdigest()
            sig = self._sign("AWS4-HMAC-SHA256-PAYLOAD", line, previous)
            previous = sig
            if i == bad_chunk:
                sig = ("0" if sig[0] != "0" else "1") + sig[1:]
            out += f"{len(data):x};chunk-signature={sig}\r\n".encode() + data
            if data or not trailer:
                out += b"\r\n"
        if trailer:
            name, value = trailer
            line = hashlib.sha256(f"{name}:{value}\n".encode()).hexdigest()
            sig = self._sign("AWS4-HMAC-SHA256-TRAILER", line, previous)
            out += f"{name}:{value}\r\nx-amz-trailer-signature:{sig}\r\n\r\n".encode()
        return out


def unsigned_trailer_body(chunks, trailer=None):
    """`STREAMING-UNSIGNED-PAYLOAD-TRAILER` body: plain chunks, then the trailer lines."""
    out = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n"
    if trailer:
        out += f"{trailer[0]}:{trailer[1]}\r\n".encode()
    return out + b"\r\n"


# --- A TLS front --------------------------------------------------------------------------


class TlsProxy:
    """https://127.0.0.1:<port> (a trustme CA's certificate) to a plain-http upstream, byte
    for byte, keeping what the client sent so a test can see how it sent it."""

    def __init__(self, upstream, ca_dir):
        import trustme

        up = urllib.parse.urlsplit(upstream)
        self.upstream = (up.hostname, up.port)
        ca = trustme.CA()
        self.ca_file = str(ca_dir / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(self.context)
        self.sent = bytearray()
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._run, args=(started,), daemon=True).start()
        started.wait(10)
        self.url = f"https://127.0.0.1:{self.port}"

    def _run(self, started):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    async def _serve(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def pump(src, dst, keep):
            try:
                while data := await src.read(65536):
                    if keep and len(self.sent) < 1 << 22:
                        self.sent += data
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
