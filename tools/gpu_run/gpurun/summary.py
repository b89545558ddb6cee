"""The GPU run's summary.md: each target, its measured value, met or missed by how much and what
bounds it; then every part's tables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gpurun.setting import PAPER_SIDE, PAPER_STEPS


def num(cell: str) -> float | None:
    m = re.search(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?", cell or "")
    return float(m.group()) if m else None


def parse_table(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines if ln.startswith("|")]
    rows = [r for r in rows if not all(set(c) <= {"-", ":"} for c in r)]
    return (rows[0], rows[1:]) if rows else ([], [])


def verdict(value: float | None, target: float, higher: bool = True, unit: str = "") -> str:
    if value is None:
        return "not measured"
    if (value >= target) if higher else (value < target):
        return "**met**"
    if higher:
        return f"**missed** by {100 * (1 - value / target):.0f}% (needs {target / max(value, 1e-9):.2f}x)"
    return f"**missed** by {value - target:.1f} points{unit}"


class Findings:
    """The measured values the targets need, gathered from every part's results."""

    def __init__(self, records: dict[str, Any]):
        res = [r for rec in records.values() for r in rec.get("results", [])]
        self.flops = next((r for r in res if r.get("kind") == "flops"), {})
        self.roofs = next((r for r in res if r.get("kind") == "roofs"), {})
        self.profile = {r["what"]: r for r in res if r.get("kind") == "profile"}
        self.bench = [r for r in res if r.get("kind") == "bench"]
        self.tests = [r for r in res if r.get("kind") == "tests"]
        self.train = [r for r in res if r.get("kind") == "train"]
        self.ray = [r for r in res if r.get("kind") == "ray"]

    def tables(self, kind: str) -> list[tuple[list[str], list[list[str]], str]]:
        """(headers, rows, the header block) of each table the `kind` benchmark printed."""
        return [
            (*parse_table(b.get("table") or []), b.get("header") or "")
            for b in self.bench
            if b.get("bench") == kind and b.get("table")
        ]

    def training(self) -> dict[str, Any]:
        best: dict[str, Any] = {}
        for headers, rows, header in self.tables("train"):
            side = int((re.search(r"Training step, (\d+)x", header) or [0, PAPER_SIDE])[1])
            for row in rows:
                cells = dict(zip(headers, row, strict=False))
                batch, ref = num(cells.get("batch", "")), num(cells.get("reference img/s", ""))
                if ref and ref > best.get("ref", 0):
                    best.update(ref=ref, ref_batch=batch)
                for h, c in cells.items():
                    m = re.match(r"stylekit (\S+) img/s", h)
                    rate = num(c) if m and "OOM" not in c else None
                    if rate and rate > best.get("rate", 0):
                        best.update(rate=rate, variant=m.group(1), batch=batch, ref_same=ref, side=side)  # type: ignore[union-attr]
        return best

    def stylize(self, size: str) -> dict[str, Any]:
        best: dict[str, Any] = {}
        for headers, rows, _ in self.tables("stylize"):
            for row in rows:
                cells = dict(zip(headers, row, strict=False))
                if cells.get("size") != size:
                    continue
                rate = num(cells.get("img/s best batch", "").split("(")[0])
                batch = num((re.search(r"b=(\d+)", cells.get("img/s best batch", "")) or [""])[0])
                if cells.get("path") == "reference":
                    if rate and rate > best.get("ref", 0):
                        best["ref"] = rate
                elif rate and rate > best.get("rate", 0):
                    best.update(rate=rate, variant=cells.get("path"), batch=batch)
        return best

    def bulk(self) -> list[dict[str, Any]]:
        rows = []
        for headers, table_rows, _ in self.tables("bulk"):
            for row in table_rows:
                cells = dict(zip(headers, row, strict=False))
                rows.append({"engine": cells.get("engine", "?"), "photos": num(cells.get("photos", "")),
                             "rate": num(cells.get("photos/s end to end", "")),
                             "wait": (num(cells.get("model stage waiting", "")) or 0) / 100
                             if num(cells.get("model stage waiting", "")) is not None else None})  # fmt: skip
        for r in self.ray:
            if r.get("step") == "bulk" and r.get("images_per_s"):
                rows.append(
                    {
                        "engine": "ray (the bulk job)",
                        "photos": r.get("photos"),
                        "rate": r["images_per_s"],
                        "wait": r.get("wait"),
                    }
                )
        return rows


