"""Joining Ray, the same way for every job, with Ray's own notices kept out of a user's log."""

from __future__ import annotations

import atexit
import contextlib
import copy
import logging
import os
import signal
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from typing import TypeVar

import ray

from stylekit import exitcodes
from stylekit.errors import StylekitError
from stylekit.logs import format_duration
from stylekit.nodes import Node, NoNodeFits, describe_nodes, node_types_from_config, nodes_from_ray
from stylekit.stderr_filter import drop_native_lines

T = TypeVar("T")
log = logging.getLogger(__name__)
WAIT_LINE_EVERY = 30.0  # seconds between "waiting for nodes" lines

# Lines Ray logs as warnings that ask nothing of a user: (logger, start of the message).
# Real warnings and errors, from these loggers too, still show.
NOTICES = (
    # On every local start; the opposite notice (token authentication *disabled*) still shows.
    ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled"),
)
# Python warnings Ray Data gives about sound settings: (message regex, category).
WARNINGS = (
    # The write pool's cap (bulk/engines/ray_photos.py) is above what a small input needs: no problem.
    (r"The maximum number of concurrent tasks for '.*' is set to", UserWarning),
    # An actor pool sized for the cluster meets a small input (a few photos): no problem.
    (r"The minimum number of concurrent actors for '.*' is set to", UserWarning),
    # Ray 2.60 names `memory` but not `scheduling_strategy` among map_batches' parameters, so
    # SPREAD for CPU actors (bulk/engines/sizing.py) can only go through **ray_remote_args, which warns.
    (r"`ray_remote_args` is deprecated", DeprecationWarning),
)
# Lines Ray's own processes (Ray Train's controller and workers, Ray Data's coordinators) print
# to the driver's console that ask nothing of a user; Ray's log files under the session keep
# them. Matched anywhere in a forwarded line; everything else (real errors) still shows.
ROUTINE_WORKER_LINES = (
    "Reporting training result",  # Ray Train, at every report
    "Requesting resources:",  # Ray Train's controller, at every (re)start of the worker group
    "Attempting to start training worker group",
    "Started training worker group of size",
    ") world_rank=",  # the worker list that follows it
    "Setting up process group for",
    "Found multiple active Ray instances",  # a Ray helper process on a machine with two Rays
    "Checkpoint successfully created at",
    "Failed to query Ray Train Controller actor state",  # PlacementGroupCleaner after a node loss
    "Starting execution of Dataset",  # Ray Data, every epoch of the training data
    "Execution plan of Dataset",
    "execution finished in",
    "Registered dataset logger",
    "`ExecutionOptions.exclude_resources` is deprecated",  # Ray Train's own ingest options
    "self.exclude_resources = exclude_resources",  # the source line Python prints under it
    "Progress bars disabled. To enable",  # Ray Data's note on the bars our progress lines replace
    "has constructor arguments in the object store",
)
# Lines Ray's C++ core worker in the driver writes straight to stderr (no Python logger sees
# them) that ask nothing of a user: kept off the console by stylekit/stderr_filter.py where
# a job owns its console (`own_console`); Ray's driver log file keeps them.
NATIVE_ROUTINE_LINES = (
    # On every actor pool Ray Data starts: it passes its own map transformer by reference and
    # keeps it for the pool's life, so the restart this warns about works (ray#53727).
    "has constructor arguments in the object store and max_restarts > 0",
)
_console_is_ours = False
# Ray Data's info lines (execution plan, "execution finished", where its logs are): our own
# progress lines replace them on the console; Ray Data's log file under the session keeps them.
RAY_DATA_CONSOLE_LEVEL = logging.WARNING


class _DropNotices(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_ray_notices() -> None:
    """Install the filters (idempotent): Ray's notices off the console, its errors on it."""
    for name, prefix in NOTICES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices((prefix,)))
    for message, category in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for handler in logging.getLogger("ray.data").handlers:
        # The console handler only: Ray Data's file handler keeps its full debug log.
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(max(handler.level, RAY_DATA_CONSOLE_LEVEL))


def routine_line(line: str) -> bool:
    """Whether a line forwarded from a Ray process is one of ROUTINE_WORKER_LINES (or the
    `warnings.warn(` source line Python prints under such a warning)."""
    return line.strip() == "warnings.warn(" or any(text in line for text in ROUTINE_WORKER_LINES)


