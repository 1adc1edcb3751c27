"""Figures: each takes a tidy DataFrame and a matplotlib ``Axes``, draws, and returns the ``Axes``.

The frames are those of :mod:`analysis.load` (or any frame with the same columns), so a figure can be
drawn for one run, for several runs concatenated, or for a sweep:

===================  =========================================  ===================================
figure               frame                                      reads as
===================  =========================================  ===================================
``sweep_heatmap``    sweep rows (factors, seed, metrics)        a metric's mean over seeds per cell
                                                                of two factors (quorum x grace)
``sweep_lines``      sweep rows                                 the mean over seeds against one
                                                                factor, one line per level of
                                                                another, band = spread over seeds
``goodput_vs``       sweep rows or summaries                    goodput against a numeric factor
                                                                (chips, MTBF), one line per policy
``timeline``         timeline (+ events)                        what each learner group did when;
                                                                red triangles are failures
                                                                (hollow: absorbed)
``chip_time_bars``   chip-time ledger in long form              where the chip-seconds went
``metric_bars``      summaries                                  one metric per run, with spread
``loss_curves``      series (``loss``)                          surrogate eval loss against
                                                                simulated hours or tokens
``link_utilisation`` series (``link_utilisation``)              WAN link use over time
``loss_vs_goodput``  sweep rows (with ``final_loss``)           the quality / goodput trade-off:
                                                                a dot per seed, a ring per setting
``loss_per_setting`` series + sweep rows                        loss against tokens, every seed of
                                                                every setting (a colour per setting)
===================  =========================================  ===================================

A loss whose values span more than :data:`LOG_SPAN` (a setting that diverges to 10^4 next to ones
that settle at 0.3) is drawn on a log axis, so the diverging curve does not flatten the others into
the floor and the point where it leaves them stays visible.

Nothing here touches ``pyplot`` or a global backend: :func:`new_axes` builds a ``Figure`` on the Agg
canvas, so figures render the same in a test, a report or a headless CI; a notebook can pass the
``Axes`` of ``plt.subplots()`` instead.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from sim.quantities import format_metric

from .labels import (
    BUCKET_COLOURS,
    BUCKET_ORDER,
    FAILURE_COLOUR,
    PHASE_COLOURS,
    PHASE_ORDER,
    factor_axis,
    level_text,
    metric_quantity,
    ordered_levels,
)

HOURS = 3600.0
TIME_LABEL = "simulated time (h)"
_HIGHER_IS_BETTER = ("goodput", "uptime", "tokens", "steps", "chip_time_fraction.useful", "chip_time.useful")
LOSS_METRICS = ("final_loss",)
LOG_SPAN = 100.0
"""A loss whose positive values span more than this factor is drawn on a log scale."""
LOSS_LABEL = "surrogate eval loss (nats)"


def new_axes(width: float = 8.0, height: float = 4.5) -> tuple[Figure, Axes]:
    """A figure with one Axes on the Agg canvas (no pyplot state, safe in any thread or process)."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of replications that finished (a sweep records crashed ones with their error)."""
    keep = pd.Series(True, index=df.index)
    if "error" in df:
        keep &= df["error"].isna() | (df["error"].astype(str).str.strip() == "")
    if "status" in df:
        keep &= ~df["status"].astype(str).str.lower().isin(["error", "failed", "crashed"])
    return df[keep]


def _empty(ax: Axes, message: str) -> Axes:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="0.4")
    return ax


def _first_replication(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Rows of the first replication of each run (series and timelines are not averaged)."""
    key = next((c for c in ("replication", "index") if c in df), None)
    if key is None or df.empty:
        return df, ""
    first = df.groupby("run", sort=False)[key].transform("min") if "run" in df else df[key].min()
    rows = df[df[key] == first]
    which = f"{key} {int(rows[key].iloc[0])}" if rows[key].nunique() == 1 else f"first {key} of each run"
    return rows, which


def _cell_text(value: float, metric: str) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if metric_quantity(metric).unit.startswith("fraction") else f"{value:.3g}"


def spans_decades(values) -> bool:
    """Whether positive ``values`` span more than :data:`LOG_SPAN` (a loss that diverged)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bool(v.size) and v.min() > 0 and v.max() / v.min() > LOG_SPAN


def _token_axis(axis) -> None:
    """Token counts with the suffixes of every table (``120B``, ``2.4T``), not a ``1e11`` offset."""
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: format_metric("tokens", value)))


def _log_loss_axis(ax: Axes, values, label: str = LOSS_LABEL) -> None:
    """A log y axis when the loss spans decades, said in the axis label."""
    if spans_decades(values):
        ax.set_yscale("log")
        label = label[:-1] + ", log scale)" if label.endswith(")") else label + " (log scale)"
    ax.set_ylabel(label)


