"""A lease on a bulk run's output: two runs never write one OUT at once.

KubeRay's RayCronJob has no concurrency policy, so a night that overruns meets the next one on
the same output. Each run holds OUT/_manifest/_lease.json (Parquet readers of _manifest/ skip
`_` names): its run id, host, pid, when it started, when it last renewed and when the lease
expires. A thread renews it every third of its TTL (default 90 s: renewed every 30 s). A
second run on the same output waits, with a progress line naming the run that holds it, and
past --lease-wait refuses with one line (exit status LEASE_HELD, stylekit/exitcodes.py).
A lease whose renewals stopped (its run was killed, its node vanished) expires after its TTL,
so a rerun after a crash goes on after at most that wait; --take-lease takes over a lease
whatever its state, for an operator who knows its run is gone.

Acquisition without a lock service, on any store: the lease is free when there is none, when
its expiry has passed, or when this run has watched it go unrenewed for a whole TTL on its own
clock (so a holder's clock running behind cannot keep it forever). A free lease is claimed by
writing this run's record (locally an exclusive create when there is none: of two runs that
find none, exactly one creates it), waiting a settle time (0.5 s locally, 2 s on object
stores), and reading it back: the run owns the lease only if the record read back is its own.
Object stores give read-after-write consistency (S3 since 2020, GCS, Azure), so of two runs
that claim at once, the one that wrote last wins and the other, reading back after the
other's write, sees that and waits.

The race window: a competitor whose read of the free lease comes before this run's write but
whose own write lands more than the settle time after it (a PUT stalled in retries for
seconds). Both then believe they hold it, until the earlier one's next check (every
CHECK_EVERY seconds, at most a third of the TTL) reads a record that is not its own: it stops
renewing (and never deletes the other's lease) and tells its run, which stops writing at once
and ends with one line (exit status LEASE_LOST, bulk/stop.py). The same happens to a holder
whose renewals could not reach the store for a whole TTL, or whose lease an operator took over. Expiry compares the holder's clock with the reader's: clocks must agree to well
within the TTL (NTP does). Release deletes the lease only if it is still this run's; a
release that fails leaves a lease that expires by itself.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from stylekit import exitcodes
from stylekit.errors import StylekitError
from stylekit.files import storage
from stylekit.logs import format_duration
from stylekit.redact import redact

log = logging.getLogger(__name__)

LEASE_FILE = "_lease.json"
DEFAULT_TTL = 90.0
DEFAULT_WAIT = 600.0
SETTLE_LOCAL = 0.5
SETTLE_REMOTE = 2.0
WAIT_LINE_EVERY = 30.0
CHECK_EVERY = 5.0  # seconds between reads of the lease while held: a lost lease is seen soon


class LeaseHeld(StylekitError):
    """Another run holds the output's lease past --lease-wait."""

    exit_code = exitcodes.LEASE_HELD


class LeaseLost(StylekitError):
    """Another run took the output's lease while this run held it."""

    exit_code = exitcodes.LEASE_LOST