def quiet_worker_lines() -> None:
    """Filter what Ray forwards from its worker processes to this driver's console (on a
    cluster this process joined too, whose workers' logging it cannot configure): routine
    lines dropped, the rest printed as Ray would. Idempotent; a Ray without the hook is left
    alone."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return
    with dispatcher._lock:
        handlers = []
        for name, handler in dispatcher.handlers:
            if name == "ray_print_logs" and not getattr(handler, "stylekit_filtered", False):
                handler = _filtered(handler)
            handlers.append((name, handler))
        dispatcher.handlers = handlers


def _filtered(handler: Callable[[dict], None]) -> Callable[[dict], None]:
    def emit(data: dict) -> None:
        lines = [line for line in data.get("lines", []) if not routine_line(line)]
        if lines:
            handler({**data, "lines": lines})

    emit.stylekit_filtered = True  # type: ignore[attr-defined]
    return emit


def quiet_ray_data_workers() -> None:
    """Ray Data's own actors (Ray Train's SplitCoordinator, for one) print three info lines per
    epoch ("Starting execution", "Execution plan", "execution finished") to the driver's
    console: in a short training run most of what a user reads. Worker processes of a Ray this
    process starts inherit its environment, so point them at Ray Data's own logging config with
    its console handler at RAY_DATA_CONSOLE_LEVEL (its file log under the session keeps every
    line). A config the user set is left alone; workers of an existing cluster are not reached."""
    if os.environ.get("RAY_DATA_LOGGING_CONFIG"):
        return
    try:
        import yaml
        from ray.data._internal.logging import DEFAULT_CONFIG
    except ImportError:  # another Ray layout: keep its default logging
        return
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["handlers"]["console"]["level"] = logging.getLevelName(RAY_DATA_CONSOLE_LEVEL)
    fd, path = tempfile.mkstemp(prefix="stylekit-ray-data-logging-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f)
    atexit.register(_remove, path)
    os.environ["RAY_DATA_LOGGING_CONFIG"] = path


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def own_console() -> None:
    """This process is a job whose console is the user's log (jobs/stylize.py, jobs/train.py):
    `init_ray` then keeps NATIVE_ROUTINE_LINES off it. Not for a process that only borrows
    Ray (a test, a notebook): its stderr is left alone."""
    global _console_is_ours
    _console_is_ours = True


def cluster_to_join() -> bool:
    """Whether `init_ray` would join a running Ray (this process's, RAY_ADDRESS, a `ray start`
    on this machine) rather than start one; RAY_ADDRESS=local counts as asking for Ray."""
    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        return True
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(None) is not None
    except Exception:  # another Ray's internals: assume a cluster, as ray.init would look for one
        return True


def init_ray() -> None:
    """Join the cluster we were submitted to (RAY_ADDRESS, or a `ray start` on this machine);
    with neither, start a local Ray for this process."""
    quiet_ray_notices()
    if not ray.is_initialized():
        if _console_is_ours:
            drop_native_lines(NATIVE_ROUTINE_LINES)
        quiet_ray_data_workers()
        main = threading.current_thread() is threading.main_thread()
        own = signal.getsignal(signal.SIGTERM) if main else None
        ray.init(logging_level=logging.WARNING, log_to_driver=True, **_local_api_server())
        if callable(own):  # the job's own (cli.interrupt_on_sigterm), not Ray's sys.exit(15)
            signal.signal(signal.SIGTERM, own)
    # Our own progress lines replace Ray Data's bars, which flood a log that is not a terminal
    # (and Ray's notice that they are off would only confuse).
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    quiet_ray_notices()  # again: importing Ray Data sets up its console handler
    quiet_worker_lines()


# Where Ray's state API (Ray Train's placement-group cleaner asks it whether the controller
# lives) finds the API server when no address says: Ray reads it before RAY_ADDRESS.
API_SERVER_VAR = "RAY_API_SERVER_ADDRESS"
LOCAL_HOST = "127.0.0.1"
_api_server_set: str | None = None


def _local_api_server() -> dict[str, object]:
    """ray.init's arguments for a Ray this process starts: its dashboard (the state API's
    server) on a port chosen here, and that address in API_SERVER_VAR, which Ray's processes
    inherit. Without it a Ray process looks for "the" Ray on the machine, and with another
    one running (a second job, a `ray start`) Ray Train's cleaner thread dies with a
    "multiple active Ray instances" traceback on the console. Joining a cluster: nothing."""
    global _api_server_set
    if _api_server_set and os.environ.get(API_SERVER_VAR) == _api_server_set:
        del os.environ[API_SERVER_VAR]  # the address of a Ray this process started before
    _api_server_set = None
    if cluster_to_join() and os.environ.get("RAY_ADDRESS") != "local":
        return {}
    with socket.socket() as probe:
        probe.bind((LOCAL_HOST, 0))
        port = probe.getsockname()[1]
    _api_server_set = os.environ[API_SERVER_VAR] = f"http://{LOCAL_HOST}:{port}"
    return {"dashboard_host": LOCAL_HOST, "dashboard_port": port}


HEAD_RESOURCE = "node:__internal_head__"  # every Ray head node has this resource


def on_head() -> dict[str, object]:
    """Actor options that put a small bookkeeping actor (counters, the watchdogs' clocks) on
    the head node, which lives as long as the cluster: never on a worker node that may vanish."""
    if any(HEAD_RESOURCE in (n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")):
        return {"resources": {HEAD_RESOURCE: 0.001}}
    return {}


def leave_quietly() -> None:
    """Before a job ends early (a stall) with Ray Data still running in a helper thread: its
    thread's late errors, and Ray's reconnecting to the cluster for it, stay off the console."""
    for name in ("ray.data", "ray._private.worker", "ray.train"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with contextlib.suppress(ImportError, AttributeError):
        import ray._private.auto_init_hook as hook

        hook.enable_auto_connect = False


class ClusterLost(StylekitError):
    """The Ray cluster's head stopped answering mid-run."""

    exit_code = exitcodes.CLUSTER_LOST
    ends_process = True  # a Ray shutdown would wait on the head that is gone


# Ray's own driver gives up on a head that does not answer after this many seconds (its
# gcs_rpc_server_reconnect_timeout_s) and ends the process with status 1 and no line of ours.
RAY_RECONNECT_VAR = "RAY_gcs_rpc_server_reconnect_timeout_s"
RAY_RECONNECT_DEFAULT = 60.0
LEAVE_MARGIN = 4.0  # seconds kept for printing the line and exiting, before Ray's own end


class ClusterWatch:
    """Watches the Ray head this process joined (a TCP connection to its GCS every `poll`
    seconds) while inside `with`; once none has been possible for `grace` seconds (default:
    half the time Ray itself waits before ending the process, so a head that restarts within
    it is waited for), calls `on_lost` with a ClusterLost."""

    def __init__(self, on_lost: Callable[[ClusterLost], None], grace: float | None = None, poll: float = 1.0):
        try:
            ray_wait = float(os.environ.get(RAY_RECONNECT_VAR, RAY_RECONNECT_DEFAULT))
        except ValueError:
            ray_wait = RAY_RECONNECT_DEFAULT
        grace = max(2.0, ray_wait / 2) if grace is None else grace
        self.on_lost, self.grace, self.poll = on_lost, grace, poll
        # What is left of Ray's wait once ours has passed, less a margin for the exit itself:
        # the run must be gone by then, or Ray ends it with status 1 and no line of ours.
        self.time_left = max(2.0, ray_wait - grace - LEAVE_MARGIN)
        self.address = ray.get_runtime_context().gcs_address
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stylekit-cluster-watch", daemon=True)

    def __enter__(self) -> ClusterWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def answers(self) -> bool:
        host, _, port = self.address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=min(2.0, self.grace)).close()
            return True
        except (OSError, ValueError):
            return False

    def _watch(self) -> None:
        since = None  # when the head last answered, once it stopped
        while not self._stop.wait(self.poll):
            if self.answers():
                since = None
                continue
            since = since or time.monotonic() - self.poll
            if time.monotonic() - since >= self.grace:
                leave_quietly()
                lost = ClusterLost(
                    f"lost the Ray cluster: its head at {self.address} has not answered for "
                    f"{self.grace:.0f} s; what settled is in the manifest, run the same "
                    "command again once the cluster is back to do the rest"
                )
                lost.time_left = self.time_left
                self.on_lost(lost)
                return


