"""Local folders and object stores (s3://) behind one small interface.

Ray Data and Ray Train take a pyarrow filesystem plus a path; everything else here reads and
writes whole objects. S3 settings come the standard way (AWS environment variables, profiles,
instance roles); an S3-compatible endpoint comes from `--s3-endpoint` or AWS_ENDPOINT_URL_S3 /
AWS_ENDPOINT_URL (pyarrow ignores those variables, so we pass the endpoint explicitly).
Credentials are never logged: only the endpoint and bucket are.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs

from stylekit.errors import StylekitError

log = logging.getLogger(__name__)

SUPPORTED_SCHEMES = ("s3",)


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage. `s3_endpoint` None means the environment's (or AWS)."""

    s3_endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.s3_endpoint is not None and "://" not in self.s3_endpoint:
            raise StylekitError(
                f"--s3-endpoint {self.s3_endpoint!r} needs a scheme, e.g. http://127.0.0.1:9000"
            )

    @property
    def endpoint(self) -> str | None:
        return (
            self.s3_endpoint
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )

    @property
    def region(self) -> str:
        return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def is_uri(location: str) -> bool:
    return "://" in location


def scheme_of(location: str) -> str:
    return urlparse(location).scheme if is_uri(location) else "file"


def join(base: str, *parts: str) -> str:
    """Join path pieces with '/' for URIs and the OS separator for local paths."""
    if is_uri(base):
        return posixpath.join(base.rstrip("/") + "/", *(p.strip("/") for p in parts))
    return os.path.join(base, *parts)


def filesystem(location: str, options: StorageOptions = StorageOptions()) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path within it) for a local path or s3:// URI."""
    scheme = scheme_of(location)
    if scheme == "file":
        path = location[len("file://") :] if location.startswith("file://") else location
        return pafs.LocalFileSystem(), os.path.abspath(path)
    if scheme != "s3":
        raise StylekitError(f"unsupported location {location!r}: use a local path or s3://bucket/prefix")
    parsed = urlparse(location)
    if not parsed.netloc:
        raise StylekitError(f"{location!r} has no bucket: use s3://bucket/prefix")
    path = parsed.netloc + parsed.path
    return _s3_filesystem(options.endpoint, options.region), path.rstrip("/") or parsed.netloc


@functools.lru_cache(maxsize=8)
def _s3_filesystem(endpoint: str | None, region: str) -> pafs.S3FileSystem:
    kwargs: dict[str, object] = {"region": region}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
        kwargs["scheme"] = parsed.scheme
        log.info("S3 endpoint: %s", endpoint)
    return pafs.S3FileSystem(**kwargs)


def read_bytes(location: str, options: StorageOptions = StorageOptions()) -> bytes:
    fs, path = filesystem(location, options)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise StylekitError(f"{location}: not found") from None
    except OSError as e:
        raise StylekitError(f"cannot read {location}: {_short(e)}") from None


def write_bytes(location: str, data: bytes, options: StorageOptions = StorageOptions()) -> None:
    """Write a whole object: it appears complete or not at all (temp file + rename locally;
    a single PUT, or a multipart upload completed only on close, on S3)."""
    fs, path = filesystem(location, options)
    if isinstance(fs, pafs.LocalFileSystem):
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=f"-{uuid.uuid4().hex[:6]}")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    try:
        with fs.open_output_stream(path) as f:
            f.write(data)
    except OSError as e:
        raise StylekitError(f"cannot write {location}: {_short(e)}") from None


def exists(location: str, options: StorageOptions = StorageOptions()) -> bool:
    fs, path = filesystem(location, options)
    return fs.get_file_info(path).type == pafs.FileType.File


def list_files(location: str, options: StorageOptions = StorageOptions()) -> Iterator[str]:
    """Yield keys (relative to `location`, '/'-separated) of every file below it, recursively,
    as a stream: an S3 listing is paged 1000 keys at a time, never held whole."""
    if scheme_of(location) == "s3":
        yield from _list_s3(location, options)
        return
    _, root = filesystem(location, options)
    if not os.path.isdir(root):
        raise StylekitError(f"{location}: no such folder")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            yield os.path.relpath(full, root).replace(os.sep, "/")


def _list_s3(location: str, options: StorageOptions) -> Iterator[str]:
    import botocore.session
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(location)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=options.endpoint, region_name=options.region
    )
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", ()):
                key = obj["Key"]
                if not key.endswith("/"):
                    yield key[len(prefix) :]
    except (BotoCoreError, ClientError) as e:
        raise StylekitError(f"cannot list {location}: {_short(e)}") from None


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
