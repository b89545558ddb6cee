"""The driver's side of a bulk run, without Ray: where it reads and writes, what is still to do,
and the manifest that accounts for every input."""
