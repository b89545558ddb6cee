"""The morning report: one self-contained HTML page per bulk run, OUT/_manifest/run=<id>/_report.html.

`runs.py` reads the manifest (streaming, part by part), `thumbs.py` makes the bounded sample of
thumbnails, `charts.py` draws the throughput plot as SVG, `page.py` puts the page together and
`build.py` writes it (the bulk job's last step and `python -m stylekit report`)."""
