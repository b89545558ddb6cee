"""The GPU run's parts (tools/gpu_run/gpu_run.py runs them): one module per part, the processes
and results they share (procs.py), where the run is (setting.py) and its summary (summary.py)."""
