"""One self-contained HTML page (and its PNGs) from one or more results or sweep folders.

:func:`write_report` loads each input (:mod:`analysis.load`), picks the figures that apply to what
was run, saves each as a PNG in the output folder, and writes ``report.html`` with the same images
embedded as base64 data URIs, an inline style sheet and no script, so the page can be mailed,
attached to a CI run or opened offline.

What the page shows:

* **single run**: the summary metrics (mean and min-max over replications), the hypotheses'
  verdicts per replication (and any halt), the learner-state timeline, the chip-time ledger per
  replication, and the surrogate loss and WAN link utilisation when the run recorded them;
* **several runs** (or one compare run, which stands for its variants): the same tables with the runs
  side by side, labelled by what differs between their scenarios (which the page names; past 4 keys or
  80 characters by their folders, with a table of the differing keys), goodput and
  downtime per run, the ledger per run, one timeline per run, loss curves overlaid;
* **a sweep**: a table per sweep point, crashed replications with their errors, goodput,
  global-downtime and (with the surrogate) final-loss heatmaps over two axes (one panel per setting of
  the others: never averaged across factor levels; a zip group is one axis), the same as lines with
  the spread over seeds, the ledger per point, and with the surrogate final loss against goodput and
  the loss curve of every seed.

Every input's provenance (chaossim version, command line, seeds, date) heads the page.

Each input's resolved scenario closes the page.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sim.outputs import describe_contents
from sim.quantities import bound_text, verdict_text

from . import figures as fig
from .labels import factor_axis, format_metric, level_texts, metric_quantity
from .load import (
    Results,
    ResultsError,
    chip_time_long,
    concat,
    exposed_share,
    load_many,
    scenario_differences,
    scenario_values,
)

# Rows of the summary table, in order; metrics a run does not have are left out.
TABLE_METRICS = [
    # beside goodput, the part of it that is work the run's end found pending (the run-end convention);
    # beside the loss, the rounds it rests on
    "goodput", "useful_at_end_fraction", "uptime", "global_downtime_s", "time_to_train_s", "failures_total",
    "interruptions", "absorbed", "steps", "tokens", "final_loss", "surrogate_merges", "surrogate_rounds_skipped",
    "quorum_unmet_s", "mean_learners_per_merge", "wan_bytes",
    "chip_time_fraction.useful", "chip_time_fraction.lost", "chip_time_fraction.recovery",
    "chip_time_fraction.checkpoint", "chip_time_fraction.waiting", "chip_time_fraction.down",
    "chip_time_fraction.spare", "duration_s", "wall_time_s", "events",
]
MAX_TIMELINES = 12  # beyond this the page says which runs' timelines it left out
MAX_LEDGER_BARS = 24
MAX_PANELS = 6  # heatmap panels per metric (one per setting of the axes not on the map)
MAX_VERDICT_ROWS = 20
SWEEP_METRICS = ("goodput", "global_downtime_s", "final_loss")  # mapped over the factors (loss: with the surrogate)

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}th,td{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{background:#f4f4f4}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}.note{color:#555;font-size:.9rem}
figure{margin:1.2rem 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9rem}
pre{background:#f6f8fa;padding:.8rem;overflow:auto;font-size:.8rem}
"""


@dataclass
class Plot:
    name: str  # PNG file stem
    caption: str  # how to read it
    draw: Callable  # (ax) -> ax
    size: tuple[float, float] = (8.0, 4.5)


def _esc(value) -> str:
    return html.escape(str(value))


# ------------------------------------------------------------------------------------------- tables


def _cell(values: pd.Series, metric: str) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "n/a"
    mean, low, high = (format_metric(metric, v) for v in (values.mean(), values.min(), values.max()))
    return mean if low == high else f"{mean} ({low} to {high})"