def shutdown_ray() -> None:
    """Leave the cluster (stopping a local Ray we started), so that no late worker output
    follows a job's last line."""
    ray.shutdown()


# --- the nodes that exist, and waiting for the autoscaler -------------------------------------


def cluster_nodes() -> list[Node]:
    """The alive nodes of the Ray this process joined."""
    return nodes_from_ray(ray.nodes())


def autoscaler_node_types() -> list[list[Node]] | None:
    """What the cluster's autoscaler may add (from the config it publishes in the GCS), or
    None when it publishes none (fixed nodes, a local Ray, an autoscaler that does not say)."""
    try:
        from ray._private.state import state

        return node_types_from_config(state.get_cluster_config())
    except Exception:  # another Ray layout, or no config: treat as unknown
        return None


def could_grow(plan: Callable[[list[Node]], object], nodes: list[Node]) -> bool:
    """Whether waiting can help `plan`: a node type the autoscaler may add makes it fit, or,
    with no autoscaler config to read, no node takes work yet (a 0-CPU head waiting for its
    workers, which nothing but added nodes can serve)."""
    types = autoscaler_node_types()
    if types is None:
        return not any(n.takes_work for n in nodes)
    for group in types:
        try:
            plan([*nodes, *group])
            return True
        except NoNodeFits:
            continue
    return False


