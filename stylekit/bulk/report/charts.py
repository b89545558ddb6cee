"""The throughput plot, as inline SVG (no scripts, no external files)."""

from __future__ import annotations

import html

from stylekit.logs import format_duration

BIN_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
MAX_BINS = 60


def bins(per_second: dict[int, int]) -> tuple[int, list[float]]:
    """(bin width in seconds, images/s in each bin) for at most MAX_BINS bins."""
    if not per_second:
        return 1, []
    span = max(per_second) + 1
    width = next((w for w in BIN_SECONDS if span / w <= MAX_BINS), BIN_SECONDS[-1])
    counts = [0] * (-(-span // width))
    for second, n in per_second.items():
        counts[second // width] += n
    return width, [c / width for c in counts]


def throughput_svg(per_second: dict[int, int], width: int = 720, height: int = 220) -> str:
    """Images stylized per second over the run, one bar per bin."""
    step, rates = bins(per_second)
    if not rates:
        return '<p class="muted">Nothing was stylized in this run.</p>'
    left, right, top, bottom = 56, 12, 14, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(rates) or 1.0
    bar_w = plot_w / len(rates)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="images per second over the run">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#f7f7f7"/>',
    ]
    for i, rate in enumerate(rates):
        h = plot_h * rate / peak
        x, y = left + i * bar_w, top + plot_h - h
        label = f"{format_duration(i * step)}: {rate:.2f} images/s"
        parts.append(
            f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 0.5):.1f}" height="{h:.1f}" '
            f'fill="#3b6fb6"><title>{html.escape(label)}</title></rect>'
        )
    axis = 'font-size="11" fill="#444" font-family="sans-serif"'
    parts += [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#444"/>',
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" {axis}>{peak:.3g}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" {axis}>0</text>',
        f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" '
        f'text-anchor="middle" {axis}>images/s</text>',
        f'<text x="{left}" y="{height - 18}" {axis}>0 s</text>',
        f'<text x="{left + plot_w}" y="{height - 18}" text-anchor="end" {axis}>'
        f"{html.escape(format_duration(len(rates) * step))}</text>",
        f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle" {axis}>'
        f"time since the run started ({step} s bins)</text>",
        "</svg>",
    ]
    return "".join(parts)
