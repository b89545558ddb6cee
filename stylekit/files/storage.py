"""Every location stylekit reads or writes, through fsspec: local paths, file://, s3:// (s3fs),
gs:// (gcsfs), az:// and abfs:// (adlfs), and any other protocol whose fsspec package is
installed. A missing package is a one-line error naming it.

Ray Data and Ray Train take a pyarrow filesystem plus a path (`arrow_filesystem`); everything
else here reads and writes whole objects. S3 settings come the way s3fs users set them (the
AWS credential chain: environment variables, profiles, instance roles; AWS_ENDPOINT_URL_S3 /
AWS_ENDPOINT_URL), plus `--s3-endpoint`. Credentials are never logged: only the endpoint and
bucket are.

Every call retries transient faults (S3's 503 SlowDown, connection resets, timeouts) with
exponential backoff (`_retry`), on top of the retries s3fs and botocore do themselves; a fault
that persists ends as one StylekitError line.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import posixpath
import random
import re
import stat
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import fsspec
import fsspec.core

from stylekit.errors import RunFailed, StylekitError, first_line
from stylekit.redact import redact, userinfo_end

if TYPE_CHECKING:
    import pyarrow.fs as pafs

log = logging.getLogger(__name__)

T = TypeVar("T")

# The package each well-known protocol needs (fsspec's own hint for the others).
PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "adl": "adlfs",
}
# Protocols whose files live inside one process: no Ray worker can see them.
IN_PROCESS = ("memory",)
LOCAL = ("file", "local")


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage. `s3_endpoint` None means the environment's (or AWS);
    `s3_region` None means AWS_REGION / AWS_DEFAULT_REGION (else the bucket's own)."""

    s3_endpoint: str | None = field(
        default=None, metadata={"help": "S3-compatible endpoint URL (else AWS_ENDPOINT_URL, else AWS)"}
    )
    s3_region: str | None = field(default=None, metadata={"cli": False})

    def __post_init__(self) -> None:
        if self.s3_endpoint is not None and "://" not in self.s3_endpoint:
            raise StylekitError(
                f"--s3-endpoint {redact(self.s3_endpoint)!r} needs a scheme, e.g. http://127.0.0.1:9000"
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
    return urlparse(location).scheme.lower() if is_uri(location) else "file"


def is_local(location: str) -> bool:
    """A plain path or file:// URI (written with the OS's own calls: atomic renames)."""
    return scheme_of(location) in LOCAL


def local_path(location: str) -> str:
    """The absolute local path of a plain path or file:// URI."""
    return os.path.abspath(urlparse(location).path if is_uri(location) else location)


def join(base: str, *parts: str) -> str:
    """Join path pieces with '/' for URIs and the OS separator for local paths."""
    if is_uri(base):
        return posixpath.join(base.rstrip("/") + "/", *(p.strip("/") for p in parts))
    return os.path.join(base, *parts)


def require_shared(location: str, flag: str) -> None:
    """Refuse a location Ray's worker processes cannot reach (memory:// is per process)."""
    if scheme_of(location) in IN_PROCESS:
        raise StylekitError(
            f"{flag} {location}: {scheme_of(location)}:// lives in one process, and this job's "
            "Ray workers are other processes; use a folder or an object store"
        )


# --- filesystems ------------------------------------------------------------------------------


def filesystem(location: str, options: StorageOptions = StorageOptions()) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for any location."""
    scheme = scheme_of(location)
    if scheme in LOCAL:
        return fsspec.filesystem("file"), local_path(location)
    _filesystem_class(scheme, location)  # a missing package: a line naming it
    if scheme in ("s3", "s3a"):
        return _s3fs(options.endpoint, options.configured_region), _object_path(location)
    # fsspec's own parse of the URL: the host, port and credentials of ftp://user:pw@host/...
    # reach the filesystem (an instance per host, cached by fsspec).
    message = ""
    with _quiet_finalisers():
        try:
            fs, path = fsspec.core.url_to_fs(location)
        except Exception as e:  # bad settings of a third-party protocol: its own words, one line
            message = f"cannot open {redact(location)}: {_short(e)}"  # e (and what it holds) goes here
    if message:
        raise StylekitError(message)
    return fs, path.rstrip("/")


@contextlib.contextmanager
def _quiet_finalisers() -> Iterator[None]:
    """A filesystem whose constructor failed (ftp:// to a host that refuses) fails again in
    its finaliser, which Python prints as an "Exception ignored in" traceback: not for a
    one-line error. Only fsspec's finalisers' failures, while inside, are left unprinted."""
    previous = sys.unraisablehook

    def hook(u: Any) -> None:
        if not str(getattr(u.object, "__module__", "")).startswith("fsspec"):
            previous(u)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _filesystem_class(scheme: str, location: str) -> type:
    try:
        return fsspec.get_filesystem_class(scheme)
    except ImportError:
        package = PACKAGES.get(scheme)
        if package:
            raise StylekitError(f"{scheme}:// needs {package}: pip install {package}") from None
        hint = fsspec.registry.known_implementations.get(scheme, {}).get("err", "")
        raise StylekitError(f"{scheme}:// needs its fsspec package: {hint or 'install it'}") from None
    except ValueError:
        raise StylekitError(
            f"{redact(location)}: no fsspec filesystem is known for {scheme}://; use a local path, "
            "s3://, gs://, az://, abfs:// or another installed fsspec protocol"
        ) from None


def _object_path(location: str) -> str:
    scheme, _, rest = location.partition("://")
    if userinfo_end(scheme, rest) >= 0:
        raise StylekitError(
            f"{redact(location)}: credentials in an {scheme}:// URL are not used; give them the AWS "
            "way (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile or an instance role)"
        )
    parsed = urlparse(location)
    if not parsed.netloc:
        raise StylekitError(f"{location!r} has no bucket: use {parsed.scheme}://bucket/prefix")
    return (parsed.netloc + parsed.path).rstrip("/")


# botocore's own retries under s3fs's: "standard" mode retries 503 SlowDown, 500s, throttling,
# resets and timeouts with jittered backoff (the default "legacy" mode is less thorough). Few
# here, as `_retry` repeats the whole call: 4 x RETRY_ATTEMPTS tries over about a minute.
S3_RETRY_CONFIG = {"retries": {"max_attempts": 4, "mode": "standard"}}


def _s3fs(endpoint: str | None, region: str | None) -> Any:
    # fsspec caches instances by their arguments (per process), so this is cheap after the first.
    kwargs: dict[str, Any] = {
        "config_kwargs": S3_RETRY_CONFIG,
        # Listings are never cached: planning must see what is in the bucket now.
        "use_listings_cache": False,
    }
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if region:
        kwargs["client_kwargs"] = {"region_name": region}
    return fsspec.filesystem("s3", **kwargs)


def arrow_filesystem(
    location: str, options: StorageOptions = StorageOptions(), *, native_s3: bool | None = None
) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path) for Ray Data and Ray Train: pyarrow's own for local paths
    and (see NATIVE_S3) S3 reads, fsspec's wrapped in a PyFileSystem for every other protocol
    and where `native_s3` is False."""
    import pyarrow.fs as pafs  # here: only the Ray jobs need it (a one-process command saves its import)

    if scheme_of(location) in LOCAL:
        return pafs.LocalFileSystem(), local_path(location)
    fs, path = filesystem(location, options)  # also the one-line error for a missing package
    native = NATIVE_S3 if native_s3 is None else native_s3
    if scheme_of(location) in ("s3", "s3a") and native:
        return _arrow_s3(options.endpoint, options.configured_region, path.split("/", 1)[0]), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


# benchmarks/bench_storage.py: pyarrow's S3FileSystem reads the moto server 2.8x faster than s3fs
# wrapped for pyarrow with one thread, 1.3x with four (benchmarks/RESULTS.md), so Ray Data's
# reads get pyarrow's own for s3://. Ray Data retries the errors it raises on a reset or a
# SlowDown (DataContext.retried_io_errors: "AWS Error INTERNAL_FAILURE", ...); anything else
# Ray writes through (Ray Train's checkpoints) asks for `native_s3=False`: a reset in the middle
# of a response is an INTERNAL_FAILURE that pyarrow's own retry strategy does not retry, while
# s3fs and botocore retry it.
NATIVE_S3 = True


@functools.lru_cache(maxsize=8)
def _arrow_s3(endpoint: str | None, region: str | None, bucket: str) -> pafs.S3FileSystem:
    # pyarrow ignores AWS_ENDPOINT_URL (apache/arrow#49643), so the endpoint is passed here;
    # nor does it follow S3's cross-region redirects, so without a region it asks the bucket's.
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {
        "region": region or ("us-east-1" if endpoint else _bucket_region(bucket)),
        # The AWS SDK's standard retries: 503 SlowDown, 500s, resets and timeouts, with backoff.
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=8),
    }
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
        kwargs["scheme"] = parsed.scheme
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=64)
def _bucket_region(bucket: str) -> str:
    import pyarrow.fs as pafs

    try:
        return pafs.resolve_s3_region(bucket)
    except OSError:
        return "us-east-1"  # no access to ask: let the request itself report the problem


