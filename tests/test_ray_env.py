"""Ray's notices stay off a user's console, its real warnings and errors do not; a local Ray's processes find their own state API."""

from __future__ import annotations

import io
import logging
import os

import pytest
import ray.data  # noqa: F401  (sets up Ray Data's console and file handlers, as a job does)

from stylekit.ray_env import quiet_ray_notices


def _captured(name: str) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    return logger, out, handler


def test_the_token_notice_is_dropped_and_a_real_warning_from_the_same_logger_shows() -> None:
    quiet_ray_notices()
    quiet_ray_notices()  # idempotent: one filter, not two
    logger, out, handler = _captured("ray._private.authentication.authentication_token_setup")
    try:
        assert len(logger.filters) == 1
        logger.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=...")
        logger.warning("Token authentication is disabled for this Ray cluster. Anyone with ...")
        logger.error("could not read the token file")
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines == [
        "Token authentication is disabled for this Ray cluster. Anyone with ...",
        "could not read the token file",
    ]


def test_ray_data_info_lines_leave_the_console_and_its_errors_stay() -> None:
    quiet_ray_notices()
    handlers = logging.getLogger("ray.data").handlers
    console = [
        h for h in handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    files = [h for h in handlers if h not in console]
    assert console, "Ray Data has no console handler to quiet"
    info = logging.LogRecord(
        "ray.data.x", logging.INFO, __file__, 1, "Starting execution of Dataset", None, None
    )
    error = logging.LogRecord("ray.data.x", logging.ERROR, __file__, 1, "a task failed", None, None)
    for h in console:
        assert info.levelno < h.level <= error.levelno
    for h in files:  # Ray Data's own log file keeps everything
        assert h.level <= logging.INFO


def test_the_write_pool_cap_warning_is_dropped_and_other_warnings_show() -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_ray_notices()
        warnings.warn(
            "The maximum number of concurrent tasks for 'MapBatches(write_batch)' is set to 4, but ...",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn("something Ray really means", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something Ray really means"]


def test_ray_data_workers_get_its_own_config_with_a_quieter_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers of a local Ray inherit RAY_DATA_LOGGING_CONFIG: Ray Data's default config with
    only the console at WARNING (its file log keeps every line); a user's own config stays."""
    import yaml
    from ray.data._internal.logging import DEFAULT_CONFIG

    from stylekit.ray_env import quiet_ray_data_workers

    monkeypatch.delenv("RAY_DATA_LOGGING_CONFIG", raising=False)
    quiet_ray_data_workers()
    with open(os.environ["RAY_DATA_LOGGING_CONFIG"]) as f:
        config = yaml.safe_load(f)
    assert config["handlers"]["console"]["level"] == "WARNING"
    assert config["handlers"]["file"] == DEFAULT_CONFIG["handlers"]["file"]
    assert config["loggers"] == DEFAULT_CONFIG["loggers"]

    monkeypatch.setenv("RAY_DATA_LOGGING_CONFIG", "/the/users/own.yaml")
    quiet_ray_data_workers()
    assert os.environ["RAY_DATA_LOGGING_CONFIG"] == "/the/users/own.yaml"


def test_routine_lines_of_ray_processes_are_dropped_and_real_errors_reach_the_console() -> None:
    from stylekit.ray_env import _filtered, routine_line

    seen: list[dict] = []
    emit = _filtered(seen.append)
    emit({"lines": ["Reporting training result 3: TrainingReport(...)", "  warnings.warn("], "pid": 1})
    emit({"lines": ["(PlacementGroupCleaner) Failed to query Ray Train Controller actor state"], "pid": 2})
    emit(
        {
            "lines": ["Checkpoint successfully created at: Checkpoint(...)", "RuntimeError: disk full"],
            "pid": 3,
        }
    )
    assert [d["lines"] for d in seen] == [["RuntimeError: disk full"]]
    assert routine_line("Starting execution of Dataset train_1_0. Full logs are in /tmp/ray/...")
    # Ray Train's DatasetManager and SplitCoordinator, once per training run.
    assert routine_line("  self.exclude_resources = exclude_resources")
    assert routine_line(
        "Progress bars disabled. To enable, set `ray.data.DataContext.get_current().enable_progress_bars = True`."
    )
    assert not routine_line("ERROR stylekit.train.ray_job: training failed")


PROBE = """
import ray
from stylekit import ray_env
ray_env.init_ray()

@ray.remote(num_cpus=0)
class Probe:
    def state_of(self, actor_id):
        from ray.util.state import get_actor
        return get_actor(actor_id, timeout=30).state

probe = Probe.remote()
print("state:", ray.get(probe.state_of.remote(probe._actor_id.hex())))
"""


def test_a_ray_process_of_a_local_ray_finds_its_state_api_beside_another_ray() -> None:
    """Ray Train's placement-group cleaner asks the state API, from inside the job's Ray,
    whether the controller lives. With a second Ray on the machine (another job, a `ray
    start`), a local Ray's process must still find its own, not die on "multiple active Ray
    instances"."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_API_SERVER"))}
    other = subprocess.Popen(
        [sys.executable, "-c", "import ray, sys; ray.init(include_dashboard=False); print('up', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "up"
        probe = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300
        )
        assert "state: ALIVE" in probe.stdout, probe.stdout + probe.stderr
    finally:
        assert other.stdin is not None
        other.stdin.close()
        other.wait(timeout=120)