def setting_styles(n: int) -> list[tuple]:
    """``n`` distinguishable (colour, line style, marker) triples: tab10 up to 10, tab20 up to 20, then
    the tab20 colours again with other dashes and markers, so no two settings of one figure look alike."""
    size = 10 if n <= 10 else 20
    palette = colormaps["tab10" if size == 10 else "tab20"]
    return [(palette(k % size), _DASHES[(k // size) % len(_DASHES)], _MARKERS[(k // size) % len(_MARKERS)])
            for k in range(n)]


def _setting_legend(ax: Axes, title: str, entries: int) -> None:
    """The legend of one entry per setting: inside the axes for a few, beside them (in columns) for
    many, so it never covers the data or runs off the figure."""
    title = title.replace("; ", ";\n")
    if entries <= 10:
        ax.legend(title=title, fontsize=7, title_fontsize=8)
    else:
        ax.legend(title=title, fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False, ncol=1 if entries <= 20 else 2)


# --------------------------------------------------------------------------------------------- sweeps


def heatmap_range(df: pd.DataFrame, x: str, y: str, metric: str, by: list[str] = ()) -> tuple[float, float] | None:
    """The lowest and highest cell (mean over seeds, in display units) over every panel of ``by``:
    the one colour scale of a metric's heatmaps, so a colour means one value in every panel."""
    data = ok_rows(df).dropna(subset=[metric])
    if data.empty:
        return None
    means = data.groupby([*by, y, x], sort=False, dropna=False)[metric].mean() * metric_quantity(metric).scale
    finite = means[np.isfinite(means)]
    return (float(finite.min()), float(finite.max())) if len(finite) else None


def sweep_heatmap(df: pd.DataFrame, ax: Axes, x: str, y: str, metric: str = "goodput", cmap: str | None = None,
                  where: str | None = None, limits: tuple[float, float] | None = None) -> Axes:
    """Mean of ``metric`` over seeds for each (x, y) pair of factor levels, annotated in each cell.

    One panel of several (a slice at a setting of the other factors) says which in its title
    (``where``, e.g. ``training.checkpoint.write_time=30s``) and takes the colour scale shared by
    the panels (``limits``, from :func:`heatmap_range`), so the same colour is the same value in each.
    """
    data = ok_rows(df).dropna(subset=[metric])
    q = metric_quantity(metric)
    if data.empty:
        return _empty(ax, f"no finished replication with {metric}")
    xs, ys = ordered_levels(data[x]), ordered_levels(data[y])
    grid = np.full((len(ys), len(xs)), np.nan)
    counts = np.zeros_like(grid, dtype=int)
    for (yv, xv), values in data.groupby([y, x], sort=False)[metric]:
        grid[ys.index(yv), xs.index(xv)] = values.mean() * q.scale
        counts[ys.index(yv), xs.index(xv)] = len(values)
    better_high = metric in _HIGHER_IS_BETTER
    finite = grid[np.isfinite(grid)]
    shared = limits is not None and limits[0] < limits[1]
    if finite.size and finite.min() == finite.max() and not shared:
        return _uniform_heatmap(ax, grid, counts, xs, ys, x, y, metric, where)
    low, high = limits if shared else (None, None)
    # a diverged loss beside settled ones: colours on a log scale, or every other cell is one colour
    span = [low, high] if shared else grid
    norm = LogNorm(low, high) if metric in LOSS_METRICS and spans_decades(span) else None
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap=cmap or ("viridis" if better_high else "viridis_r"),
                      norm=norm, **({"vmin": low, "vmax": high} if shared and norm is None else {}))
    for (row, col), value in np.ndenumerate(grid):
        shade = image.cmap(image.norm(value)) if not math.isnan(value) else (1, 1, 1, 1)
        light = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] > 0.5
        ax.text(col, row, _cell_text(value, metric), ha="center", va="center", fontsize=9, color="black" if light else "white")
    _heatmap_axes(ax, xs, ys, x, y)
    colorbar = ax.figure.colorbar(image, ax=ax)
    colorbar.set_label(q.label)
    ax.set_title(f"{q.name}: mean over {_seeds_text(counts)} seed(s) per cell" + (f"\nat {where}" if where else ""))
    return ax


def _uniform_heatmap(ax: Axes, grid, counts, xs, ys, x: str, y: str, metric: str, where: str | None = None) -> Axes:
    """Every cell has the same mean: one neutral colour and the value in the title, not a colour bar
    around it (matplotlib spans a constant 0 as -0.1 to 0.1, a negative downtime nobody measured)."""
    q = metric_quantity(metric)
    value = grid[np.isfinite(grid)][0]
    ax.imshow(np.where(np.isfinite(grid), 0.0, np.nan), origin="lower", aspect="auto", cmap="Greys", vmin=-1, vmax=3)
    for (row, col), cell in np.ndenumerate(grid):
        ax.text(col, row, _cell_text(cell, metric), ha="center", va="center", fontsize=9, color="black")
    _heatmap_axes(ax, xs, ys, x, y)
    ax.set_title(f"{q.name}: mean over {_seeds_text(counts)} seed(s) per cell" + (f" at {where}" if where else "")
                 + f"\nevery cell {_cell_text(value, metric)}{q.suffix}")
    return ax


def _heatmap_axes(ax: Axes, xs, ys, x: str, y: str) -> None:
    x_axis, y_axis = factor_axis(pd.Series(xs, name=x)), factor_axis(pd.Series(ys, name=y))
    ax.set_xticks(range(len(xs)), [level_text(v, x_axis, n) for v, n in zip(xs, _numbers(x_axis, xs))])
    ax.set_yticks(range(len(ys)), [level_text(v, y_axis, n) for v, n in zip(ys, _numbers(y_axis, ys))])
    ax.set_xlabel(x_axis.label)
    ax.set_ylabel(y_axis.label)


def _seeds_text(counts) -> str:
    filled = counts[counts > 0]
    return f"{filled.min()}" if filled.min() == filled.max() else f"{filled.min()}-{filled.max()}"


def _numbers(axis, levels) -> list:
    return list(axis.numbers) if axis.numbers is not None else [None] * len(levels)


_MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
_DASHES = ["-", "--", ":", "-."]


def sweep_lines(
    df: pd.DataFrame, ax: Axes, x: str, metric: str = "goodput", hue: str | None = None, spread: str = "minmax"
) -> Axes:
    """Mean of ``metric`` over seeds against factor ``x``, one line per ``hue`` level, with a band.

    ``spread`` is ``"minmax"`` (band from the lowest to the highest seed) or ``"std"`` (mean +- one
    standard deviation). A numeric factor (``16384``, ``"10s"``, ``"2Gbps"``) gets a numeric axis.
    """
    data = ok_rows(df).dropna(subset=[metric])
    q = metric_quantity(metric)
    if data.empty:
        return _empty(ax, f"no finished replication with {metric}")
    levels = ordered_levels(data[x])
    axis = factor_axis(pd.Series(levels, name=x))
    numeric = axis.numbers is not None and bool(np.isfinite(axis.numbers).all())  # "inf" has no place
    positions = dict(zip(levels, axis.numbers if numeric else range(len(levels))))
    hues = ordered_levels(data[hue]) if hue else [None]
    for k, level in enumerate(hues):
        sub = data if level is None else data[data[hue] == level]
        stats = sub.groupby(x, sort=False)[metric].agg(["mean", "min", "max", "std"])
        order = [v for v in levels if v in stats.index]
        if not order:
            continue
        stats = stats.loc[order] * q.scale
        xs = [positions[v] for v in order]
        if spread == "std":
            std = stats["std"].fillna(0.0)
            low, high = stats["mean"] - std, stats["mean"] + std
            if q.unit.startswith("fraction"):  # a share of 1.03 was never measured: the band stops at 0 and 1
                low, high = low.clip(lower=0.0), high.clip(upper=1.0)
        else:
            low, high = stats["min"], stats["max"]
        # each level its own hollow marker, smaller and differently dashed for each next one, so levels
        # with the same means stay visible (ringed, not hidden under one another)
        (line,) = ax.plot(xs, stats["mean"], marker=_MARKERS[k % len(_MARKERS)], markersize=max(12 - 3 * k, 4),
                          linewidth=max(3.0 - 0.8 * k, 1.0), markerfacecolor="none", linestyle=_DASHES[k % len(_DASHES)],
                          label=None if level is None else str(level))
        ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    if not numeric:
        ax.set_xticks(range(len(levels)), [level_text(v, axis, n) for v, n in zip(levels, _numbers(axis, levels))])
    else:
        finite = [p for p in positions.values() if math.isfinite(p) and p > 0]
        if finite and len(finite) == len(positions) and max(finite) / min(finite) >= 100:
            ax.set_xscale("log")  # chip counts and MTBFs span decades
        elif all(float(p).is_integer() for p in positions.values()):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # a quorum of 1.5 learners does not exist
        if axis.written:  # a tick per level, labelled as the user wrote it (50000h), at its place on the axis
            ax.set_xticks(list(positions.values()), [str(v) for v in positions])
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(axis.label)
    if metric in LOSS_METRICS:
        _log_loss_axis(ax, data[metric] * q.scale, q.label)
    else:
        ax.set_ylabel(q.label)
    band = "min-max" if spread != "std" else "+-1 std"
    ax.set_title(f"{q.name} vs {x}\n(mean over seeds, band: {band})")
    if hue:
        ax.legend(title=hue, fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def goodput_vs(df: pd.DataFrame, ax: Axes, x: str, metric: str = "goodput", hue: str | None = None) -> Axes:
    """``metric`` (goodput by default) against a numeric factor such as chips or MTBF, per policy."""
    if hue is None:
        hue = next((c for c in ("training.policy", "policy") if c in df and df[c].notna().any()), None)
    sweep_lines(df, ax, x, metric, hue)
    if hue:
        ax.set_title(f"{metric_quantity(metric).name} vs {x} per policy\n(mean over seeds, band: min-max)")
    return ax


# ----------------------------------------------------------------------------------------- one run


def _fault_windows(events: pd.DataFrame) -> list[tuple[float, float, str]]:
    """(start_s, end_s, group) of outages, partitions, degradations and slowdowns from their events.

    ``group`` is the learner group the target belongs to, or "" (a WAN link, the synchronizer).
    """
    windows, open_at = [], {}
    groups = events["group"] if "group" in events else pd.Series("", index=events.index)
    for row, group in zip(events.itertuples(), groups):
        if row.kind.endswith("_start"):
            open_at.setdefault((row.kind[:-6], row.fault, row.target), []).append((row.time_s, group))
        elif row.kind.endswith("_end"):
            starts = open_at.get((row.kind[:-4], row.fault, row.target))
            if starts:
                start, group = starts.pop(0)
                windows.append((start, row.time_s, group))
    windows += [(start, math.inf, group) for starts in open_at.values() for start, group in starts]
    return windows


def _mark_failures(ax: Axes, hits: pd.DataFrame, groups: list, height: float, hollow: bool) -> None:
    """Triangles on the rows of the groups hit (a vertical line when the target is no group);
    ``hollow`` for arrivals on a group already stopped (absorbed: nothing more was lost)."""
    on_row = hits["group"].isin(groups) if "group" in hits else pd.Series(False, index=hits.index)
    ys = [groups.index(g) - height / 2 for g in hits.loc[on_row, "group"]]  # top edge (y is inverted)
    if ys or not hollow:
        if hollow:
            style = {"color": "none", "markeredgecolor": FAILURE_COLOUR, "markeredgewidth": 1.0}
        else:
            style = {"color": FAILURE_COLOUR, "markeredgecolor": "white", "markeredgewidth": 0.5}
        ax.plot(hits.loc[on_row, "time_s"] / HOURS, ys, linestyle="none", marker="v", markersize=7, zorder=3, **style)
    for t in hits.loc[~on_row, "time_s"]:
        ax.axvline(t / HOURS, color=FAILURE_COLOUR, linewidth=0.8, alpha=0.7, linestyle=":" if hollow else "-")


MIN_EXPOSED = 0.0005
"""An exposed-communication share of running time below this (0.0 % at one decimal) is not drawn."""


def drawn_phases(rows: pd.DataFrame) -> pd.Series:
    """The phase each timeline row is drawn as: ``down`` where the group holds no active chip and
    has chips down (an island outage reads ``blocked`` or ``detect`` in the recorder, but the ledger
    books every chip-second of it as down), else the recorded phase.

    A ``detect`` row records 0 active chips whatever the group holds (the ledger books the chips that
    are not down as recovery), so it is down only when its down chips are all the group has (the most
    ``active_chips + down_chips`` of any of its rows).
    """
    if rows.empty or not {"active_chips", "down_chips"} <= set(rows):
        return rows["phase"] if "phase" in rows else pd.Series(dtype=str)
    active, down = rows["active_chips"].fillna(0), rows["down_chips"].fillna(0)
    size = (active + down).groupby(rows["group"]).transform("max")
    is_down = (down > 0) & (active == 0) & ((rows["phase"] != "detect") | (down >= size))
    return rows["phase"].where(~is_down, "down")


UNSEEN_SPAN = 1 / 2000
"""A span shorter than this share of the time axis is under half a pixel wide at the figures' sizes."""
DENSE_SPANS = 200
"""More such spans than this blend into their neighbours' colour instead of showing as thin lines."""


def unseen_shares(rows: pd.DataFrame, end_s: float) -> dict[str, str]:
    """Per group, the phases other than running that take at least 1 % of the run but mostly in many
    spans too short to draw (:data:`UNSEEN_SPAN`, :data:`DENSE_SPANS`): e.g. a learner blocked 15 % of
    six hours in 0.6 s waits, which would read as running. A few short spans (checkpoint writes, one
    reload per failure) still show as thin lines and are not named. The text is the phase and its
    share of the time axis."""
    out = {}
    if end_s <= 0:
        return out
    lengths = rows["end_s"] - rows["start_s"]
    for group, sel in lengths.groupby(rows["group"], sort=False):
        notes = []
        for phase, spans in sel.groupby(rows.loc[sel.index, "phase"], sort=False):
            total, short = spans.sum(), spans[spans < UNSEEN_SPAN * end_s]
            if phase != "running" and total >= 0.01 * end_s and len(short) > DENSE_SPANS and short.sum() > total / 2:
                notes.append(f"{phase} {total / end_s:.0%}")
        if notes:
            out[group] = ", ".join(notes)
    return out


def timeline(df: pd.DataFrame, ax: Axes, events: pd.DataFrame | None = None, exposed_share: float = 0.0) -> Axes:
    """Learner-group states over simulated time (one bar row per group, a colour per phase).

    Failures from ``events`` are red triangles on the row of the group they hit (a vertical line
    when the target is no group), hollow when the group was already stopped (absorbed); outage and
    degradation windows are shaded. Only the first replication of the first run in ``df`` is drawn.
    A group with no active chip and chips down is drawn down (black), as the ledger books it
    (:func:`drawn_phases`). A phase spent mostly in spans too short to draw (:func:`unseen_shares`)
    is named with its share of the time under the group's name.

    ``exposed_share`` is the part of ``running`` chip-time that waits on communication rather than
    computing (:func:`analysis.load.exposed_share`): running bars are then split across their height,
    green for compute and hatched grey for the exposed share, so a lockstep job whose step is mostly
    WAN all-reduce never reads as green from end to end.
    """
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("learner group")
    rows, which = _first_replication(df)
    if "run" in rows and rows["run"].nunique() > 1:
        rows = rows[rows["run"] == rows["run"].iloc[0]]
    if rows.empty:
        return _empty(ax, "no timeline recorded")
    rows = rows.assign(phase=drawn_phases(rows))
    groups = list(dict.fromkeys(rows["group"]))
    height = 0.7
    # a legend entry per style drawn: a phase whose spans all last 0 s colours nothing
    lasting = set(rows.loc[rows["end_s"] > rows["start_s"], "phase"])
    phases = [p for p in PHASE_ORDER if p in lasting] + sorted(lasting - set(PHASE_ORDER))
    extra = iter(["#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"])
    colours = {p: PHASE_COLOURS.get(p) or next(extra, "#7f7f7f") for p in phases}
    labels = {"blocked": "blocked (network, barrier, quorum)"}
    share = min(max(float(exposed_share), 0.0), 1.0) if "running" in phases else 0.0
    if share < MIN_EXPOSED:
        share = 0.0  # a hatch under a pixel high ("0.0 %" of running time) is not drawn, nor named
    for (group, phase), sel in rows[rows["phase"].isin(lasting)].groupby(["group", "phase"], sort=False):
        spans = list(zip(sel["start_s"] / HOURS, (sel["end_s"] - sel["start_s"]) / HOURS))
        top = groups.index(group) - height / 2  # the y axis is inverted: top is the smaller y
        if phase == "running" and share > 0:
            # compute at the bottom of the bar, exposed communication above it, in proportion
            ax.broken_barh(spans, (top + height * share, height * (1 - share)), facecolors=colours[phase], linewidth=0)
            ax.broken_barh(spans, (top, height * share), facecolors=PHASE_COLOURS["blocked"], edgecolor="#636363",
                           hatch="////", linewidth=0)
        else:
            ax.broken_barh(spans, (top, height), facecolors=colours[phase], linewidth=0)
    handles = [Patch(facecolor=colours[p], label=labels.get(p, "running: compute" if p == "running" and share else p))
               for p in phases]
    if share > 0:
        handles.insert(phases.index("running") + 1, Patch(
            facecolor=PHASE_COLOURS["blocked"], edgecolor="#636363", hatch="////",
            label=f"running: exposed comm.\n({share:.1%} of running chip-time)"))
    end_h = rows["end_s"].max() / HOURS
    failures = absorbed = learner_hits = 0
    if events is not None and len(events):
        ev = events
        for column in ("run", "replication", "index"):
            if column in ev and column in rows:
                ev = ev[ev[column] == rows[column].iloc[0]]
        windows = _fault_windows(ev.sort_values("time_s", kind="stable"))
        for start, end, group in windows:
            end = min(end / HOURS, end_h)
            if group in groups:  # shade the row of the group hit; links and the syncer span all rows
                ax.add_patch(Rectangle((start / HOURS, groups.index(group) - 0.5), end - start / HOURS, 1.0,
                                       color=FAILURE_COLOUR, alpha=0.12, linewidth=0))
            else:
                ax.axvspan(start / HOURS, end, color=FAILURE_COLOUR, alpha=0.08, linewidth=0)
        if any(start / HOURS < min(end / HOURS, end_h) for start, end, _ in windows):  # one drawn inside the run
            handles.append(Patch(facecolor=FAILURE_COLOUR, alpha=0.15, label="fault window"))
        hits, spared = ev[ev["kind"] == "failure"], ev[ev["kind"] == "absorbed"]
        # every arrival, as the summary counts them: a fault that hits several learners at once (a region
        # outage) is one failure with a row, and a triangle, per learner hit
        both = pd.concat([hits, spared])
        failures, absorbed, learner_hits = len(both.drop_duplicates(["time_s", "fault"])), len(spared), len(both)
        _mark_failures(ax, hits, groups, height, hollow=False)
        _mark_failures(ax, spared, groups, height, hollow=True)
        if len(hits):
            handles.append(Line2D([], [], linestyle="none", marker="v", color=FAILURE_COLOUR, label="failure"))
        if absorbed:
            handles.append(Line2D([], [], linestyle="none", marker="v", color="none", markeredgecolor=FAILURE_COLOUR,
                                  label="failure while stopped\n(absorbed)"))
    unseen = unseen_shares(rows, rows["end_s"].max())
    ax.set_yticks(range(len(groups)), [f"{g}\n{unseen[g]} (short spans)" if g in unseen else g for g in groups])
    ax.set_ylim(len(groups) - 0.4, -0.75)  # first group at the top, room above it for markers
    ax.set_xlim(0, end_h)
    run = f"{rows['run'].iloc[0]}, " if "run" in rows else ""
    count = f"{failures} failure{'s' if failures != 1 else ''}"
    if learner_hits != failures:
        count += f" ({learner_hits} learner hits" + (f", {absorbed} absorbed)" if absorbed else ")")
    elif absorbed:
        count += f", {absorbed} absorbed"
    title = f"Learner states ({run}{which}; {count})" if which else f"Learner states ({count})"
    ax.set_title("\n".join(textwrap.wrap(title, 90)))  # a long run label wraps instead of running off the figure
    # beside the axes, not below: constrained layout makes room for it at any figure height
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    return ax


TICK_LINE = 28
"""A bar's tick label wraps at this many characters, on at most :data:`TICK_LINES` lines."""
TICK_LINES = 3


def _bar_ticks(ax: Axes, positions, labels) -> None:
    """Bar labels wrapped onto short lines (``replications=2, policy=sync_dp,`` / ``on_failure=restart``)
    and cut with an ellipsis past three, so a long label never squeezes the axes to nothing or runs
    off the figure; turned when wrapped labels would still overlap their neighbours."""
    texts = [textwrap.fill(str(v), TICK_LINE, max_lines=TICK_LINES, placeholder=" …") for v in labels]
    widest = max((len(line) for t in texts for line in t.split("\n")), default=0)
    turned = widest > 12 and widest * len(texts) > 90
    ax.set_xticks(positions, texts, rotation=30 if turned else 0, ha="right" if turned else "center",
                  rotation_mode="anchor" if turned else "default")


def chip_time_bars(df: pd.DataFrame, ax: Axes, by: str = "run") -> Axes:
    """Stacked bars of the chip-time ledger (share of provisioned chip-seconds) per ``by`` value.

    ``df`` is the ledger in long form (``bucket`` and ``fraction`` columns, one row per replication
    and bucket); replications are averaged. The green share at the bottom is the goodput.
    """
    data = df.dropna(subset=["fraction"]) if "fraction" in df else df.iloc[0:0]
    ax.set_ylabel("share of provisioned chip-time (%)")
    ax.set_xlabel(by)
    if data.empty:
        return _empty(ax, "no chip-time ledger")
    shares = data.groupby([by, "bucket"], sort=False)["fraction"].mean().unstack("bucket").fillna(0.0) * 100
    labels = list(dict.fromkeys(data[by]))
    shares = shares.loc[labels]
    buckets = [b for b in BUCKET_ORDER if b in shares and shares[b].sum() > 0]
    buckets += sorted(b for b in shares if b not in BUCKET_ORDER and shares[b].sum() > 0)
    positions = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    for bucket in buckets:
        ax.bar(positions, shares[bucket].to_numpy(), 0.6, bottom=bottom, label=bucket, color=BUCKET_COLOURS.get(bucket, "#7f7f7f"))
        bottom += shares[bucket].to_numpy()
    _bar_ticks(ax, positions, labels)
    ax.set_ylim(0, 100)
    per_bar = int(data.groupby([by, "bucket"], sort=False)["fraction"].size().max())
    # a bar of one replication is that replication's ledger; only several per bar are averaged
    ax.set_title("Chip-time ledger, " + (f"mean over {_replications_text(data, by)} per bar" if per_bar > 1
                                          else "one replication per bar"))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="bucket")
    if "useful" in shares:
        _useful_labels(ax, positions, shares["useful"].to_numpy(), 0.6)
    return ax


def _replications_text(data: pd.DataFrame, by: str) -> str:
    key = next((c for c in ("replication", "index", "seed") if c in data), None)
    if key is None:
        return "replications"
    counts = data.groupby(by, sort=False)[key].nunique()
    low, high = int(counts.min()), int(counts.max())
    return f"{low} replications" if low == high else f"{low}-{high} replications"


def _useful_labels(ax: Axes, positions, useful, width: float) -> None:
    """The goodput share written inside each green bar: across it where it fits, up it where only
    that fits, left out where neither does (many bars side by side), never cut to '2.9' for 82.9 %."""
    if not len(useful):
        return
    texts = []
    for pos, share in zip(positions, useful):
        if share > 0:
            text = ax.text(pos, share / 2, f"{share:.1f}%", ha="center", va="center", color="white", fontsize=8)
            text.set_in_layout(False)
            texts.append((text, share))
    if not texts:
        return
    figure = ax.figure
    figure.draw_without_rendering()  # the layout settles bar sizes in pixels
    renderer = figure.canvas.get_renderer()
    to_px = ax.transData.transform
    bar_w = abs(to_px((width, 0))[0] - to_px((0, 0))[0])
    for text, share in texts:
        bar_h = abs(to_px((0, share))[1] - to_px((0, 0))[1])
        box = text.get_window_extent(renderer)
        if box.width <= bar_w * 0.92 and box.height <= bar_h * 0.9:
            continue
        if box.height <= bar_w * 0.92 and box.width <= bar_h * 0.9:
            text.set_rotation(90)  # narrow bars: the label runs up the bar
            continue
        text.remove()


def metric_bars(df: pd.DataFrame, ax: Axes, metric: str = "goodput", by: str = "run") -> Axes:
    """One bar per ``by`` value: the mean of ``metric`` over replications, whiskers min to max."""
    q = metric_quantity(metric)
    ax.set_ylabel(q.label)
    ax.set_xlabel(by)
    data = ok_rows(df).dropna(subset=[metric]) if metric in df else df.iloc[0:0]
    if data.empty:
        return _empty(ax, f"no values of {metric}")
    labels = list(dict.fromkeys(data[by]))
    stats = data.groupby(by, sort=False)[metric].agg(["mean", "min", "max"]).loc[labels] * q.scale
    positions = np.arange(len(labels))
    errors = np.vstack([stats["mean"] - stats["min"], stats["max"] - stats["mean"]])
    ax.bar(positions, stats["mean"], 0.6, yerr=errors, capsize=4, color="#4c72b0", label="mean")
    for pos, label in zip(positions, labels):
        values = data.loc[data[by] == label, metric] * q.scale
        ax.plot([pos] * len(values), values, linestyle="none", marker=".", color="black", alpha=0.6)
    _bar_ticks(ax, positions, labels)
    ax.set_title(f"{q.name} per {by} (bar: mean, whiskers: min-max, dots: replications)")
    ax.grid(axis="y", alpha=0.3)
    return ax


# --------------------------------------------------------------------------------------------- series


MARKED_POINTS = 50
"""A series line of at most this many points marks each one (a single evaluation is no line)."""


def _series_lines(data: pd.DataFrame, ax: Axes, xcol: str, xscale: float, yscale: float, steps: bool,
                  marked: bool = False) -> int:
    multi = "run" in data and data["run"].nunique() > 1
    lines = 0
    by = ["run", "key"] if "run" in data else ["key"]
    for names, sub in data.groupby(by, sort=False):
        names = names if isinstance(names, tuple) else (names,)
        sub = sub.sort_values("time_s").dropna(subset=[xcol])
        if sub.empty:
            continue
        label = f"{names[0]}: {names[-1]}" if multi else str(names[-1])
        marker = "o" if marked and len(sub) <= MARKED_POINTS else None
        ax.plot(sub[xcol] * xscale, sub["value"] * yscale, label=label, drawstyle="steps-post" if steps else "default",
                marker=marker, markersize=4)
        lines += 1
    return lines


UNMERGED_NOTE = "no round merged yet: the loss is the initial model's"


def loss_curves(df: pd.DataFrame, ax: Axes, x: str = "time", unmerged=()) -> Axes:
    """Surrogate eval loss (``series == "loss"``) against simulated hours (``x="time"``) or tokens.

    Each evaluation is a marker as well (a short run evaluates once, and one point draws no line).
    ``unmerged`` names the runs whose surrogate merged no round (``surrogate_merges == 0``): their
    loss is the initial model's, which the figure says.
    """
    tokens = x == "tokens"
    ax.set_xlabel("tokens (count)" if tokens else TIME_LABEL)
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title(f"Surrogate loss vs {'tokens' if tokens else 'wall-clock (simulated)'}")
    data = df[df["series"] == "loss"] if "series" in df else df.iloc[0:0]
    data, _ = _first_replication(data)
    xcol, xscale = ("tokens", 1.0) if tokens else ("time_s", 1 / HOURS)
    if data.empty or not _series_lines(data, ax, xcol, xscale, 1.0, False, marked=True):
        return _empty(ax, "no surrogate loss recorded")
    drawn = list(dict.fromkeys(data["run"])) if "run" in data else []
    stale = [r for r in drawn if r in set(unmerged)]
    if stale:
        whose = "" if len(stale) == len(drawn) else f"{', '.join(map(str, stale))}: "
        ax.text(0.5, 0.97, whose + UNMERGED_NOTE, transform=ax.transAxes, ha="center", va="top", fontsize=9,
                color="0.3", bbox={"facecolor": "white", "edgecolor": "0.8", "alpha": 0.9})
    if tokens:
        _token_axis(ax.xaxis)
    _log_loss_axis(ax, data["value"])
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def loss_vs_goodput(rows: pd.DataFrame, ax: Axes, setting: str) -> Axes:
    """Final surrogate loss against goodput: one dot per replication, one ring (the mean over seeds)
    per level of ``setting``, so the trade-off a user chooses on reads off one figure."""
    data = ok_rows(rows).dropna(subset=["goodput", "final_loss"])
    if data.empty:
        return _empty(ax, "no finished replication with a surrogate loss")
    levels = ordered_levels(data[setting])
    for level, (colour, _, marker) in zip(levels, setting_styles(len(levels))):
        sub = data[data[setting] == level]
        ax.plot(sub["goodput"], sub["final_loss"], marker, alpha=0.45, markersize=4, color=colour)
        ax.plot(sub["goodput"].mean(), sub["final_loss"].mean(), marker, markersize=11, markerfacecolor="none",
                markeredgewidth=2, color=colour, label=str(level))
    ax.set_xlabel(metric_quantity("goodput").label)
    _log_loss_axis(ax, data["final_loss"], metric_quantity("final_loss").label)
    ax.set_title("Final surrogate loss vs goodput\n(dots: seeds; rings: mean over seeds)")
    _setting_legend(ax, setting, len(levels))
    ax.grid(alpha=0.3)
    return ax


def loss_per_setting(series: pd.DataFrame, rows: pd.DataFrame, ax: Axes, setting: str, key: str = "index") -> Axes:
    """Surrogate eval loss against tokens for every finished replication, one colour (and legend
    entry) per level of ``setting``: curves are not averaged, and no seed is left out, so a seed that
    diverges shows beside the ones that did not."""
    loss = series[series["series"] == "loss"] if "series" in series else series.iloc[0:0]
    ok = ok_rows(rows)
    if loss.empty or ok.empty:
        return _empty(ax, "no surrogate loss recorded")
    levels = ordered_levels(ok[setting])
    drawn, values = 0, []
    for level, (colour, dashes, _) in zip(levels, setting_styles(len(levels))):
        replications = ok[ok[setting] == level].sort_values("seed")
        seeds = list(replications["seed"])
        label = f"{level} (seed {seeds[0]})" if len(seeds) == 1 else f"{level} ({len(seeds)} seeds)"
        for number in replications[key]:
            sub = loss[loss[key] == number].sort_values("time_s").dropna(subset=["tokens"])
            if len(sub):
                ax.plot(sub["tokens"], sub["value"], color=colour, linestyle=dashes, linewidth=1.2, alpha=0.85,
                        label=label)
                label = None  # one legend entry per setting
                values.append(sub["value"])
                drawn += 1
    if not drawn:
        return _empty(ax, "no surrogate loss recorded")
    ax.set_xlabel("tokens (count)")
    _token_axis(ax.xaxis)
    _log_loss_axis(ax, pd.concat(values))
    ax.set_title("Surrogate loss vs tokens, every seed of every setting")
    _setting_legend(ax, setting, len(levels))
    ax.grid(alpha=0.3)
    return ax


def link_links(df: pd.DataFrame) -> list[str]:
    """The links a ``series`` frame holds utilisation for, in order of appearance."""
    data = df[df["series"] == "link_utilisation"] if "series" in df else df.iloc[0:0]
    return list(dict.fromkeys(data["key"]))


def link_utilisation(df: pd.DataFrame, ax: Axes, link: str | None = None) -> Axes:
    """Utilisation of one link (``series == "link_utilisation"``, value = share of capacity) over time,
    one line per run, with the 100 % capacity line marked and the y axis never cut below the data.

    Without ``link`` every link is drawn on the one ``ax``; the report draws one small panel per link.
    """
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("utilisation (% of capacity)")
    ax.set_title(f"Link utilisation: {link}" if link else "Link utilisation")
    data = df[df["series"] == "link_utilisation"] if "series" in df else df.iloc[0:0]
    if link is not None:
        data = data[data["key"] == link]
    data, _ = _first_replication(data)
    lines = 0 if data.empty else _series_lines(data, ax, "time_s", 1 / HOURS, 100.0, True)
    if not lines:
        return _empty(ax, "no link utilisation recorded")
    top = float(data["value"].max()) * 100.0
    ax.axhline(100.0, color="black", linestyle="--", linewidth=0.8, label="capacity (100 %)")
    ax.set_ylim(0, max(110.0, top * 1.05))
    many = lines > 6
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, ncol=2 if many else 1,
              title="run: link" if "run" in data and data["run"].nunique() > 1 else "link")
    ax.grid(alpha=0.3)
    return ax