def tflops(flops: float | None, rate: float | None) -> float | None:
    return flops * rate / 1e12 if flops and rate else None


def profile_words(p: dict[str, Any] | None) -> str:
    if not p:
        return ""
    shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(p["shares"].items())[:4])
    busy = f"GPU busy {100 * p['busy']:.0f}% of the wall time; " if p.get("busy") is not None else ""
    head = ""
    if p.get("busy") is not None and p["busy"] < 0.85:
        head = f"the GPU idles {100 * (1 - p['busy']):.0f}% of the time (launches, host work, synchronous copies). "
    else:
        top = next(iter(p["shares"].items()), None)
        if top:
            head = f"{top[0]} kernels: {100 * top[1]:.0f}% of the kernel time. "
    return f"{head}{busy}kernel time: {shares} (profile: {p.get('what')} {p.get('size', p.get('side'))}, batch {p.get('batch')})"


def bound_rate(f: Findings, flops: float | None, rate: float | None, ref_flops: float | None, ref: float | None,
               prof: dict[str, Any] | None) -> str:  # fmt: skip
    """What bounds a rate: achieved TFLOP/s against the measured matmul roof, the profile,
    and the speed-up over the reference split into FLOPs saved x efficiency gained."""
    parts = []
    achieved, roof = tflops(flops, rate), f.roofs.get("matmul_tflops")
    if achieved:
        parts.append(
            f"{achieved:.3g} TFLOP/s"
            + (f" = {100 * achieved / roof:.0f}% of the measured matmul peak ({roof:.3g})" if roof else "")
        )
    words = profile_words(prof)
    if words:
        parts.append(words)
    ref_achieved = tflops(ref_flops, ref)
    if achieved and ref_achieved and flops and ref_flops:
        parts.append(f"speed-up = {ref_flops / flops:.2f}x fewer FLOPs x {achieved / ref_achieved:.2f}x the reference's "
                     f"efficiency ({ref_achieved:.3g} TFLOP/s)")  # fmt: skip
    return "; ".join(parts) or "no profile measured"