@dataclass(frozen=True)
class LeaseRecord:
    """What the lease object holds (JSON). Times are epoch seconds on the holder's clock."""

    run_id: str
    token: str  # unique per acquisition: a run that claims twice never mistakes an old record
    host: str
    pid: int
    started: float
    renewed: float
    expires: float
    ttl: float

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def parse(cls, data: bytes | None) -> LeaseRecord | None:
        """The record, or None for a file that is not one (then judged by its age alone)."""
        if data is None:
            return None
        try:
            fields = json.loads(data)
            return cls(
                run_id=str(fields["run_id"]),
                token=str(fields["token"]),
                host=str(fields["host"]),
                pid=int(fields["pid"]),
                started=float(fields["started"]),
                renewed=float(fields["renewed"]),
                expires=float(fields["expires"]),
                ttl=float(fields["ttl"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self, now: float) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        left = self.expires - now
        expiry = f"expires in {left:.0f} s" if left > 0 else f"expired {-left:.0f} s ago"
        return (
            f"run {self.run_id} (host {self.host}, pid {self.pid}, started {started}, renewed "
            f"{max(now - self.renewed, 0):.0f} s ago, {expiry} unless renewed)"
        )


class OutputLease:
    """The lease on one output location: `with OutputLease(...)` acquires it (waiting up to
    `wait` seconds), renews it in a thread while inside, and releases it on the way out,
    error and KeyboardInterrupt included."""

    def __init__(
        self,
        output_root: str,
        run_id: str,
        options: storage.StorageOptions = storage.StorageOptions(),
        *,
        ttl: float = DEFAULT_TTL,
        wait: float = DEFAULT_WAIT,
        take: bool = False,
        settle: float | None = None,
        poll: float = 2.0,
        wait_line_every: float = WAIT_LINE_EVERY,
        manifest_dir: str = "_manifest",
        on_lost: Callable[[LeaseLost], None] | None = None,
    ):
        self.output_root, self.run_id, self.options = output_root, run_id, options
        self.manifest_dir = manifest_dir
        self.ttl, self.wait, self.take, self.poll = ttl, wait, take, poll
        self._settle = settle
        self.wait_line_every = wait_line_every
        self.token = uuid.uuid4().hex
        self.record: LeaseRecord | None = None
        self.lost_to: str | None = None  # who took the lease from this run, once one did
        self.on_lost = on_lost  # told once the lease is lost (else an error line is logged)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @functools.cached_property
    def location(self) -> str:
        """OUT/_manifest/_lease.json"""
        return storage.join(self.output_root, self.manifest_dir, LEASE_FILE)

    @functools.cached_property
    def local(self) -> bool:
        return storage.is_local(self.output_root)

    @property
    def settle(self) -> float:
        """How long a written record is left to settle before it is read back (a store's
        read-after-write may lag; this machine's files do not)."""
        if self._settle is not None:
            return self._settle
        return SETTLE_LOCAL if self.local else SETTLE_REMOTE

    # --- acquiring --------------------------------------------------------------------------

    def acquire(self) -> None:
        """Hold the lease, or raise LeaseHeld (one line naming the holder) after `wait` s."""
        deadline = time.monotonic() + self.wait
        seen: tuple[bytes, float] | None = None  # (the lease's bytes, when first seen so)
        waited_line = -float("inf")
        while True:
            data = self._read()
            now = time.time()
            if seen is None or seen[0] != data:
                seen = (data or b"", time.monotonic())
            current = LeaseRecord.parse(data)
            unchanged_for = time.monotonic() - seen[1]
            free, why = self._free(data, current, now, unchanged_for)
            if free:
                if why:
                    log.info("%s: %s", redact(self.location), why)
                if self._claim(absent=data is None):
                    self._start_renewing()
                    log.info(
                        "holding the lease on %s (run %s; renewed every %.0f s, expires %.0f s after "
                        "the last renewal)",
                        redact(self.output_root),
                        self.run_id,
                        self.ttl / 3,
                        self.ttl,
                    )
                    return
                seen = None  # another run claimed it at the same time: look again
                continue
            holder = current.describe(now) if current else "a lease file stylekit cannot read"
            left = deadline - time.monotonic()
            if left <= 0:
                raise LeaseHeld(
                    f"{redact(self.output_root)} is being written by {holder}; waited "
                    f"{self.wait:g} s (--lease-wait). Run again when it has finished, or with "
                    "--take-lease if that run is gone"
                )
            if time.monotonic() - waited_line >= self.wait_line_every:
                waited_line = time.monotonic()
                log.info(
                    "waiting for the lease on %s, held by %s; %s left of --lease-wait",
                    redact(self.output_root),
                    holder,
                    format_duration(left),
                )
            until_expiry = (current.expires - now) if current else self.ttl - unchanged_for
            time.sleep(max(0.05, min(self.poll, left, until_expiry + 0.05)))

    def _free(
        self, data: bytes | None, current: LeaseRecord | None, now: float, unchanged_for: float
    ) -> tuple[bool, str]:
        """(whether this run may claim the lease, why it is free when someone had it)."""
        if data is None:
            return True, ""
        who = f"run {current.run_id} (host {current.host})" if current else "an unreadable lease file"
        if self.take:
            return True, f"taking over the lease of {who} (--take-lease)"
        if current is None:  # not a record: free once it has not changed for a whole TTL
            if unchanged_for >= self.ttl:
                return True, f"{who} unchanged for {unchanged_for:.0f} s: taking it"
            return False, ""
        if current.expires <= now:
            return True, f"the lease of {who} expired {now - current.expires:.0f} s ago: taking it"
        if unchanged_for >= current.ttl:
            return True, f"the lease of {who} was not renewed for {unchanged_for:.0f} s: taking it"
        return False, ""

    def _claim(self, absent: bool) -> bool:
        """Write this run's record, let competing writes land, and read back: ours or not."""
        now = time.time()
        started = self.record.started if self.record else now
        record = LeaseRecord(
            run_id=self.run_id,
            token=self.token,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=started,
            renewed=now,
            expires=now + self.ttl,
            ttl=self.ttl,
        )
        if absent and self.local:
            if not storage.create_exclusive(self.location, record.to_bytes()):
                return False  # another run created it first
        else:
            storage.write_bytes(self.location, record.to_bytes(), self.options)
        time.sleep(self.settle)
        back = LeaseRecord.parse(self._read())
        if back is None or back.token != self.token:
            return False
        self.record = record
        return True

    def _read(self) -> bytes | None:
        return storage.read_if_exists(self.location, self.options)

    # --- renewing ---------------------------------------------------------------------------

    def _start_renewing(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="stylekit-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        every = self.ttl / 3
        renewed = time.monotonic()
        while not self._stop.wait(min(CHECK_EVERY, every)):
            try:
                if time.monotonic() - renewed >= every:
                    if not self.renew():
                        return
                    renewed = time.monotonic()
                elif not self.still_ours():
                    return
            except StylekitError as e:  # a store that does not answer: try again next time
                log.warning(
                    "could not renew the lease on %s (trying again in %.0f s): %s",
                    redact(self.output_root),
                    self.ttl / 3,
                    e,
                )

    def still_ours(self) -> bool:
        """Whether the lease still holds this run's record; if not, the loss is told (once)."""
        back = LeaseRecord.parse(self._read())
        if back is not None and back.token == self.token:
            return True
        self.lost_to = back.describe(time.time()) if back else "a run that removed it"
        lost = LeaseLost(
            f"the lease on {redact(self.output_root)} was taken by {self.lost_to}: another run "
            "writes this output now, so this run stopped writing; find out which run should own "
            "it before running again"
        )
        if self.on_lost is not None:
            self.on_lost(lost)
        else:
            log.error("%s", lost)
        return False

    def renew(self) -> bool:
        """Push the expiry out by a TTL; False (the loss told) if another run took it."""
        assert self.record is not None
        if not self.still_ours():
            return False
        now = time.time()
        self.record = LeaseRecord(**{**asdict(self.record), "renewed": now, "expires": now + self.ttl})
        storage.write_bytes(self.location, self.record.to_bytes(), self.options)
        return True

    # --- releasing --------------------------------------------------------------------------

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still this run's; never raises."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.record is None or self.lost_to is not None:
            return
        try:
            back = LeaseRecord.parse(self._read())
            if back is not None and back.token == self.token:
                storage.delete_file(self.location, self.options)
        except Exception as e:  # a failed release must not hide the run's own end
            log.warning(
                "could not release the lease on %s (it expires by itself within %.0f s): %s",
                redact(self.output_root),
                self.ttl,
                e,
            )
        self.record = None

    def __enter__(self) -> OutputLease:
        try:
            self.acquire()
        except BaseException:  # interrupted mid-claim: leave no record of ours behind
            self._abandon()
            raise
        return self

    def _abandon(self) -> None:
        try:
            back = LeaseRecord.parse(self._read())
            if back is not None and back.token == self.token:
                storage.delete_file(self.location, self.options)
        except Exception:  # it expires by itself
            pass

    def __exit__(self, *exc: Any) -> None:
        self.release()