# --- retries ----------------------------------------------------------------------------------

# A call is tried up to RETRY_ATTEMPTS times, RETRY_BASE_SECONDS doubling between tries (to at
# most RETRY_MAX_SECONDS, jittered): about a minute in all against a dead S3 endpoint, which is
# what a store's brief outage or a SlowDown storm needs, and no longer a wait for a typo.
RETRY_ATTEMPTS = 6
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 8.0

_TRANSIENT_TEXT = re.compile(
    r"SlowDown|Slow Down|503|500 Internal|InternalError|ServiceUnavailable|Service Unavailable|"
    r"RequestTimeout|Throttl|TooManyRequests|429|reset by peer|Connection reset|Connection aborted|"
    r"Broken pipe|timed out|Timeout|ServerDisconnected|Server disconnected|IncompleteRead|"
    r"NETWORK_CONNECTION|SLOW_DOWN|INTERNAL_FAILURE|Could not connect|Connection was closed|"
    r"Payload|EndpointConnectionError|RemoteDisconnected",
    re.IGNORECASE,
)
_TRANSIENT_ERRNOS = (errno.EBUSY, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE)


def is_transient(e: BaseException) -> bool:
    """A fault a retry may cure: a reset or timed-out connection, or the store asking us to
    slow down (503 SlowDown; s3fs raises it as OSError(EBUSY)). Not: a missing object, a
    refused permission, a bad request."""
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
        return True
    text = f"{type(e).__name__}: {e}"
    cause = e.__cause__ or e.__context__
    if cause is not None and cause is not e:
        text += f" {type(cause).__name__}: {cause}"
    return bool(_TRANSIENT_TEXT.search(text))


