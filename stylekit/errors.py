"""The one exception type a user sees: a clear, one-line message that says what to do.

Each carries the exit status a job or command ends with (stylekit/exitcodes.py)."""

from stylekit import exitcodes


class StylekitError(Exception):
    """A problem with the user's input or environment; printed as one line, never a traceback."""

    exit_code: int = exitcodes.USAGE
    # The process ends right after the line (no interpreter teardown, no Ray shutdown that
    # waits on a cluster that is gone).
    ends_process: bool = False
    # Seconds the process has, from when this is raised, before something outside it ends it
    # (Ray's driver gives up on a lost head): a stopped run leaves within them. None: no limit.
    time_left: float | None = None


class RunFailed(StylekitError):
    """A run that started could not finish (a store that stopped answering, a failed Ray
    pipeline, no node joining); a rerun does the rest."""

    exit_code = exitcodes.RUN_FAILED


class ConfigError(StylekitError, ValueError):
    """A configuration value is out of range or inconsistent."""


def first_line(text: str, limit: int = 400) -> str:
    """The first non-empty line of `text` (with the next ones while a line ends in ':', which
    introduces its cause), whole when it fits in `limit` characters, else cut
    after its last full sentence (or, lacking one, its last whole word) that fits, with "..."
    where the cut is, never mid-word."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else ""
    for more in lines[1:]:  # "Parameter validation failed:" and its cause on the next line
        if not line.endswith(":"):
            break
        line = f"{line} {more}"
    if len(line) <= limit:
        return line
    head = line[:limit]
    sentence = max(head.rfind(". "), head.rfind("; "), head.rfind(": "))
    if sentence > limit // 3:
        return head[: sentence + 1] + " ..."
    word = head.rfind(" ")
    return head[:word].rstrip(",;:") + " ..." if word > 0 else line  # one long token: whole
