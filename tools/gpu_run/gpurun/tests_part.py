"""The tests part: `pytest -m gpu`, every fast path against fp32 with its tolerance, on CUDA."""

from __future__ import annotations

import argparse
import importlib.util
import re
import time

from gpurun.procs import PYTHON, child_env, emit, tee
from gpurun.setting import REPO


def child_tests(args: argparse.Namespace) -> int:
    """`pytest -m gpu` over the test files that have GPU tests (other test files import Ray,
    which the GPU machine may not have); on the dry run also one tiny CPU check."""
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text())  # fmt: skip
    if not files:
        emit(kind="tests", status="no test file has a gpu mark", passed=0, failed=0, skipped=0, cases=[])
        return 1
    runs = [("gpu", ["-m", "gpu", *files])]
    if args.dry_run:  # one pytest (each costs seconds to start): the GPU tests by name, and one CPU check
        runs = [
            ("gpu (by name) + a CPU check", ["-k", "cuda or test_subpixel_upsample_conv_is_exact", *files])
        ]
    worst = 0
    for name, selection in runs:
        left = args.deadline - time.time() - 3
        cmd = [
            PYTHON,
            "-m",
            "pytest",
            "-v",
            "-rfE",
            "-p",
            "no:cacheprovider",
        ]
        if importlib.util.find_spec("pytest_timeout"):  # on the GPU image; a hung test then fails alone
            cmd.append(f"--timeout={max(10, int(left))}")
        rc, text = tee([*cmd, *selection], left, child_env())
        # -v prints each test's result as it ends (kept if the run is cut off); -rfE adds why a test failed
        cases: dict[str, list[str]] = {}
        for test, status, why in re.findall(
            r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)(?: \((.*?)\))?\s+\[", text, re.M
        ):
            cases[test] = [status, why]
        for status, test, why in re.findall(r"^(FAILED|ERROR) (\S+::\S+)(?: - (.*))?$", text, re.M):
            cases[test] = [status, why]
        counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", text)}
        final = [
            ln
            for ln in text.splitlines()
            if re.match(r"^=+ .*(passed|failed|skipped|error|no tests).* =+$", ln)
        ]
        emit(
            kind="tests", run=name, rc=rc, line=final[-1].strip("= ") if final else "no pytest summary (cut off?)",
            passed=sum(c[0] == "PASSED" for c in cases.values()), failed=sum(c[0] in ("FAILED", "ERROR") for c in cases.values()),
            skipped=sum(c[0] == "SKIPPED" for c in cases.values()), deselected=counts.get("deselected", 0),
            cases=[[st, t.split("::", 1)[-1], (why or "")[:160]] for t, (st, why) in cases.items()],
        )  # fmt: skip
        worst = worst or (1 if rc is None else rc)
    return worst
