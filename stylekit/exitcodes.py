"""What a stylekit job or command returns, so that a scheduler (a KubeRay RayJob, a CronJob,
an alert on either) can tell a night that worked from one that needs a person.

Each value means one thing, and the same thing for every job and command:

- OK (0): the run finished. Every input is accounted for in the manifest; inputs that failed
  (a broken photo) are failed rows, and still exit 0 unless --strict.
- INPUTS_FAILED (1): the run finished, --strict was given, and at least one input failed.
- USAGE (2): refused before the work: a bad flag or value, a setting the output refuses (another
  model than the outputs were made with), a model or location that cannot be read, a demand
  no node can meet. Rerunning the same command will not help; change it.
- RUN_FAILED (3): the run started but could not finish: a store that stopped answering after
  every retry, a Ray pipeline that failed, the cluster never adding a node the work fits on.
  What settled is in the manifest; the same command later does the rest.
- STALLED (4): the stall watchdog ended the run (--stall-timeout): nothing settled for that
  long. As RUN_FAILED, a rerun does the rest; the line names the stage that stopped.
- LEASE_HELD (5): another run holds the output's lease (bulk/plan/lease.py) and did not let go
  within --lease-wait: nothing was written. Usually the previous night still running.
- CLUSTER_LOST (6): the Ray cluster's head (and with it the cluster) stopped answering
  mid-run: the run ended at once, its manifest written up to a few seconds before, its lease
  released. A rerun once the cluster is back does the rest.
- LEASE_LOST (7): another run took the output's lease mid-run (--take-lease, or this run's
  renewals could not reach the store for a whole --lease-ttl): this run stopped writing at once.
  Find out which run should own the output before rerunning.
- INTERRUPTED (130, 128 + SIGINT): Ctrl-C, or SIGTERM (a pod deleted, a RayJob stopped);
  the lease is released and what settled is in the manifest.

Values are distinct and below 126 (the shell's own) except INTERRUPTED, the shell's convention.
"""

from __future__ import annotations

OK = 0
INPUTS_FAILED = 1
USAGE = 2
RUN_FAILED = 3
STALLED = 4
LEASE_HELD = 5
CLUSTER_LOST = 6
LEASE_LOST = 7
INTERRUPTED = 130

MEANINGS: dict[int, str] = {
    OK: "finished; every input accounted for (failed inputs too, without --strict)",
    INPUTS_FAILED: "finished with --strict, and at least one input failed",
    USAGE: "refused: a bad flag or value, a setting the output refuses, an unreadable model",
    RUN_FAILED: "could not finish: a store or Ray failed, or no node joined; rerun does the rest",
    STALLED: "the stall watchdog ended it (--stall-timeout); rerun does the rest",
    LEASE_HELD: "another run holds the output's lease past --lease-wait; nothing written",
    CLUSTER_LOST: "the Ray cluster's head stopped answering mid-run; rerun does the rest",
    LEASE_LOST: "another run took the output's lease mid-run; this run stopped writing",
    INTERRUPTED: "interrupted (SIGINT or SIGTERM); the lease released",
}
