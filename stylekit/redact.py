"""The one redaction every line that leaves a process goes through: log lines (the handlers
`logs.setup_logging` installs), error lines (`cli.run_main`), manifest rows, the report and the
JSON summary. It removes

- the userinfo of any URL (`s3://KEY:SECRET@bucket`, `http://bob:pw@host`), whatever the
  secret holds: '/', '@', ':' or percent-escapes (an AWS secret key often holds '/');
- bare `user:password@host` endpoints (a mistyped `--s3-endpoint 'admin:pw@host'`);
- the secret query parameters of signed URLs and connection strings (S3 and GCS presigned
  URLs, Azure SAS tokens and account keys, OAuth tokens);
- every secret this process knows of in any spelling: those in its command line
  (`remember`) and the cloud secrets of its environment.

Text is also made one line (`one_line`): a newline inside a file name cannot split a log line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, unquote

from stylekit.errors import StylekitError, first_line

MASK = "***"

# A URL: scheme:// and the run of characters up to whitespace, a quote or an angle bracket.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>[^\s'\"<>`]*)")
# A bare endpoint user:password@host (no scheme): the user holds no '/', the password does
# not start with '//' (that is a URL), and the host follows the last '@' of the token.
_BARE = re.compile(
    r"(?:(?<=[\s'\"(=,\[])|^)(?P<user>[^\s'\"<>`:/@(=,\[]+):(?!//)(?P<secret>[^\s'\"<>`]*)@(?=[A-Za-z0-9\[])"
)
# Query parameters and connection-string fields whose value is a secret: S3 presigned URLs
# (SigV4 and V2), GCS signed URLs, Azure SAS tokens (sig, se/sv/sp/st/..., the skoid family)
# and connection strings, OAuth and API tokens.
_SECRET_PARAMS = (
    "X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|X-Goog-Signature|X-Goog-Credential|"
    "Signature|AWSAccessKeyId|GoogleAccessId|Policy|Key-Pair-Id|"
    "sig|se|sv|sp|st|spr|srt|ss|sr|si|skoid|sktid|skt|ske|sks|skv|saoid|suoid|scid|sdd|"
    "AccountKey|SharedAccessSignature|SharedAccessKey|SharedAccessKeyName|"
    "token|access_token|refresh_token|id_token|client_secret|code|password|passwd|pwd|secret|"
    "api_key|apikey|api-key|key|auth"
)
_QUERY_SECRET = re.compile(
    rf"(?:(?<=[?&;,\s'\"(])|^)(?P<name>{_SECRET_PARAMS})=(?P<value>[^&;,\s'\"<>#)]+)", re.IGNORECASE
)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Environment variables whose values are secrets.
ENV_SECRETS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
)
MIN_SECRET = 4  # shorter values are not masked wherever they appear (they would mask words)

_known: set[str] = set()
_known_lock = threading.Lock()


def userinfo_end(scheme: str, rest: str) -> int:
    """Where the userinfo of a URL ends in `rest` (the text after `scheme://`): the index of
    the '@' that closes it, or -1 when there is none. The authority ends at the first '/', but
    a secret may hold '/', '@' and ':': once the authority starts as user:password (or a
    host:port, which looks the same when the password starts with digits) and an '@' follows
    the '/', the password runs on to the token's last '@' (a path's own '@' is then masked
    too: masking too much, never too little)."""
    cut = len(rest)
    for stop in "/?#":
        at = rest.find(stop)
        if at != -1:
            cut = min(cut, at)
    authority = rest[:cut]
    if ":" in authority.split("@", 1)[0] and "@" in rest[cut:]:
        return rest.rfind("@")  # (a host:port with an '@' in its path is masked too)
    if "@" in authority:
        return authority.rfind("@")
    return -1


def secrets_in(text: str) -> list[str]:
    """The secrets `text` holds: URL userinfo (user and password), bare endpoint credentials
    and secret query parameters."""
    found: list[str] = []
    for m in _URL.finditer(text):
        end = userinfo_end(m.group("scheme"), m.group("rest"))
        if end > 0:
            found.extend(p for p in m.group("rest")[:end].split(":", 1) if p)
    for m in _BARE.finditer(text):
        found.extend(p for p in (m.group("user"), m.group("secret")) if p)
    found.extend(m.group("value") for m in _QUERY_SECRET.finditer(text))
    return found


def remember(texts: Iterable[str]) -> None:
    """Know the secrets in `texts` (a command line) from now on, in any spelling: each is
    masked wherever it appears, percent-decoded, percent-encoded or escaped as JSON or repr."""
    spellings: set[str] = set()
    for text in texts:
        for secret in secrets_in(str(text)):
            for form in (secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret), safe="")):
                spellings.update((form, json.dumps(form)[1:-1], repr(form)[1:-1]))
    with _known_lock:
        _known.update(s for s in spellings if len(s) >= MIN_SECRET and s != MASK)


def _mask_url(m: re.Match[str]) -> str:
    rest = m.group("rest")
    end = userinfo_end(m.group("scheme"), rest)
    if end < 0:
        return m.group(0)
    return f"{m.group('scheme')}://{MASK}@{rest[end + 1 :]}"


def redact(text: str) -> str:
    """`text` with every secret removed (see the module's docstring), so that it may be logged,
    printed or stored."""
    text = str(text)
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for var in ENV_SECRETS:
        value = os.environ.get(var)
        if value and len(value) >= MIN_SECRET:
            known.append(value)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    if "://" in text:
        text = _URL.sub(_mask_url, text)
    if "@" in text:
        text = _BARE.sub(lambda m: f"{MASK}@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: f"{m.group('name')}={MASK}", text)
    return text


def one_line(text: str) -> str:
    """`text` with newlines and other control characters escaped (a tab stays)."""
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], str(text))


def shown(text: str) -> str:
    """What a line a user reads may say: redacted and one line."""
    return one_line(redact(text))


def describe(e: BaseException) -> str:
    """A one-line error for the manifest, with any credentials masked."""
    message = first_line(redact(str(e)), 500) or type(e).__name__
    if not isinstance(e, StylekitError):
        message = f"{type(e).__name__}: {message}"
    return redact(message)


def root_cause(e: BaseException) -> str:
    """The last line of the innermost cause of a chained error (Ray wraps a task's failure in
    layers of its own), credentials masked."""
    while e.__cause__ is not None:
        e = e.__cause__
    lines = [line for line in redact(str(e)).strip().splitlines() if line.strip()]
    return redact(lines[-1] if lines else type(e).__name__)


class RedactingFormatter(logging.Formatter):
    """A log line's message made one line and redacted, and any traceback redacted."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = shown(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: object) -> str:
        return redact(super().formatException(ei))  # type: ignore[arg-type]

    def formatStack(self, stack_info: str) -> str:
        return redact(super().formatStack(stack_info))