def _retry(what: str, location: str, call: Callable[[], T]) -> T:
    """`call()`, retried on transient faults with exponential backoff and jitter; any other
    fault, or one still there after RETRY_ATTEMPTS tries, is one StylekitError line."""
    started = time.monotonic()
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return call()
        except StylekitError:
            raise
        except FileNotFoundError:
            raise StylekitError(f"{redact(location)}: not found") from None
        except PermissionError as e:
            raise StylekitError(
                f"cannot {what} {redact(location)}: permission denied ({_short(e)})"
            ) from None
        except Exception as e:
            if not is_transient(e):
                raise StylekitError(f"cannot {what} {redact(location)}: {_short(e)}") from None
            if attempt == RETRY_ATTEMPTS:
                raise RunFailed(
                    f"cannot {what} {redact(location)}: {_short(e)} (still failing after "
                    f"{attempt} tries over {time.monotonic() - started:.0f} s)"
                ) from None
            delay = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempt - 1))
            delay *= 0.5 + random.random() / 2  # jitter: many tasks do not retry in lockstep
            log.debug("retrying %s %s in %.2f s after: %s", what, redact(location), delay, _short(e))
            time.sleep(delay)
    raise AssertionError("unreachable")


# --- whole objects ----------------------------------------------------------------------------


