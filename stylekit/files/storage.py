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
import re
import stat
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from stylekit.errors import StylekitError

log = logging.getLogger(__name__)

SUPPORTED_SCHEMES = ("s3",)


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage. `s3_endpoint` None means the environment's (or AWS);
    `s3_region` None means AWS_REGION / AWS_DEFAULT_REGION, else us-east-1."""

    s3_endpoint: str | None = None
    s3_region: str | None = None

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

    def resolved(self) -> StorageOptions:
        """These options with the environment's endpoint and region fixed in, for remote
        workers whose environment may differ from the driver's (credentials stay out)."""
        return StorageOptions(self.endpoint, self.configured_region)

    @property
    def configured_region(self) -> str | None:
        return self.s3_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")

    @property
    def region(self) -> str:
        return self.configured_region or "us-east-1"


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
    return _s3_filesystem(options.endpoint, _region_for(parsed.netloc, options)), path.rstrip(
        "/"
    ) or parsed.netloc


def _region_for(bucket: str, options: StorageOptions) -> str:
    """The configured region; on AWS with none configured, the bucket's own (pyarrow does not
    follow S3's cross-region redirects as botocore does)."""
    if options.configured_region or options.endpoint:
        return options.region
    return _bucket_region(bucket)


@functools.lru_cache(maxsize=64)
def _bucket_region(bucket: str) -> str:
    try:
        return pafs.resolve_s3_region(bucket)
    except OSError:
        return "us-east-1"  # no access to ask: let the request itself report the problem


@functools.lru_cache(maxsize=8)
def _s3_filesystem(endpoint: str | None, region: str) -> pafs.S3FileSystem:
    kwargs: dict[str, object] = {"region": region}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
        kwargs["scheme"] = parsed.scheme
        log.info("S3 endpoint: %s", redact(endpoint))
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
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are ordinary files
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


@dataclass(frozen=True)
class FileEntry:
    """A listed file: key relative to the listed location, size in bytes, mtime (epoch s)."""

    key: str
    size: int
    mtime: float


def list_files(location: str, options: StorageOptions = StorageOptions()) -> Iterator[str]:
    """Yield keys (relative to `location`, '/'-separated) of every file below it, recursively,
    as a stream: an S3 listing is paged 1000 keys at a time, never held whole."""
    for entry in list_entries(location, options):
        yield entry.key


def list_entries(location: str, options: StorageOptions = StorageOptions()) -> Iterator[FileEntry]:
    """`list_files` with each file's size and modification time (free in an S3 listing)."""
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
            try:
                st = os.stat(full)
            except OSError:
                continue  # deleted while we listed
            yield FileEntry(os.path.relpath(full, root).replace(os.sep, "/"), st.st_size, st.st_mtime)


def _bucket_prefix(location: str) -> tuple[str, str]:
    parsed = urlparse(location)
    prefix = parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return parsed.netloc, prefix


@functools.lru_cache(maxsize=8)
def _s3_client(endpoint: str | None, region: str) -> Any:
    """One botocore client per endpoint and process (clients are thread-safe, slow to build)."""
    import botocore.config
    import botocore.session

    config = botocore.config.Config(max_pool_connections=HEAD_THREADS, retries={"mode": "standard"})
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name=region, config=config
    )


def _list_s3(location: str, options: StorageOptions) -> Iterator[FileEntry]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = _bucket_prefix(location)
    client = _s3_client(options.endpoint, options.region)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", ()):
                key = obj["Key"]
                if not key.endswith("/"):
                    yield FileEntry(key[len(prefix) :], obj["Size"], obj["LastModified"].timestamp())
    except (BotoCoreError, ClientError) as e:
        raise StylekitError(f"cannot list {location}: {_short(e)}") from None


# A range listing reads LIST_PAGE_SIZE keys per request; once it has read more than
# RANGE_LIST_BUDGET keys per key asked for (plus RANGE_LIST_SLACK), the range holds mostly other
# objects and HEAD requests for the keys not reached yet are cheaper.
LIST_PAGE_SIZE = 1000
RANGE_LIST_BUDGET = 4
RANGE_LIST_SLACK = 1000
HEAD_THREADS = 16


