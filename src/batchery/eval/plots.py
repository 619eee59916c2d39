"""The report's plots: matplotlib, imported on first use (Agg backend), drawing small deterministic
SVG that sits inline in the HTML page (a heatmap of compliance rates, Bradley–Terry strengths)."""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

from .numbers import clip01
from .numbers import finite_number as _num

_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)
_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
_SIZE = re.compile(r'<svg\b([^>]*?)\swidth="([\d.]+)pt"\s+height="([\d.]+)pt"')


def _inline_svg(raw: str, prefix: str) -> str:
    """matplotlib's SVG output made fit to sit inside HTML.

    Drops the XML prolog, DOCTYPE and RDF metadata (namespace declarations are not needed
    inline), gives every id a per-figure prefix so several plots can share one page, scopes
    matplotlib's global ``*`` style rule to the plot, and replaces the fixed size by
    ``width=100%`` with the natural width as ``max-width`` so the plot scales with the page.
    """
    svg = _PROLOG.sub("", raw, count=1)
    svg = _METADATA.sub("", svg)
    svg = _XMLNS.sub("", svg)
    ids = sorted(set(re.findall(r'\bid="([^"]+)"', svg)), key=len, reverse=True)
    if ids:
        alternatives = "|".join(re.escape(i) for i in ids)
        svg = re.sub(rf'(\bid="|#)({alternatives})(?=[")])', lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
    svg = svg.replace("*{stroke-linejoin", f"svg.{prefix} *{{stroke-linejoin")

    def size(m: re.Match) -> str:
        return (f'<svg{m.group(1)} class="plot {prefix}" width="100%" '
                f'style="max-width: {m.group(2)}pt; height: auto"')

    return _SIZE.sub(size, svg, count=1).strip()


class Plots:
    """matplotlib, imported on first use, configured for small deterministic SVG output."""

    def __init__(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.matplotlib = matplotlib
        self.rc: dict[RcKeyType, Any] = {
            "svg.fonttype": "none",  # text stays text: searchable, small, drawn in system fonts
            "svg.hashsalt": "batchery-report",  # stable ids
            "text.parse_math": False,  # names with "$" are names, not formulas
            "font.family": "sans-serif",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.edgecolor": "#888888",
            "axes.labelcolor": "#333333",
            "xtick.color": "#444444",
            "ytick.color": "#444444",
        }
        self.count = 0

    def to_svg(self, fig) -> str:
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.08)
        self.plt.close(fig)
        self.count += 1
        return _inline_svg(buf.getvalue(), f"fig{self.count}")

    # -- heatmap ------------------------------------------------------------------------

    def heatmap(self, statements: list[dict], candidates: list[str]) -> str | None:
        import numpy as np

        # Rows grouped by section (in first-seen order), statements in first-seen order inside.
        order: dict[str, list[str]] = {}
        cells: dict[tuple[str, str], float | None] = {}
        seen: set[str] = set()
        for row in statements:
            name, section = str(row.get("statement", "")), str(row.get("section") or "")
            if name not in seen:
                seen.add(name)
                order.setdefault(section, []).append(name)
            cells[(name, str(row.get("candidate", "")))] = _num(row.get("rate"))
        rows = [(section, name) for section, names in order.items() for name in names]
        if not rows or not candidates:
            return None

        values = np.full((len(rows), len(candidates)), np.nan)
        for i, (_, name) in enumerate(rows):
            for j, cand in enumerate(candidates):
                v = cells.get((name, cand))
                if v is not None:
                    values[i, j] = clip01(v)

        def short(s: str, n: int) -> str:
            return s if len(s) <= n else s[: n - 1] + "…"

        with self.matplotlib.rc_context(self.rc):
            row_h, col_w = 0.24, max(0.6, min(1.1, 5.0 / len(candidates)))
            label_w = 0.062 * max(len(short(name, 48)) for _, name in rows) + 0.3
            fig_w = label_w + col_w * len(candidates) + 1.8
            fig_h = row_h * len(rows) + 1.6
            fig, ax = self.plt.subplots(figsize=(fig_w, fig_h))
            cmap = self.matplotlib.colormaps["viridis"]
            masked = np.ma.masked_invalid(values)
            mesh = ax.pcolormesh(masked, cmap=cmap, vmin=0, vmax=1, edgecolors="white", linewidth=0.6)
            ax.set_facecolor("#e6e6e6")
            ax.invert_yaxis()
            ax.set_yticks(np.arange(len(rows)) + 0.5, [short(name, 48) for _, name in rows], fontsize=8)
            ax.set_xticks(np.arange(len(candidates)) + 0.5, [short(c, 24) for c in candidates], fontsize=8.5)
            ax.xaxis.tick_top()
            if max(len(c) for c in candidates) * 0.065 > col_w:
                self.plt.setp(ax.get_xticklabels(), rotation=30, ha="left", rotation_mode="anchor")
            ax.tick_params(length=0)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if len(candidates) <= 12:
                for i in range(len(rows)):
                    for j in range(len(candidates)):
                        v = values[i, j]
                        if np.isnan(v):
                            ax.text(j + 0.5, i + 0.5, "n/a", ha="center", va="center", fontsize=7, color="#555555")
                            continue
                        r, g, b, _ = cmap(v)
                        ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                        ax.text(j + 0.5, i + 0.5, f"{100 * v:.0f}", ha="center", va="center", fontsize=7, color=ink)
            # Section separators and labels on the right when there is more than one section.
            if len(order) > 1:
                start = 0
                for section, names in order.items():
                    end = start + len(names)
                    if start:
                        ax.axhline(start, color="white", linewidth=2.5)
                    ax.text(len(candidates) + 0.15, (start + end) / 2, short(section or "(no section)", 28),
                            ha="left", va="center", fontsize=7.5, color="#444444")
                    start = end
            bar = fig.colorbar(mesh, ax=ax, orientation="horizontal", location="bottom",
                               fraction=max(0.02, 0.35 / fig_h), pad=max(0.01, 0.12 / fig_h), aspect=40, shrink=0.6)
            bar.set_label("compliance rate (%) — grey: not measured", fontsize=8)
            bar.set_ticks([0, 0.25, 0.5, 0.75, 1], labels=["0", "25", "50", "75", "100"])
            bar.ax.tick_params(labelsize=7.5)
            bar.outline.set_visible(False)
            if bar.solids is not None:
                bar.solids.set_rasterized(False)  # vector, not an embedded PNG
            return self.to_svg(fig)

    # -- Bradley–Terry ----------------------------------------------------------------------

    def strengths(self, items: list[dict]) -> str | None:
        read = [(str(r.get("item", "")), _num(r.get("strength")), _num(r.get("lo")), _num(r.get("hi")))
                for r in items]
        points = [(name, s, lo, hi) for name, s, lo, hi in read if s is not None]
        if not points:
            return None
        with self.matplotlib.rc_context(self.rc):
            fig, ax = self.plt.subplots(figsize=(6.4, 0.34 * len(points) + 1.0))
            for i, (_, s, lo, hi) in enumerate(points):
                if lo is not None and hi is not None:
                    ax.plot([lo, hi], [i, i], color="#4b6cb7", linewidth=1.6, solid_capstyle="butt")
                ax.plot([s], [i], "o", color="#1f2d5c", markersize=5)
            ax.set_yticks(range(len(points)), [n if len(n) <= 32 else n[:31] + "…" for n, *_ in points])
            ax.set_ylim(len(points) - 0.5, -0.5)
            ax.grid(axis="x", color="#dddddd", linewidth=0.6)
            ax.set_axisbelow(True)
            ax.tick_params(axis="y", length=0)
            ax.spines["left"].set_visible(False)
            ax.set_xlabel("Bradley–Terry strength (dot) with 95% CI (line)")
            return self.to_svg(fig)