def read_bytes(location: str, options: StorageOptions = StorageOptions(), limit: int | None = None) -> bytes:
    """A whole object's bytes; with `limit`, at most limit + 1 of them are read (one ranged
    GET on object stores) and more than `limit` is a one-line error."""
    fs, path = filesystem(location, options)
    if limit is None:
        return _retry("read", location, lambda: fs.cat_file(path))
    data = _retry("read", location, lambda: fs.cat_file(path, start=0, end=limit + 1))
    if len(data) > limit:
        raise StylekitError(f"larger than --max-bytes {limit}; raise it to stylize this input")
    return data


def content_hash(data: bytes) -> str:
    """A fast hash of a file's bytes (BLAKE2b, 128 bits): what a rerun compares an input with
    when its listing says it may have changed."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_range(location: str, start: int, end: int, options: StorageOptions = StorageOptions()) -> bytes:
    """Bytes [start, end) of a file (one ranged GET on object stores)."""
    fs, path = filesystem(location, options)
    return _retry("read", location, lambda: fs.cat_file(path, start=start, end=end))


def write_bytes(location: str, data: bytes, options: StorageOptions = StorageOptions()) -> None:
    """Write a whole object: it appears complete or not at all (temp file + rename locally;
    one PUT, or a multipart upload completed only at the end, on object stores)."""
    if is_local(location):
        _retry("write", location, lambda: _write_local(local_path(location), data))
        return
    fs, path = filesystem(location, options)
    _retry("write", location, lambda: fs.pipe_file(path, data))


def _temp_beside(path: str, data: bytes) -> str:
    """A temporary file holding `data` in `path`'s folder (made if missing), mode 0644."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=f"-{uuid.uuid4().hex[:6]}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are ordinary files
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _write_local(path: str, data: bytes) -> None:
    tmp = _temp_beside(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_if_exists(location: str, options: StorageOptions = StorageOptions()) -> bytes | None:
    """A whole object's bytes, or None when it is not there (a transient fault is retried and
    a persistent one raised, never taken for "not there")."""
    fs, path = filesystem(location, options)

    def read() -> bytes | None:
        try:
            return fs.cat_file(path)
        except FileNotFoundError:
            return None

    return _retry("read", location, read)


def create_exclusive(location: str, data: bytes) -> bool:
    """Create a local file holding `data` only if no file is there (False if one is): the
    bytes go to a temporary file that is then hard-linked into place, which fails if the
    name exists, so a reader never sees a partial file and of two creators only one wins."""
    path = local_path(location)
    tmp = _temp_beside(path, data)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as e:  # a filesystem without hard links: O_EXCL, written in place
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            try:
                with open(path, "xb") as f:
                    f.write(data)
            except FileExistsError:
                return False
        return True
    finally:
        os.unlink(tmp)


def delete_file(location: str, options: StorageOptions = StorageOptions()) -> None:
    """Remove one file or object (missing is fine)."""
    fs, path = filesystem(location, options)

    def rm() -> None:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)

    _retry("delete", location, rm)


def exists(location: str, options: StorageOptions = StorageOptions()) -> bool:
    """Whether a file is there. Unlike fsspec's isfile, a transient fault is retried and a
    persistent one raised, never taken for "not there"."""
    if is_local(location):
        return os.path.isfile(local_path(location))
    fs, path = filesystem(location, options)

    def check() -> bool:
        try:
            return fs.info(path)["type"] == "file"
        except FileNotFoundError:
            return False

    return _retry("check", location, check)


def check_writable(location: str, options: StorageOptions = StorageOptions(), *, folder: bool) -> None:
    """Fail now, with one line, if nothing can be written at `location` (a folder, or a file
    when `folder` is False): a missing parent that cannot be made, a file where a folder
    should be, no permission. Locally the folders are made; on object stores a probe object
    is written next to it and deleted."""
    target = location if folder else _parent(location)
    if is_local(location):
        _check_local_writable(local_path(location), local_path(target), folder)
        return
    filesystem(target, options)  # a missing protocol package: its own line
    probe = join(target, f".stylekit-write-check-{uuid.uuid4().hex[:8]}")
    try:
        write_bytes(probe, b"", options)
    except StylekitError as e:  # the same kind (a store that stopped answering: RunFailed)
        raise type(e)(f"cannot write to {redact(location)}: {e}") from None
    fs, path = filesystem(probe, options)
    _retry("delete", probe, lambda: fs.rm_file(path))