class NoNodeJoined(NoNodeFits):
    """The autoscaler added no node the work fits on within --wait-for-nodes: the cluster's
    fault, not the command's (a later run may find one)."""

    exit_code = exitcodes.RUN_FAILED


def plan_on_nodes(
    plan: Callable[[list[Node]], T],
    wait_for_nodes: float,
    poll: float = 2.0,
    nodes: Callable[[], list[Node]] = cluster_nodes,
) -> T:
    """`plan(alive nodes)`; while it raises `NoNodeFits` on a cluster that could still add a
    node that fits (`could_grow`), wait for the autoscaler up to `wait_for_nodes` seconds,
    with a progress line, then give up with one line. A demand no node could ever meet
    fails at once."""
    deadline = time.monotonic() + wait_for_nodes
    last_line = -float("inf")
    while True:
        alive = nodes()
        try:
            return plan(alive)
        except NoNodeFits as e:
            if not could_grow(plan, alive):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoNodeJoined(
                    f"{e} (no such node joined within --wait-for-nodes {wait_for_nodes:g} s)"
                ) from None
            if time.monotonic() - last_line >= WAIT_LINE_EVERY:
                last_line = time.monotonic()
                log.info(
                    "waiting for the cluster to add a node (up: %s; %s left of --wait-for-nodes): %s",
                    describe_nodes(alive),
                    format_duration(left),
                    e,
                )
            time.sleep(min(poll, max(left, 0.01)))


def pending_demands() -> list[tuple[dict[str, float], int]]:
    """What Ray has been asked for and cannot place yet (the autoscaler's "Pending Demands":
    tasks, actors and placement groups), as (bundle, count); empty when unknown."""
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address, timeout=10)
        summary = status.resource_demands
        demands = [*summary.ray_task_actor_demand, *summary.placement_group_demand]
        return [(dict(b.bundle), int(b.count)) for d in demands for b in d.bundles_by_count]
    except Exception:  # no autoscaler state in this Ray: say nothing rather than fail
        return []


def describe_pending(nodes: list[Node] | None = None) -> str:
    """ "Ray cannot place 1 x {CPU: 4} (no node has that much: 2 nodes of 2 CPU)", or ""."""
    demands = pending_demands()
    if not demands:
        return ""
    nodes = cluster_nodes() if nodes is None else nodes
    parts = []
    for bundle, count in demands[:3]:
        shape = {k: v for k, v in bundle.items() if not k.startswith("node:") and v}
        text = f"{count} x {{{', '.join(f'{k}: {v:g}' for k, v in sorted(shape.items()))}}}"
        never = not any(
            all(_offers(n, k) >= v for k, v in shape.items() if k in ("CPU", "GPU", "memory")) for n in nodes
        )
        parts.append(text + (" (no node has that much)" if never else " (waiting for free resources)"))
    return f"Ray cannot place {'; '.join(parts)}; nodes up: {describe_nodes(nodes)}"


def _offers(node: Node, resource: str) -> float:
    return {"CPU": node.cpus, "GPU": node.gpus, "memory": node.memory}[resource]