def metrics_table(results: list[Results]) -> str:
    """Summary metrics, one column per input: mean over replications (min to max)."""
    frames = {r.label: fig.ok_rows(r.summaries) for r in results}
    listed = [*TABLE_METRICS]
    # after learners per merge: how many rounds merged each learner (one that none merges stands out)
    per_learner = sorted({c for f in frames.values() for c in f.columns if c.startswith("merges_by_learner.")},
                         key=lambda c: min(list(f.columns).index(c) for f in frames.values() if c in f))
    at = listed.index("mean_learners_per_merge") + 1
    listed[at:at] = per_learner
    metrics = [m for m in listed if any(m in f and f[m].notna().any() for f in frames.values())]
    head = "".join(f"<th>{_esc(label)}</th>" for label in frames)
    body = [
        "<tr><td>policy</td>"
        + "".join(f"<td>{_esc(', '.join(map(str, pd.unique(f['policy']))) if 'policy' in f else '')}</td>" for f in frames.values())
        + "</tr>",
        "<tr><td>replications</td>" + "".join(f"<td>{len(f)}</td>" for f in frames.values()) + "</tr>",
    ]
    if any("protocol" in f and f["protocol"].notna().any() for f in frames.values()):
        body.insert(1, "<tr><td>outer rounds</td>" + "".join(
            f"<td>{_esc(protocols_text(f))}</td>" for f in frames.values()) + "</tr>")
    if any("halted" in f and f["halted"].notna().any() for f in frames.values()):
        cells = "".join(
            f"<td class='fail'>{int(f['halted'].notna().sum())} of {len(f)}</td>" if "halted" in f and f["halted"].notna().any()
            else "<td>none</td>" for f in frames.values()
        )
        body.append(f"<tr><td>halted replications</td>{cells}</tr>")
    for metric in metrics:
        cells = "".join(f"<td>{_cell(f[metric], metric) if metric in f else 'n/a'}</td>" for f in frames.values())
        body.append(f"<tr><td>{_esc(metric_quantity(metric).label)}</td>{cells}</tr>")
    return f"<table><thead><tr><th>metric</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _bound(metric: str, row) -> str:
    """The bound in its metric's display unit (``<= 0 h`` for a downtime stored in seconds)."""
    low, high = (row.get(k) for k in ("min", "max"))
    return _esc(bound_text(metric, low if pd.notna(low) else None, high if pd.notna(high) else None))


def _verdict_rows(verdicts: pd.DataFrame, key: str) -> str:
    rows = []
    for row in verdicts.to_dict("records"):
        verdict = '<span class="pass">PASS</span>' if row["passed"] else '<span class="fail">FAIL</span>'
        error = row.get("error")
        note = _esc(error) if isinstance(error, str) and error else ""
        if row.get("halted") is True:
            note = "not judged: the replication halted early"
        value = format_metric(row["metric"], row["value"], unit=True) if pd.notna(row["value"]) else "n/a"
        rows.append(
            f"<tr><td>{_esc(row['metric'])}</td><td>{_bound(row['metric'], row)}</td><td>{_esc(row[key])}</td>"
            f"<td>{value}</td><td>{verdict}</td><td>{note}</td></tr>"
        )
    head = f"<tr><th>metric</th><th>bound</th><th>{key}</th><th>value</th><th>verdict</th><th>error</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _verdict_counts(verdicts: pd.DataFrame) -> str:
    """Per bound: in how many replications it held (a sweep has too many for one row each)."""
    rows = []
    for (metric, low, high), group in verdicts.groupby(["metric", "min", "max"], dropna=False, sort=False):
        held = int(group["passed"].sum())
        css = "pass" if held == len(group) else "fail"
        values = pd.to_numeric(group["value"], errors="coerce")
        spread = f"{format_metric(metric, values.min())} to {format_metric(metric, values.max(), unit=True)}"
        rows.append(
            f"<tr><td>{_esc(metric)}</td><td>{_bound(metric, {'min': low, 'max': high})}</td>"
            f"<td class='{css}'>{held} of {len(group)}</td><td>{spread}</td></tr>"
        )
    head = "<tr><th>metric</th><th>bound</th><th>held in</th><th>values</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def hypotheses_section(results: list[Results]) -> str:
    """Each bound's verdict per replication (counts for many), and any halt that stopped one."""
    parts = []
    for r in results:
        verdicts = r.hypotheses
        halted = r.summaries[r.summaries["halted"].notna()] if "halted" in r.summaries else r.summaries.iloc[0:0]
        if verdicts.empty and "hypotheses_passed" in r.summaries:
            passed = r.summaries["hypotheses_passed"].dropna().astype(bool)
            parts.append(f"<p><b>{_esc(r.label)}</b>: hypotheses held in {int(passed.sum())} of {len(passed)} replications.</p>")
        elif verdicts.empty:
            parts.append(f"<p><b>{_esc(r.label)}</b>: the scenario states no hypotheses.</p>")
        else:
            held = bool(verdicts["passed"].all())
            summary = '<span class="pass">all held</span>' if held else '<span class="fail">failed</span>'
            table = _verdict_rows(verdicts, r.key) if len(verdicts) <= MAX_VERDICT_ROWS else _verdict_counts(verdicts)
            parts.append(f"<p><b>{_esc(r.label)}</b>: {summary}</p>{table}")
        stopped = [s for s in r.raw if isinstance(s.get("halted"), dict)]
        for summary in stopped[:MAX_VERDICT_ROWS]:
            parts.append(f"<p class='fail'>{_esc(r.label)} {r.key} {_esc(summary.get(r.key, ''))}: {_esc(halt_note(summary))}</p>")
        if len(halted) > len(stopped):  # a sweep row says which bound tripped even without its summary
            parts.append(f"<p class='fail'>{_esc(r.label)}: {len(halted)} replication(s) halted by a halt bound.</p>")
    return "".join(parts)