def _parent(location: str) -> str:
    if is_uri(location) and not is_local(location):
        return location.rstrip("/").rsplit("/", 1)[0]
    return os.path.dirname(local_path(location))


def _check_local_writable(path: str, folder_path: str, folder: bool) -> None:
    if not folder and os.path.isdir(path):
        raise StylekitError(f"cannot write {path}: it is a folder; give a file name")
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise StylekitError(f"cannot write to {path}: it is a file, not a folder")
    try:
        os.makedirs(folder_path, exist_ok=True)
    except FileExistsError:
        raise StylekitError(f"cannot write {path}: a file stands where a folder should be") from None
    except OSError as e:
        reason = e.strerror or _short(e)
        raise StylekitError(f"cannot write {path}: cannot make its folder {folder_path} ({reason})") from None
    if not os.access(folder_path, os.W_OK | os.X_OK):
        raise StylekitError(f"cannot write {path}: no permission to write in {folder_path}")
    try:  # access() can say yes where a read-only mount or /proc says no
        fd, tmp = tempfile.mkstemp(dir=folder_path, prefix=".stylekit-write-check-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise StylekitError(f"cannot write {path}: {e.strerror or _short(e)} in {folder_path}") from None


# --- listing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """A listed file: key relative to the listed location, size in bytes, mtime (epoch s),
    `version` what the store says changes with its bytes (S3's ETag, GCS's generation, Azure's
    etag; locally mtime, ctime and inode; "" when unknown), and `error` why a listed name is
    not a file that can be read (a dangling link, a folder that cannot be listed: its key
    then ends in '/'), "" for a file."""

    key: str
    size: int
    mtime: float
    version: str = ""
    error: str = ""


def list_files(location: str, options: StorageOptions = StorageOptions()) -> Iterator[str]:
    """Yield keys (relative to `location`, '/'-separated) of every file below it, recursively,
    as a stream: an S3 listing is paged 1000 keys at a time, never held whole."""
    for entry in list_entries(location, options):
        if not entry.error:
            yield entry.key


def list_entries(
    location: str, options: StorageOptions = StorageOptions(), *, follow_links: bool = False
) -> Iterator[FileEntry]:
    """`list_files` with each file's size, modification time and version (free in a listing),
    in sorted key order within each folder; names that cannot be read come as entries with an
    `error`. Locally, a link to a file or folder outside `location` is such an entry unless
    `follow_links`."""
    if is_local(location):
        yield from _list_local(local_path(location), location, follow_links)
    elif scheme_of(location) in ("s3", "s3a"):
        yield from _list_s3(location, options)
    else:
        yield from _list_walk(location, options)


def _local_version(st: os.stat_result) -> str:
    # A replaced file (`cp -p`, `touch -d`: an older mtime) still has a new ctime and inode.
    return f"{st.st_mtime_ns}.{st.st_ctime_ns}.{st.st_ino}"


def _list_local(root: str, location: str, follow_links: bool = False) -> Iterator[FileEntry]:
    if not os.path.isdir(root):
        raise StylekitError(f"{redact(location)}: no such folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise StylekitError(f"cannot list {redact(location)}: permission denied")
    real_root = os.path.realpath(root)
    unreadable: list[FileEntry] = []

    def key_of(path: str) -> str:
        return os.path.relpath(path, root).replace(os.sep, "/")

    def onerror(e: OSError) -> None:  # a folder os.walk cannot list: a failed row, not a gap
        reason = e.strerror or type(e).__name__
        unreadable.append(
            FileEntry(key_of(str(e.filename)) + "/", 0, 0.0, error=f"cannot list this folder: {reason}")
        )

    def outside(path: str) -> bool:
        real = os.path.realpath(path)
        return real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep)

    walked: set[tuple[int, int]] = set()  # folders listed once (with follow_links: no loops)
    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=follow_links):
        yield from unreadable
        unreadable.clear()
        st = os.stat(dirpath)
        walked.add((st.st_dev, st.st_ino))
        kept = []
        for name in sorted(dirnames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full) and not follow_links:
                if outside(full):  # not descended: say why its photos are not done
                    yield FileEntry(
                        key_of(full) + "/",
                        0,
                        0.0,
                        error=f"a link to the folder {os.path.realpath(full)}, outside --input; "
                        "--follow-links to stylize what it holds",
                    )
                continue  # a link inside IN: its files are listed where they are
            try:
                target = os.stat(full)
            except OSError:
                continue
            if (target.st_dev, target.st_ino) not in walked:
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            key = key_of(full)
            try:
                st = os.stat(full)
            except FileNotFoundError:
                if os.path.islink(full):
                    yield FileEntry(key, 0, 0.0, error=f"a link to nothing ({os.readlink(full)} is missing)")
                continue  # deleted while we listed
            except OSError as e:
                yield FileEntry(key, 0, 0.0, error=f"cannot read it: {e.strerror or type(e).__name__}")
                continue
            if os.path.islink(full) and not follow_links and outside(full):
                yield FileEntry(
                    key,
                    st.st_size,
                    st.st_mtime,
                    error=f"a link to {os.path.realpath(full)}, outside --input; --follow-links to stylize it",
                )
                continue
            yield FileEntry(key, st.st_size, st.st_mtime, _local_version(st))
    yield from unreadable


def _bucket_prefix(location: str) -> tuple[str, str]:
    parsed = urlparse(location)
    prefix = parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return parsed.netloc, prefix


def _s3_pages(location: str, options: StorageOptions, **request: Any) -> Iterator[list[dict[str, Any]]]:
    """ListObjectsV2 pages (Contents) through s3fs's client, each page retried on its own.
    fsspec's find()/ls() return whole lists (and walk() holds each folder whole), so a flat
    prefix of millions of keys is paged here instead (fsspec/filesystem_spec#1882: no public
    streaming listing yet; s3fs's own generator, _iterdir, is private)."""
    fs, _ = filesystem(location, options)
    token: str | None = None
    while True:
        kwargs = dict(request, ContinuationToken=token) if token else request
        page = _retry("list", location, lambda kw=kwargs: fs.call_s3("list_objects_v2", **kw))
        yield page.get("Contents", [])
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return


def _list_s3(location: str, options: StorageOptions) -> Iterator[FileEntry]:
    bucket, prefix = _bucket_prefix(location)
    for contents in _s3_pages(location, options, Bucket=bucket, Prefix=prefix):
        for obj in contents:
            key = obj["Key"]
            if not key.endswith("/"):
                version = str(obj.get("ETag", "")).strip('"')
                yield FileEntry(key[len(prefix) :], obj["Size"], obj["LastModified"].timestamp(), version)


def _list_walk(location: str, options: StorageOptions) -> Iterator[FileEntry]:
    """Any other fsspec protocol: a depth-first walk, one folder's listing at a time."""
    fs, root = filesystem(location, options)
    if not _retry("list", location, lambda: fs.isdir(root)):
        raise StylekitError(f"{redact(location)}: no such folder")
    stack = [root]
    while stack:
        folder = stack.pop()
        items = _retry("list", location, lambda f=folder: fs.ls(f, detail=True))
        subfolders = []
        for info in sorted(items, key=lambda i: i["name"]):
            name = info["name"].rstrip("/")
            if info["type"] == "directory":
                if name != folder:
                    subfolders.append(name)
            else:
                key = name[len(root) :].lstrip("/")
                yield FileEntry(key, int(info.get("size") or 0), _mtime(info), version_of(info))
        stack.extend(reversed(subfolders))


# What a store changes with an object's bytes, by the name each fsspec protocol gives it.
_VERSION_FIELDS = (
    "ETag",
    "etag",
    "generation",
    "version_id",
    "VersionId",
    "md5Hash",
    "content_md5",
    "checksum",
)


def version_of(info: dict[str, Any]) -> str:
    """An object's version from an fsspec info dict: its ETag, generation or checksum, else
    its modification time ("" when it has none)."""
    for name in _VERSION_FIELDS:
        value = info.get(name)
        if value:
            return str(value).strip('"')
    mtime = _mtime(info)
    return f"mtime {mtime}" if mtime else ""


def _mtime(info: dict[str, Any]) -> float:
    """Modification time from an fsspec info dict, whose key differs by protocol."""
    for name in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(name)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


def list_folders(location: str, options: StorageOptions = StorageOptions()) -> list[str]:
    """Names of the folders directly below `location` (none if it does not exist)."""
    fs, path = filesystem(location, options)

    def ls() -> list[str]:
        try:
            items = fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        return [i["name"].rstrip("/").rsplit("/", 1)[-1] for i in items if i["type"] == "directory"]

    return sorted(_retry("list", location, ls))


@contextlib.contextmanager
def local_copy(location: str, options: StorageOptions = StorageOptions()) -> Iterator[str]:
    """A local path holding `location`'s bytes, for readers that want a file (safetensors'
    safe_open): the path itself when local, else a temporary copy removed afterwards."""
    if is_local(location):
        yield local_path(location)
        return
    suffix = os.path.splitext(location.rstrip("/"))[1]
    fd, tmp = tempfile.mkstemp(prefix="stylekit-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(read_bytes(location, options))
        yield tmp
    finally:
        os.unlink(tmp)


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
    checked with concurrent HEAD requests instead. Other protocols: concurrent info calls."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    if is_local(location):
        return _stat_local(local_path(location), wanted)
    if scheme_of(location) in ("s3", "s3a"):
        return _stat_s3(location, wanted, options)
    return _head(location, wanted, options)


def _stat_local(root: str, keys: list[str]) -> dict[str, FileEntry]:
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
    bucket, prefix = _bucket_prefix(location)
    first, last = prefix + keys[0], prefix + keys[-1]
    wanted = {prefix + k for k in keys}
    found: dict[str, FileEntry] = {}
    budget, seen, checked_to = RANGE_LIST_BUDGET * len(keys) + RANGE_LIST_SLACK, 0, ""
    # StartAfter is exclusive: start just before `first` (one of its own prefixes).
    pages = _s3_pages(
        location,
        options,
        Bucket=bucket,
        Prefix=_common_prefix(first, last),
        StartAfter=first[:-1],
        MaxKeys=LIST_PAGE_SIZE,
    )
    for contents in pages:
        for obj in contents:
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
    rest = [k for k in keys if prefix + k > checked_to]
    found.update(_head(location, rest, options))
    return found


def _common_prefix(a: str, b: str) -> str:
    """Longest string both start with (characters, not path components: S3 keys are strings)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _head(location: str, keys: list[str], options: StorageOptions) -> dict[str, FileEntry]:
    """Concurrent info (HEAD) requests for `keys` below `location`."""
    fs, root = filesystem(location, options)

    def head(key: str) -> FileEntry | None:
        def info() -> dict[str, Any] | None:
            try:
                return fs.info(f"{root}/{key}")
            except FileNotFoundError:
                return None

        found = _retry("check", join(location, key), info)
        if found is None or found["type"] != "file":
            return None
        return FileEntry(key, int(found.get("size") or 0), _mtime(found))

    with ThreadPoolExecutor(HEAD_THREADS) as pool:
        return {e.key: e for e in pool.map(head, keys) if e is not None}


def delete_tree(location: str, options: StorageOptions = StorageOptions()) -> None:
    """Remove a folder or prefix and everything below it (missing is fine)."""
    fs, path = filesystem(location, options)

    def rm() -> None:
        with contextlib.suppress(FileNotFoundError):
            fs.rm(path, recursive=True)

    _retry("delete", location, rm)


# --- messages ---------------------------------------------------------------------------------


def _short(e: BaseException) -> str:
    return first_line(str(e)) or type(e).__name__