def stat_keys(
    location: str, keys: Iterable[str], options: StorageOptions = StorageOptions()
) -> dict[str, FileEntry]:
    """Which of `keys` (relative to `location`) exist, with their size and mtime.

    Locally a stat per key. On S3 one listing of the key range [min(keys), max(keys)] (1000
    objects per request, so a page of 1000 neighbouring keys costs about one request, not 1000
    HEADs); if that range turns out to hold many more objects than asked for, the rest are
    checked with concurrent HEAD requests instead."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    if scheme_of(location) != "s3":
        return _stat_local(location, wanted, options)
    return _stat_s3(location, wanted, options)


def _stat_local(location: str, keys: list[str], options: StorageOptions) -> dict[str, FileEntry]:
    _, root = filesystem(location, options)
    found = {}
    for key in keys:
        try:
            st = os.stat(os.path.join(root, *key.split("/")))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found[key] = FileEntry(key, st.st_size, st.st_mtime)
    return found


def _stat_s3(location: str, keys: list[str], options: StorageOptions) -> dict[str, FileEntry]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = _bucket_prefix(location)
    client = _s3_client(options.endpoint, options.region)
    first, last = prefix + keys[0], prefix + keys[-1]
    wanted = {prefix + k for k in keys}
    found: dict[str, FileEntry] = {}
    budget, seen, checked_to = RANGE_LIST_BUDGET * len(keys) + RANGE_LIST_SLACK, 0, ""
    try:
        # StartAfter is exclusive: start just before `first` (one of its own prefixes).
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket,
            Prefix=_common_prefix(first, last),
            StartAfter=first[:-1],
            PaginationConfig={"PageSize": LIST_PAGE_SIZE},
        )
        for page in pages:
            for obj in page.get("Contents", ()):
                key, seen = obj["Key"], seen + 1
                if key > last:
                    return found
                checked_to = key
                if key in wanted:
                    rel = key[len(prefix) :]
                    found[rel] = FileEntry(rel, obj["Size"], obj["LastModified"].timestamp())
            if seen > budget:
                break
        else:
            return found
    except (BotoCoreError, ClientError) as e:
        raise StylekitError(f"cannot list {location}: {_short(e)}") from None
    rest = [k for k in keys if prefix + k > checked_to]
    found.update(_head_s3(client, bucket, prefix, rest, location))
    return found


def _common_prefix(a: str, b: str) -> str:
    """Longest string both start with (characters, not path components: S3 keys are strings)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _head_s3(client: Any, bucket: str, prefix: str, keys: list[str], location: str) -> dict[str, FileEntry]:
    from botocore.exceptions import BotoCoreError, ClientError

    def head(key: str) -> FileEntry | None:
        try:
            meta = client.head_object(Bucket=bucket, Key=prefix + key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StylekitError(f"cannot check {location}/{key}: {_short(e)}") from None
        except BotoCoreError as e:
            raise StylekitError(f"cannot check {location}/{key}: {_short(e)}") from None
        return FileEntry(key, meta["ContentLength"], meta["LastModified"].timestamp())

    with ThreadPoolExecutor(HEAD_THREADS) as pool:
        return {e.key: e for e in pool.map(head, keys) if e is not None}


def delete_tree(location: str, options: StorageOptions = StorageOptions()) -> None:
    """Remove a folder or prefix and everything below it (missing is fine). On S3 through
    DeleteObjects directly: pyarrow would leave an empty "directory" object behind."""
    if scheme_of(location) == "s3":
        _delete_s3(location, options)
        return
    fs, path = filesystem(location, options)
    try:
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)
    except OSError as e:
        raise StylekitError(f"cannot delete {location}: {_short(e)}") from None


def _delete_s3(location: str, options: StorageOptions) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = _bucket_prefix(location)
    client = _s3_client(options.endpoint, options.region)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", ())]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    except (BotoCoreError, ClientError) as e:
        raise StylekitError(f"cannot delete {location}: {_short(e)}") from None


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def redact(text: str) -> str:
    """`text` with any user:password@ of a URL removed and the AWS secrets of this process's
    environment masked, so an error or endpoint can be logged or stored safely."""
    text = _USERINFO.sub("***@", text)
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