def halt_note(summary: dict) -> str:
    """``halted at 12.5 h of simulated time by the halt bound failures_total <= 0: 3``."""
    halted = summary["halted"]
    stop = halted.get("time_s", summary.get("duration_s"))
    when = f"{stop / 3600:.4g} h" if isinstance(stop, (int, float)) else "an unrecorded time"
    return f"halted at {when} of simulated time by the halt bound {verdict_text(halted)}"


def protocols_text(rows: pd.DataFrame) -> str:
    """The outer-round settings (``protocol``) of these rows, each distinct one once ("lockstep" if none)."""
    if "protocol" not in rows:
        return "lockstep"
    return "; ".join(str(p) for p in pd.unique(rows["protocol"].fillna("lockstep")))


def sweep_tables(r: Results) -> str:
    """Per sweep point: factor levels (as written), finished/crashed replications and mean metrics;
    then errors. Above them the outer-round settings the points rest on (the swept keys vary them)."""
    rows = r.written(r.summaries)
    by = [f for f in r.factors if rows[f].nunique(dropna=False) > 1] or (["point"] if "point" in rows else [])
    ok = fig.ok_rows(rows)
    metrics = [m for m in ("goodput", "useful_at_end_fraction", "global_downtime_s", "time_to_train_s", "uptime", "tokens",
                           "final_loss", "surrogate_merges", "mean_learners_per_merge")
               if m in rows and rows[m].notna().any()]
    head = "".join(f"<th>{_esc(c)}</th>" for c in by) + "<th>finished</th><th>crashed</th>"
    head += "".join(f"<th>{_esc(metric_quantity(m).label)}</th>" for m in metrics)
    body = []
    if by:
        texts = {c: dict(zip(rows[c], level_texts(rows[c]))) for c in by}
        for key, group in rows.groupby(by, sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            good = ok.loc[ok.index.intersection(group.index)]
            cells = "".join(f"<td>{_esc(texts[c].get(k, k))}</td>" for c, k in zip(by, key)) + f"<td>{len(good)}</td><td>{len(group) - len(good)}</td>"
            cells += "".join(f"<td>{_cell(good[m], m)}</td>" for m in metrics)
            body.append(f"<tr>{cells}</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    if "protocol" in rows and rows["protocol"].notna().any():
        table = f"<p>Outer rounds: {_esc(protocols_text(rows))}.</p>{table}"
    crashed = rows.loc[rows.index.difference(ok.index)]
    if len(crashed):
        items = "".join(
            f"<tr><td>{_esc(row.get('index', ''))}</td><td>{_esc(row.get('seed', ''))}</td><td>{_esc(row.get('error', ''))}</td></tr>"
            for row in crashed.to_dict("records")
        )
        table += f"<p class='fail'>{len(crashed)} replication(s) crashed:</p><table><thead><tr><th>index</th><th>seed</th><th>error</th></tr></thead><tbody>{items}</tbody></table>"
    return table


# ------------------------------------------------------------------------------------------ figures


def sweep_axes(r: Results) -> tuple[pd.DataFrame, list[str]]:
    """The sweep's rows with one column per axis that varies: a grid factor's key, or a zip group's
    keys joined (``training.policy + training.on_failure``, values ``sync_dp, restart``), so zip
    partners stay together in every figure and are never averaged across each other."""
    rows = r.written(r.summaries)  # levels as the user wrote them: 50000h, not 2083.33 d
    axes = []
    for keys in r.factor_groups or [[f] for f in r.factors]:
        keys = [k for k in keys if k in rows]
        if not keys:
            continue
        name = " + ".join(keys)
        if len(keys) > 1:
            rows[name] = _joined(rows, keys, ", ")
        if fig.ok_rows(rows)[name].astype(str).nunique() > 1:
            axes.append(name)
    return rows, axes


def _joined(rows: pd.DataFrame, keys: list[str], sep: str) -> pd.Series:
    """Each row's levels of ``keys`` in their units (``1; 15s``), one text per row."""
    return pd.DataFrame({k: level_texts(rows[k]) for k in keys}).agg(sep.join, axis=1)


def _setting_text(row: dict | pd.Series, axes: list[str], rows: pd.DataFrame) -> str:
    """``a=v, b=w`` for one sweep point, each level read as its whole column reads (one unit for all)."""
    parts = []
    for a in axes:
        column = rows[a]
        texts = dict(zip(column, level_texts(column), strict=True))
        text = texts.get(row[a])
        parts.append(f"{a}={text if text is not None else level_texts(pd.Series([row[a]], name=a)).iloc[0]}")
    return ", ".join(parts)


def replication_text(r: Results, index: int) -> str:
    """``sweep replication 0 (training.quorum=1, ..., seed 1)``: which settings one replication ran."""
    rows, axes = sweep_axes(r)
    match = rows.loc[rows[r.key] == index]
    if match.empty or not axes:
        return f"sweep replication {index}"
    return f"sweep replication {index} ({_setting_text(match.iloc[0], axes, rows)}, seed {match.iloc[0]['seed']})"


def _sweep_plots(r: Results, number: int = 1) -> list[Plot]:
    plots: list[Plot] = []
    rows, axes = sweep_axes(r)
    slug = _slug(r.label, f"sweep-{number}")
    numeric = [a for a in axes if factor_axis(rows[a]).numbers is not None]
    policy = next((a for a in axes if "policy" in a), None)
    # heatmaps over two axes (numbers first), one panel per level of every other axis: never averaged across
    plain = numeric + [a for a in axes if a not in numeric and a != policy] + ([policy] if policy else [])
    if len(plain) >= 2:
        x, y = plain[0], plain[1]
        rest = [a for a in axes if a not in (x, y)]
        panels = fig.ok_rows(rows)[rest].drop_duplicates().to_dict("records") if rest else [{}]
        for metric in SWEEP_METRICS:
            if not _recorded(rows, metric):
                continue
            # the panels of a metric share one colour scale: a colour is one value in every panel
            # one colour scale over the panels drawn (those left out past MAX_PANELS do not stretch it)
            shown = rows.merge(pd.DataFrame(panels[:MAX_PANELS]), on=rest) if len(panels) > 1 else rows
            limits = fig.heatmap_range(shown, x, y, metric, rest) if len(panels) > 1 else None
            for k, panel in enumerate(panels[:MAX_PANELS]):
                sub = rows.loc[(rows[list(panel)] == pd.Series(panel)).all(axis=1)] if panel else rows
                setting = _setting_text(panel, rest, rows) if panel else None
                where = f" at {setting}" if panel else ""
                plots.append(Plot(
                    f"{slug}-heatmap-{metric}" + (f"-{k}" if rest else ""),
                    f"{metric_quantity(metric).label} averaged over seeds for each {x} x {y} cell{where}; "
                    "the number in a cell is that mean" + ("; every panel has the same colour scale." if limits else "."),
                    lambda ax, m=metric, sub=sub, w=setting, lim=limits: fig.sweep_heatmap(
                        sub, ax, x, y, m, where=w, limits=lim), (7.5, 5.0)))
        if len(panels) > MAX_PANELS:
            plots[-1].caption += f" ({len(panels) - MAX_PANELS} more panel(s) per metric left out.)"
    if axes:
        x = plain[0]
        rest = [a for a in axes if a != x]
        hue = " / ".join(rest) or None
        lined = rows.assign(**{hue: _joined(rows, rest, ", ")}) if hue else rows
        for metric in SWEEP_METRICS:
            if _recorded(rows, metric):
                plots.append(Plot(
                    f"{slug}-lines-{metric}",
                    f"Mean {metric_quantity(metric).name} over seeds against {x}"
                    + (f", one line per setting of {hue}" if hue else "") + "; the band spans the lowest to the highest seed.",
                    lambda ax, m=metric: fig.sweep_lines(lined, ax, x, m, hue)))
    if axes and fig.ok_rows(rows)[axes].drop_duplicates().shape[0] <= MAX_LEDGER_BARS:
        # bars named by their factor levels ("30s, 1m"), not by point number
        ok = fig.ok_rows(rows)
        setting = _joined(ok, axes, "; ").rename("; ".join(axes))
        ledger = chip_time_long(ok.assign(**{setting.name: setting}), extra=[setting.name])
        plots.append(Plot(
            f"{slug}-ledger", "Where the chip-seconds went at each sweep point (mean over seeds; green = goodput).",
            lambda ax: fig.chip_time_bars(ledger, ax, by=setting.name), (9.0, 4.5)))
    if axes and _recorded(rows, "final_loss"):
        point = "; ".join(axes)
        named = rows.assign(**{point: _joined(rows, axes, "; ")})
        size = (11.0, 5.0) if named[point].nunique() > 10 else (8.0, 5.0)  # room for a legend beside the axes
        plots.append(Plot(
            f"{slug}-loss-vs-goodput",
            "Final surrogate loss against goodput at each sweep point: small dots are seeds, rings the mean "
            "over seeds (lower right is better on both).",
            lambda ax: fig.loss_vs_goodput(named, ax, point), size))
        series = r.table("series")
        if len(series):
            plots.append(Plot(
                f"{slug}-loss-per-setting",
                "Surrogate eval loss against tokens trained, every seed of every sweep point (one colour per point).",
                lambda ax: fig.loss_per_setting(series, named, ax, point, r.key), size))
    timeline = r.table("timeline", first=1)
    if len(timeline):
        events = r.with_groups(r.table("events", first=1))
        index = int(timeline[r.key].iloc[0])
        plots.append(Plot(
            f"{slug}-timeline", f"Learner states of {replication_text(r, index)}; red triangles are failures "
            "(hollow: arrived while already stopped).",
            lambda ax: fig.timeline(timeline, ax, events, _exposed(r, timeline)), (10.0, 1.6 + 0.45 * timeline["group"].nunique())))
    return plots


def _recorded(rows: pd.DataFrame, metric: str) -> bool:
    return metric in rows and bool(rows[metric].notna().any())


def _exposed(r: Results, timeline: pd.DataFrame) -> float:
    """The exposed-communication share of running time in the replication a timeline shows."""
    if timeline.empty or not r.raw:
        return 0.0
    number = int(timeline[r.key].iloc[0])
    summary = next((s for s in r.raw if s.get(r.key) == number), r.raw[0])
    return exposed_share(timeline[timeline[r.key] == number], summary)


def _run_plots(runs: list[Results]) -> list[Plot]:
    plots: list[Plot] = []
    summaries = concat(runs, "summaries")
    if len(runs) > 1:
        for metric in ("goodput", "global_downtime_s"):
            plots.append(Plot(
                f"compare-{metric}", f"{metric_quantity(metric).label} per run: bar = mean over replications.",
                lambda ax, m=metric: fig.metric_bars(summaries, ax, m)))
        plots.append(Plot(
            "compare-ledger", "Chip-time ledger per run (share of provisioned chip-seconds; green = goodput).",
            lambda ax: fig.chip_time_bars(concat(runs, "chip_time"), ax, by="run"), (9.0, 4.5)))
    else:
        plots.append(Plot(
            f"{_slug(runs[0].label, 'run-1')}-ledger", "Chip-time ledger per replication (green = goodput).",
            lambda ax: fig.chip_time_bars(runs[0].chip_time, ax, by="replication")))
    for k, r in enumerate(runs[:MAX_TIMELINES]):
        groups = max(r.timeline["group"].nunique(), 1)
        plots.append(Plot(
            f"{_slug(r.label, f'run-{k + 1}')}-timeline",
            f"{r.label}: what each learner group did over simulated time (first replication); "
            "red triangles are failures (hollow: arrived while already stopped), shaded spans are outages or degradations.",
            lambda ax, r=r: fig.timeline(r.timeline, ax, r.events, _exposed(r, r.timeline)), (10.0, 1.8 + 0.45 * groups)))
    return plots


def _series_plots(results: list[Results]) -> list[Plot]:
    series = concat(results, "series")
    if series.empty or "series" not in series:
        return []
    plots = []
    # curves are of one replication per input: a sweep's says which settings it ran
    shown = "".join(
        f" {r.label}: {replication_text(r, int(r.series[r.key].min()))}." for r in results
        if r.kind == "sweep" and len(r.series)
    )
    if (series["series"] == "loss").any():
        unmerged = [r.label for r in results if _merged_none(r)]
        if unmerged:
            shown += f" {fig.UNMERGED_NOTE[0].upper()}{fig.UNMERGED_NOTE[1:]} ({', '.join(unmerged)})."
        plots.append(Plot("loss-vs-time", f"Surrogate eval loss against simulated wall-clock hours.{shown}",
                          lambda ax: fig.loss_curves(series, ax, "time", unmerged)))
        if series.loc[series["series"] == "loss", "tokens"].notna().any():
            plots.append(Plot("loss-vs-tokens", f"Surrogate eval loss against tokens trained.{shown}",
                              lambda ax: fig.loss_curves(series, ax, "tokens", unmerged)))
    for k, link in enumerate(fig.link_links(series)):
        plots.append(Plot(
            f"link-utilisation-{k}", f"Utilisation of {link} over time (share of its capacity in use, first "
            f"replication of each run; the dashed line is capacity).{shown}",
            lambda ax, link=link: fig.link_utilisation(series, ax, link), (9.0, 2.8)))
    return plots


def _merged_none(r: Results) -> bool:
    """Whether the replication whose loss curve is drawn (the first) merged no surrogate round."""
    if not len(r.series):
        return False
    first = int(r.series[r.key].min())
    summary = next((s for s in r.raw if s.get(r.key) == first), None)
    return summary is not None and summary.get("surrogate_merges") == 0


def provenance_html(results: list[Results]) -> str:
    """Where each input came from: chaossim version, command line, seeds and date."""
    rows = [
        f"<tr><td>{_esc(r.label)}</td><td>{_esc(p.get('chaossim', '?'))}</td><td><code>{_esc(p.get('command', '?'))}</code></td>"
        f"<td>{_esc(', '.join(map(str, p.get('seeds', []))))}</td><td>{_esc(p.get('date', '?'))}</td></tr>"
        for r in results if (p := r.provenance)
    ]
    if not rows:
        return "<p class='note'>No provenance recorded (results written before chaossim recorded it).</p>"
    head = "<tr><th>input</th><th>chaossim</th><th>command</th><th>seeds</th><th>date (UTC)</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


MAX_STEM = 60
"""A PNG named after its input's label when the label makes a stem this short; else by number."""


def _slug(text: str, fallback: str = "run") -> str:
    """A file stem from a label (``elastic_dp-elastic``), or ``fallback`` when the label is too long
    to read as a file name (runs of different scenarios are labelled by dozens of keys)."""
    slug = "".join(c if c.isalnum() or c == "_" else "-" for c in str(text)).strip("-")
    return slug if slug and len(slug) <= MAX_STEM else fallback


def render_png(plot: Plot) -> bytes:
    """Draw one plot; returns the PNG's bytes (written by :func:`write_report` once all are drawn)."""
    figure, ax = fig.new_axes(*plot.size)
    plot.draw(ax)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def differences_html(runs: list[Results], keys: list[str]) -> str:
    """The scenario keys in which the runs differ, one row each, with every run's value."""
    columns = []
    for r in runs:
        values = ["?"] * len(keys)  # an unreadable scenario.yaml: its values cannot be named
        with contextlib.suppress(Exception):
            values = scenario_values(r.scenario_text, keys)
        columns.append(values)
    head = "<tr><th>scenario key</th>" + "".join(f"<th>{_esc(r.label)}</th>" for r in runs) + "</tr>"
    body = "".join(
        f"<tr><td><code>{_esc(key)}</code></td>" + "".join(f"<td>{_esc(values[i])}</td>" for values in columns) + "</tr>"
        for i, key in enumerate(keys)
    )
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def _write_files(out_dir: Path, files: dict[Path, bytes | str]) -> None:
    """Create ``out_dir`` and write every file into it, or none: a folder that cannot take one (a name
    too long, a full disk, no permission) keeps no half of the report (a folder made for it is
    removed again), and the user reads one line, not a traceback."""
    written: list[Path] = []
    made = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    path = out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, data in files.items():
            if isinstance(data, str):
                path.write_text(data)
            else:
                path.write_bytes(data)
            written.append(path)
    except OSError as problem:
        for done in written:
            done.unlink(missing_ok=True)
        for folder in made:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise ResultsError(f"{problem.filename or path}: cannot write the report ({problem.strerror or problem})") from None


# ------------------------------------------------------------------------------------------- report


def write_report(results_paths, out_dir) -> Path:
    """Write PNG figures and a self-contained ``report.html`` into ``out_dir``; returns the page.

    ``results_paths`` are results folders (``chaossim run -o``) and/or sweep folders; raises
    :class:`ResultsError` with a one-line message when one is missing or is neither.
    """
    results = load_many(results_paths)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ResultsError(f"{out_dir}: is a file; expected a folder for the report")
    held = describe_contents(out_dir)
    if held is not None and held.startswith(("a run", "a sweep")):
        # figures written among a run's or a sweep's files would be read as part of its results
        raise ResultsError(f"-o {out_dir}: holds {held}; write the report into another folder (e.g. {out_dir / 'report'})")
    runs = [r for r in results if r.kind == "run"]
    sweeps = [r for r in results if r.kind == "sweep"]
    plots = ((_run_plots(runs) if runs else []) + [p for k, s in enumerate(sweeps) for p in _sweep_plots(s, k + 1)]
             + _series_plots(results))
    seen: set[str] = set()
    figures_html = []
    files: dict[Path, bytes | str] = {}
    for plot in plots:
        while plot.name in seen:  # two inputs with similar labels must not overwrite a PNG
            plot.name += "-2"
        seen.add(plot.name)
        path = out_dir / f"{plot.name}.png"
        files[path] = render_png(plot)
        data = base64.b64encode(files[path]).decode("ascii")
        figures_html.append(
            f'<figure><img alt="{_esc(plot.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(plot.caption)} ({_esc(path.name)})</figcaption></figure>"
        )
    inputs = "".join(
        f"<li><b>{_esc(r.label)}</b>: {'sweep' if r.kind == 'sweep' else 'run'} of "
        f"{len(r.summaries)} replication(s), <code>{_esc(r.path)}</code></li>"
        for r in results
    )
    differ = scenario_differences([r.scenario_text for r in runs])
    differences = (
        f"<p>The runs differ in: {', '.join(f'<code>{_esc(k)}</code>' for k in differ)}; everything else "
        f"in their resolved scenarios is the same.</p>{differences_html(runs, differ)}"
        if len(runs) > 1 and differ and len(differ) <= 4 else
        f"<p>The runs differ in the {len(differ)} keys below; everything else in their resolved scenarios is "
        f"the same.</p>{differences_html(runs, differ)}" if len(runs) > 1 and differ else
        "<p>The runs have the same resolved scenario.</p>" if len(runs) > 1 else ""
    )
    sections = [
        f"<h1>chaossim report</h1><ul>{inputs}</ul>{differences}{provenance_html(results)}",
        # a sweep's replications ran different settings: pooled they mean nothing, so a sweep has its
        # table per point below instead
        *(["<h2>Summary metrics</h2><p class='note'>Mean over finished replications (min to max in brackets).</p>",
           metrics_table(runs)] if runs else []),
        *[f"<h2>Sweep points: {_esc(s.label)}</h2>{sweep_tables(s)}" for s in sweeps],
        "<h2>Hypotheses</h2>",
        hypotheses_section(results),
        "<h2>Figures</h2>",
        *(
            [(f"<p class='fail'>Timelines of {len(runs) - MAX_TIMELINES} run(s) are left out to keep the page readable: "
             f"{_esc(', '.join(r.label for r in runs[MAX_TIMELINES:]))}; report them on their own to see them.</p>")]
            if len(runs) > MAX_TIMELINES else []
        ),
        *figures_html,
        "<h2>Scenario</h2>",
        *[
            f"<details{' open' if len(results) == 1 else ''}><summary>{_esc(r.label)} (resolved)</summary>"
            f"<pre>{_esc(r.scenario_text or '(no scenario.yaml found)')}</pre></details>"
            for r in results
        ],
    ]
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>chaossim report: {_esc(', '.join(r.label for r in results))}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
    path = out_dir / "report.html"
    files[path] = page
    _write_files(out_dir, files)
    return path