def target_rows(f: Findings, dry: bool) -> list[list[str]]:
    rows = []
    tr = f.training()
    rate, ref = tr.get("rate"), tr.get("ref")
    side = tr.get("side", PAPER_SIDE)
    where = f" ({tr.get('variant')}, batch {tr.get('batch'):.0f}, {side} px)" if rate else ""
    scale = (side / PAPER_SIDE) ** 2  # FLOPs were counted at 256 px (the dry run measures at 32)
    fl, fl_ref = (f.flops.get(k, 0) * scale or None for k in ("train", "train_ref"))
    bound = bound_rate(f, fl, rate, fl_ref, ref, f.profile.get("train")) if rate else ""
    rows.append(["training, 256 px: >= 1500 img/s", f"{rate:.0f} img/s{where}" if rate else "-",
                 verdict(rate, 1500), "" if rate and rate >= 1500 else bound])  # fmt: skip
    ratio = rate / ref if rate and ref else None
    rows.append(["training: >= 5x the reference", f"{ratio:.2f}x (reference best {ref:.0f} img/s)" if ratio else "-",
                 verdict(ratio, 5), "" if ratio and ratio >= 5 else bound])  # fmt: skip
    for size, label, goal in (("1920x1080", "1080p", 500), ("3840x2160", "4K", 120)):
        st = f.stylize(size)
        rate, ref = st.get("rate"), st.get("ref")
        w, h = (int(v) for v in size.split("x"))
        bound = bound_rate(f, f.flops.get("stylize", {}).get(size), rate, f.flops.get("stylize_ref", {}).get(size), ref,
                           f.profile.get("stylize") if size == "1920x1080" else None) if rate else ""  # fmt: skip
        h2d, d2h = f.roofs.get("h2d_gbps"), f.roofs.get("d2h_gbps")
        if rate and h2d and d2h:
            ms = 1000 * w * h * 3 * (1 / h2d + 1 / d2h) / 1e9
            bound += f"; uint8 frames in and out over PCIe: {ms:.2f} ms of the {1000 / rate:.2f} ms per frame"
        where = f" ({st.get('variant')}, batch {st.get('batch'):.0f})" if rate and st.get("batch") else ""
        rows.append([f"stylize {label}: >= {goal} frames/s", f"{rate:.0f}/s{where}" if rate else "-",
                     verdict(rate, goal), "" if rate and rate >= goal else bound])  # fmt: skip
        ratio = rate / ref if rate and ref else None
        rows.append([f"stylize {label}: >= 5x the reference", f"{ratio:.2f}x (reference {ref:.0f}/s)" if ratio else "-",
                     verdict(ratio, 5), "" if ratio and ratio >= 5 else bound])  # fmt: skip
    one_mp = f.stylize("1920x1080").get("rate")
    bulk = f.bulk()
    for b in bulk:
        rate, wait = b["rate"], b["wait"]
        if wait is not None and wait >= 0.10:
            why = f"input-bound: the model waits {100 * wait:.0f}% of the time for decoded photos"
        elif one_mp:
            why = (f"model-bound (waits {100 * (wait or 0):.0f}%): the model alone does ~{one_mp * 1920 * 1080 / 1.0e6:.0f} "
                   f"~1 MP photos/s (from its 1080p rate)")  # fmt: skip
        else:
            why = f"model-bound (waits {100 * (wait or 0):.0f}%)"
        count = f", {b['photos']:.0f} photos" if b.get("photos") else ""
        rows.append([f"bulk ({b['engine']}{count}): >= 1000 photos/s", f"{rate:.1f}/s" if rate else "-",
                     verdict(rate, 1000), "" if rate and rate >= 1000 else why])  # fmt: skip
        rows.append([f"bulk ({b['engine']}): model waits < 10%", f"{100 * wait:.1f}%" if wait is not None else "-",
                     verdict(100 * wait if wait is not None else None, 10, higher=False, unit=""), ""
                     if wait is not None and wait < 0.10 else why])  # fmt: skip
    if not bulk:
        rows.append(["bulk: >= 1000 photos/s, model waits < 10%", "-", "not measured", ""])
    for headers, table_rows, _ in f.tables("codec"):  # bench_pipeline.py --codec-only
        for row in table_rows:
            cells = dict(zip(headers, row, strict=False))
            per_cpu, cpus = (
                num(cells.get("images/s per CPU", "")),
                num(cells.get("CPUs for 1,000 images/s", "")),
            )
            rows.append([f"codec ceiling ({cells.get('JPEG', '?')}, Pillow): CPUs for 1000 photos/s",
                         f"{per_cpu:.0f}/s per CPU" if per_cpu else "-",
                         f"{cpus:.0f} CPUs" if cpus else "-", "decode + encode on the node's CPUs bound a GPU node"])  # fmt: skip
    return rows


