"""Error text a user sees: credentials masked, one line, the root cause of a chained failure.

Every user-facing error path (the bulk driver and its stages, bulk videos, training) renders
exceptions through these helpers, so an S3 secret, a URL with user:password@ or a signed query
string inside an exception never reaches a log line or a manifest row.
"""

from __future__ import annotations

import os
import re

from stylekit.errors import StylekitError, first_line

_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
# Azure account keys and SAS signatures, and the signature, credential and session token of an
# S3 presigned URL: the value after the "=" is the secret.
_QUERY_SECRET = re.compile(
    r"((?:AccountKey|SharedAccessSignature|sig|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token)=)"
    r"[^;&\s]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with any user:password@ of a URL removed, signed-URL and Azure secrets masked, and
    the AWS and Azure secrets of this process's environment masked, so an error or endpoint can be logged or stored safely."""
    text = _USERINFO.sub("***@", text)
    text = _QUERY_SECRET.sub(r"\1***", text)
    for var in (
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_CONNECTION_STRING",
    ):
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def describe(e: BaseException) -> str:
    """A one-line error for the manifest, with any credentials masked."""
    message = first_line(str(e), 500) or type(e).__name__
    if not isinstance(e, StylekitError):
        message = f"{type(e).__name__}: {message}"
    return redact(message)


def root_cause(e: BaseException) -> str:
    """The last line of the innermost cause of a chained error (Ray wraps a task's failure in
    layers of its own), credentials masked."""
    while e.__cause__ is not None:
        e = e.__cause__
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return redact(lines[-1] if lines else type(e).__name__)
