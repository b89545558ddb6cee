"""The output lease (stylekit/bulk/plan/lease.py): one run per output at a time, on local folders and
on S3 (moto's server): acquire and release, a second run that waits then refuses, two runs
claiming at once, an expired lease taken, --take-lease, and a holder killed with SIGKILL whose
lease a rerun takes after its TTL. No Ray."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import PYTHON, REPO, make_bucket
from stylekit import exitcodes
from stylekit.bulk.plan.lease import LEASE_FILE, LeaseHeld, LeaseRecord, OutputLease
from stylekit.files import storage


@pytest.fixture(params=["local", "s3"])
def output(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An output location: a local folder, or a fresh S3 bucket on moto's server."""
    if request.param == "local":
        return str(tmp_path / "out")
    request.getfixturevalue("s3_server")
    bucket = f"lease-{uuid.uuid4().hex[:8]}"
    make_bucket(bucket)
    return f"s3://{bucket}/out"


def lease_at(output: str) -> str:
    return storage.join(output, "_manifest", LEASE_FILE)


def quick(output: str, run_id: str, **kw: float | bool) -> OutputLease:
    kw.setdefault("settle", 0.2)
    kw.setdefault("poll", 0.2)
    kw.setdefault("wait_line_every", 0.5)
    return OutputLease(output, run_id, **kw)  # type: ignore[arg-type]


def test_held_while_inside_renewed_and_released_on_the_way_out(output: str) -> None:
    with quick(output, "run-a", ttl=3.0) as lease:
        record = LeaseRecord.parse(storage.read_if_exists(lease_at(output)))
        assert record is not None and record.run_id == "run-a" and record.pid == os.getpid()
        assert record.expires - record.renewed == pytest.approx(3.0)
        time.sleep(1.6)  # renewed every ttl/3 = 1 s
        renewed = LeaseRecord.parse(storage.read_if_exists(lease_at(output)))
        assert renewed is not None and renewed.renewed > record.renewed and renewed.token == record.token
        assert lease.lost_to is None
    assert storage.read_if_exists(lease_at(output)) is None


def test_released_on_error_and_on_keyboard_interrupt(output: str) -> None:
    for exc in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc), quick(output, "run-a"):
            raise exc()
        assert storage.read_if_exists(lease_at(output)) is None


def test_a_second_run_waits_saying_who_holds_it_then_refuses_naming_it(
    output: str, caplog: pytest.LogCaptureFixture
) -> None:
    with quick(output, "night-1", ttl=30.0):
        caplog.set_level(logging.INFO, logger="stylekit.bulk.plan.lease")
        started = time.monotonic()
        with pytest.raises(LeaseHeld) as refused:
            quick(output, "night-2", wait=1.5).acquire()
        waited = time.monotonic() - started
    assert 1.5 <= waited < 5
    line = str(refused.value)
    assert "\n" not in line and "night-1" in line and "--lease-wait" in line and "--take-lease" in line
    assert refused.value.exit_code == exitcodes.LEASE_HELD
    waiting = [r.getMessage() for r in caplog.records if "waiting for the lease" in r.getMessage()]
    assert waiting and "night-1" in waiting[0]


def test_a_run_that_waits_gets_the_lease_when_the_holder_ends(output: str) -> None:
    first = quick(output, "night-1", ttl=30.0)
    first.acquire()
    threading.Timer(1.0, first.release).start()
    with quick(output, "night-2", wait=20.0) as second:
        assert second.record is not None
        held = LeaseRecord.parse(storage.read_if_exists(lease_at(output)))
        assert held is not None and held.run_id == "night-2"


def test_two_runs_claiming_a_free_lease_at_once_one_wins(output: str) -> None:
    """Both find no lease and claim it in the same instant: the read-back (and locally the
    exclusive create) leaves exactly one holder; the other waits and refuses."""
    barrier = threading.Barrier(2)
    outcome: dict[str, str] = {}
    leases = {name: quick(output, name, ttl=30.0, wait=1.0) for name in ("a", "b")}

    def claim(name: str) -> None:
        barrier.wait()
        try:
            leases[name].acquire()
            outcome[name] = "held"
        except LeaseHeld as e:
            outcome[name] = str(e)

    threads = [threading.Thread(target=claim, args=(n,)) for n in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert sorted(v == "held" for v in outcome.values()) == [False, True], outcome
        winner = next(n for n, v in outcome.items() if v == "held")
        loser = "b" if winner == "a" else "a"
        assert f"run {winner} " in outcome[loser]
        held = LeaseRecord.parse(storage.read_if_exists(lease_at(output)))
        assert held is not None and held.run_id == winner
    finally:
        for lease in leases.values():
            lease.release()


def _write_record(output: str, run_id: str, *, expires_in: float, ttl: float = 90.0) -> None:
    now = time.time()
    record = LeaseRecord(run_id, uuid.uuid4().hex, "gone-host", 1, now - 600, now - 60, now + expires_in, ttl)
    storage.write_bytes(lease_at(output), record.to_bytes())


def test_an_expired_lease_is_taken_at_once(output: str, caplog: pytest.LogCaptureFixture) -> None:
    _write_record(output, "crashed-night", expires_in=-30)
    caplog.set_level(logging.INFO, logger="stylekit.bulk.plan.lease")
    started = time.monotonic()
    with quick(output, "next-night", wait=0.0):
        assert time.monotonic() - started < 3
    assert any("crashed-night" in r.getMessage() and "expired" in r.getMessage() for r in caplog.records)


def test_a_lease_file_that_is_not_a_record_is_taken_after_a_ttl_unchanged(output: str) -> None:
    storage.write_bytes(lease_at(output), b"not json")
    with pytest.raises(LeaseHeld):
        quick(output, "r", ttl=30.0, wait=0.5).acquire()
    started = time.monotonic()
    with quick(output, "r", ttl=2.0, wait=10.0):
        assert 2.0 <= time.monotonic() - started < 6


def test_take_lease_takes_a_live_one_and_the_old_holder_knows(
    output: str, caplog: pytest.LogCaptureFixture
) -> None:
    old = quick(output, "stuck-night", ttl=30.0)
    old.acquire()
    try:
        with quick(output, "operator", wait=0.0, take=True):
            assert old.renew() is False  # its next renewal finds another run's record
            assert old.lost_to is not None and "operator" in old.lost_to
            old.release()  # never deletes the lease it lost
            held = LeaseRecord.parse(storage.read_if_exists(lease_at(output)))
            assert held is not None and held.run_id == "operator"
    finally:
        old.release()
    assert any("taken by run operator" in r.getMessage() for r in caplog.records)
    assert storage.read_if_exists(lease_at(output)) is None


HOLDER = """
import sys, time
from stylekit.bulk.plan.lease import OutputLease
lease = OutputLease(sys.argv[1], "killed-night", ttl=float(sys.argv[2]), settle=0.2)
lease.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_holder_killed_with_sigkill_is_taken_over_after_its_ttl(output: str) -> None:
    ttl = 3.0
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [PYTHON, "-c", HOLDER, output, str(ttl)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        time.sleep(1.5)  # renewed at least once
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = LeaseRecord.parse(storage.read_if_exists(lease_at(output)))
    assert killed is not None and killed.run_id == "killed-night"  # nothing released it
    started = time.monotonic()
    with quick(output, "rerun", wait=60.0):  # the rerun, at once: waits for the TTL, then goes on
        waited = time.monotonic() - started
    assert 0.5 < waited < ttl + 3, waited