def write_summary(out: Path, run: dict[str, Any], elapsed: float) -> str:
    f = Findings(run["records"])
    dry = run["dry"]
    md = [
        "# GPU run"
        + (" (dry run: tiny CPU sizes; the figures only show that every step runs)" if dry else ""),
        "",
        f"- device: {run['device']}",
        f"- {run['ray']}",
        f"- command: `{run['command']}`; commit {run['commit']}; started {run['started']}; "
        f"{elapsed:.0f} s of a {run['budget']:.0f} s budget",
        "",
        "| part | status | seconds | budget | log |",
        "|---|---|---|---|---|",
    ]
    for part in run["parts"]:
        rec = run["records"].get(part)
        if rec is None:
            md.append(f"| {part} | not reached | - | - | - |")
        else:
            md.append(
                f"| {part} | {rec['status']} | {rec['seconds']:.0f} | {rec['budget']:.0f} | {part}.log |"
            )
    md += ["", "## Targets (one H100)", ""]
    md.append("| target | measured | status | what bounds it (where missed) |")
    md.append("|---|---|---|---|")
    md += ["| " + " | ".join(r) + " |" for r in target_rows(f, dry)]
    if f.tests:
        md += ["", "## Tests (`pytest -m gpu`)", ""]
        for t in f.tests:
            md.append(f"- {t.get('run')}: {t.get('line')} (exit {t.get('rc')})")
        cases = [c for t in f.tests for c in t.get("cases", [])]
        if cases:
            md += ["", "| result | test | note |", "|---|---|---|"]
            md += [f"| {s} | `{n}` | {w} |" for s, n, w in cases]
    if f.bench:
        md += ["", "## Benchmarks (paste-ready)", ""]
        headers_seen = False
        for b in f.bench:
            if b.get("bench") == "profile":
                continue
            md.append(f"#### {b['item']}: {b['status']}")
            md.append("")
            if b.get("header") and not headers_seen:
                md += [b["header"], ""]
                headers_seen = True
            elif b.get("header"):
                cmd = [ln for ln in b["header"].splitlines() if ln.startswith("- command")]
                md += [*cmd, ""]
            if b.get("table"):
                md += [*b["table"], ""]
            if b.get("notes"):
                md += [b["notes"], ""]
            if b.get("tail"):
                md += ["```", b["tail"], "```", ""]
    if f.profile or f.roofs:
        md += ["", "## Where the time goes (profile)", ""]
        if f.roofs:
            md.append(
                "- measured roofs: " + ", ".join(f"{k} {v:.1f}" for k, v in f.roofs.items() if k != "kind")
            )
        if f.flops:
            md.append(
                f"- FLOPs per image: training step {f.flops['train'] / 1e9:.0f} G (reference {f.flops['train_ref'] / 1e9:.0f} G) "
                f"at 256 px; stylize 1080p {f.flops['stylize']['1920x1080'] / 1e9:.0f} G, 4K {f.flops['stylize']['3840x2160'] / 1e9:.0f} G"
            )
        for what, p in f.profile.items():
            md.append(f"- {what} ({p.get('path')}, {p.get('size', p.get('side'))}, batch {p.get('batch')}): "
                      f"{p['wall_ms']:.2f} ms per call, kernels {p['kernel_ms']:.2f} ms; {profile_words(p)}")  # fmt: skip
            md.append("  - top: " + "; ".join(f"`{k}` {ms:.3f} ms" for k, ms in p["top"]))
    if f.train:
        md += ["", "## Training the shipped styles (no Ray)", ""]
        md += [
            "| style | steps | of the paper's 40,000 | seconds | img/s | final loss | stopped |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in f.train:
            if "style" not in t:
                md.append(f"| - | - | - | - | - | - | {t.get('status')} |")
                continue
            loss = (t.get("loss") or {}).get("loss")
            md.append(f"| {t['style']} | {t['steps']} | {100 * t['steps'] / PAPER_STEPS:.1f}% | {t['seconds']:.0f} | "
                      f"{t['images_per_s']:.0f} | {loss:.4g} | {t['why']} |" if loss is not None else
                      f"| {t['style']} | {t['steps']} | - | {t['seconds']:.0f} | - | - | {t['why']} |")  # fmt: skip
        md += ["", f"Data: {f.train[0].get('data', '-')}. Models: `models.tar` (<style>/model.safetensors, float16); "
               "install with `mkdir -p runs/gpu-zoo && tar -xf models.tar -C runs/gpu-zoo && "
               "python jobs/ship_models.py --install-only --output runs/gpu-zoo`."]  # fmt: skip
    if f.ray:
        md += ["", "## Ray on the GPU", "", "| step | status | details |", "|---|---|---|"]
        for r in f.ray:
            details = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("kind", "step", "status"))
            md.append(f"| {r.get('step')} | {r.get('status')} | {details} |")
    text = "\n".join(md) + "\n"
    (out / "summary.md").write_text(text)
    return text
