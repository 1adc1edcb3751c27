"""analysis: results folders -> tidy frames -> figures -> one self-contained HTML report.

The result set is real: the quickstart scenario for one day (as ``chaossim run`` writes it), an
elastic variant, a variant whose hypothesis fails, and a small sweep through :mod:`sim.sweep`. The
surrogate loss and WAN link utilisation series are added by hand where a test needs them, in the
recorder's schema, so the figures that read them are tested whatever the policies record today.
"""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import CHAOSSIM, ROOT
from matplotlib.collections import PolyCollection
from typer.testing import CliRunner

from analysis import figures, load_results, write_report
from analysis.load import ResultsError, concat, flatten, load_many
from sim.cli import app
from sim.executors import SerialExecutor
from sim.recorder import SERIES_SCHEMA
from sim.sweep import plan_sweep, run_sweep

QUICKSTART = str(ROOT / "scenarios" / "quickstart.yaml")
DAY = ["--set", "duration=1d", "--set", "compare={}", "--no-report"]


def cli_run(folder, *args) -> int:
    result = CliRunner().invoke(app, ["run", QUICKSTART, *DAY, *args, "-o", str(folder), "--json", "-q"])
    return result.exit_code


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Three run folders (quickstart x2 replications, elastic, failing hypothesis) and one sweep."""
    base = tmp_path_factory.mktemp("results")
    folders = {"quick": base / "quick", "elastic": base / "elastic", "strict": base / "strict"}
    assert cli_run(folders["quick"], "--replications", "2") == 0
    assert cli_run(folders["elastic"], "--set", "training.policy=elastic_dp", "--set", "training.on_failure=elastic", "--replications", "1") == 0
    assert cli_run(folders["strict"], "--set", "hypotheses=[{metric: goodput, min: 0.99}]", "--replications", "1") == 1
    plan = plan_sweep(
        QUICKSTART, ["duration=12h"],
        grid={"training.checkpoint.write_time": ["30s", "120s"], "topology.regions.0.islands.0.count": [2, 4]},
        zipped={"training.policy": ["sync_dp", "elastic_dp"], "training.on_failure": ["restart", "elastic"]},
        seeds=[1, 2],
    )
    folders["sweep"] = run_sweep(plan, base / "sweep", SerialExecutor()).folder
    return folders


def series_frame() -> pd.DataFrame:
    """Loss for two keys and utilisation for one link, as the recorder's ``series`` table holds them."""
    t = np.linspace(0, 86400, 25)
    rows = [(x, "loss", key, 2.5 * np.exp(-x / 3e4) + off, x * 1e7) for key, off in (("decoupled_diloco", 0.3), ("sync_dp", 0.4)) for x in t]
    rows += [(x, "link_utilisation", "us-east~us-central", 0.5 + 0.4 * np.sin(x / 1e4), np.nan) for x in t]
    frame = pd.DataFrame(rows, columns=SERIES_SCHEMA.names)
    return frame.assign(run="r", replication=0)


def axes():
    return figures.new_axes()[1]


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


# ------------------------------------------------------------------------------------------- loading


def test_run_folder_loads_as_tidy_tables(results):
    """A results folder gives one summary row per replication and long-form tables that add up."""
    run = load_results(results["quick"])
    assert run.kind == "run" and run.label == "quick"
    assert list(run.summaries["replication"]) == [0, 1]
    assert {"goodput", "global_downtime_s", "chip_time_fraction.lost", "failures.chip_failure"} <= set(run.summaries)
    assert list(run.timeline.columns[:6]) == ["group", "phase", "start_s", "end_s", "active_chips", "down_chips"]
    assert set(run.timeline["replication"]) == {0, 1}
    failures = run.events[run.events["kind"] == "failure"]
    assert len(failures) and set(failures["group"]) == {"job"}  # islands pod-N belong to the job
    shares = run.chip_time.groupby("replication")["fraction"].sum()
    assert np.allclose(shares, 1.0)
    assert "name: quickstart" in run.scenario_text
    assert list(run.hypotheses["passed"]) == [True, True]


def test_flatten_keeps_scalars_and_names_the_halt():
    """Nested metrics become dotted columns; lists are left out; a halt becomes its metric name."""
    flat = flatten({"goodput": 0.5, "chip_time": {"useful": 1.0}, "learners": [{}], "halted": {"metric": "goodput", "value": 0.1}})
    assert flat == {"goodput": 0.5, "chip_time.useful": 1.0, "halted": "goodput"}


def test_sweep_folder_loads_rows_and_factors(results):
    """A sweep folder gives one row per replication, its factors, and the first run's tables."""
    sweep = load_results(results["sweep"])
    assert sweep.kind == "sweep" and len(sweep.summaries) == 16
    assert sweep.factors == ["training.checkpoint.write_time", "topology.regions.0.islands.0.count", "training.policy", "training.on_failure"]
    assert (sweep.summaries["status"] == "ok").all()
    first = sweep.table("timeline", first=1)
    assert set(first["index"]) == {0} and len(first)


def test_bad_inputs_raise_one_line_errors(tmp_path, results):
    """Missing folders, files and folders that hold no results are refused with one line."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for path, words in ((tmp_path / "nope", "no such folder"), (tmp_path / "empty", "not a results folder"), (tmp_path / "file.txt", "is a file")):
        with pytest.raises(ResultsError, match=words) as err:
            load_results(path)
        assert "\n" not in str(err.value)
    labels = [r.label for r in load_many([results["quick"], results["quick"]])]
    assert len(set(labels)) == 2  # the same folder twice still gets two columns


# ------------------------------------------------------------------------------------------- figures


def test_heatmap_has_one_annotated_cell_per_factor_pair(results):
    """The heatmap shows the mean over seeds of every (x, y) cell, in the metric's display unit."""
    rows = load_results(results["sweep"]).summaries
    x, y = "training.checkpoint.write_time", "topology.regions.0.islands.0.count"
    ax = figures.sweep_heatmap(rows, axes(), x, y, "global_downtime_s")
    grid = ax.images[0].get_array()
    assert grid.shape == (2, 2)
    means = rows.groupby([y, x])["global_downtime_s"].mean() / 3600
    assert np.allclose(np.sort(grid.ravel()), np.sort(means.to_numpy()))
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{v:.3g}" for v in means)
    assert ax.get_xlabel() == "training.checkpoint.write_time (s)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["30", "120"]
    assert ax.figure.axes[-1].get_ylabel() == "global downtime (h)"  # the colorbar
    assert "mean over 4 seed(s)" in ax.get_title()  # 2 seeds x 2 policies (zipped) per cell


def test_heatmap_panels_name_their_slice_and_share_one_colour_scale(results):
    """A sweep of three axes draws a heatmap panel per setting of the third: each title says which
    setting (not only the HTML caption), and a metric's panels share one colour scale spanning the
    cells of all of them, so a colour is one value in every panel."""
    from analysis.report import _sweep_plots

    sweep = load_results(results["sweep"])
    drawn = {}
    for plot in _sweep_plots(sweep):
        if "-heatmap-" in plot.name:
            drawn[plot.name] = plot.draw(axes())
    for metric in ("goodput", "global_downtime_s"):
        panels = [drawn[f"sweep-heatmap-{metric}-{k}"] for k in (0, 1)]
        titles = [ax.get_title() for ax in panels]
        assert titles[0] != titles[1]
        assert "at training.policy + training.on_failure=sync_dp, restart" in titles[0]
        assert "at training.policy + training.on_failure=elastic_dp, elastic" in titles[1]
        scales = [ax.images[0].get_clim() for ax in panels]
        assert scales[0] == scales[1]
        cells = np.concatenate([ax.images[0].get_array().compressed() for ax in panels])
        assert scales[0] == pytest.approx((cells.min(), cells.max()))


def test_a_heatmap_of_equal_cells_says_so_instead_of_a_colour_bar(results):
    """Every cell 0 h of downtime: no colour bar spanning -0.1 to 0.1 h (a downtime nobody measured),
    the value in the title and in every cell."""
    rows = load_results(results["sweep"]).summaries.copy()
    rows["global_downtime_s"] = 0.0
    x, y = "training.checkpoint.write_time", "topology.regions.0.islands.0.count"
    ax = figures.sweep_heatmap(rows, axes(), x, y, "global_downtime_s")
    assert len(ax.figure.axes) == 1  # no colour bar
    assert "every cell 0 h" in ax.get_title()
    assert sorted(t.get_text() for t in ax.texts) == ["0"] * 4


def test_token_axes_use_the_tables_suffixes(results):
    """Loss against tokens labels its ticks 100B, 200B like every table, not with a 1e11 offset."""
    series = series_frame()
    series["tokens"] = series["time_s"] * 3e6  # up to 2.6e11 tokens
    ax = figures.loss_curves(series, axes(), x="tokens")
    ax.figure.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels and all(re.fullmatch(r"-?[0-9.,]+[kMBT]?", label) for label in labels), labels
    assert any(label.endswith("B") for label in labels)
    assert ax.xaxis.get_offset_text().get_text() == ""


def test_lines_have_one_line_and_band_per_hue_level(results):
    """Lines over a factor: one per level of the hue factor, each with its seed band."""
    rows = load_results(results["sweep"]).summaries
    ax = figures.sweep_lines(rows, axes(), "training.checkpoint.write_time", "goodput", hue="training.policy")
    assert len(ax.get_lines()) == 2
    assert legend_texts(ax) == ["sync_dp", "elastic_dp"]
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2
    assert ax.get_ylabel() == "goodput (fraction of chip-time)"
    assert ax.get_xlabel() == "training.checkpoint.write_time (s)"
    line = ax.get_lines()[0]
    expected = rows[rows["training.policy"] == "sync_dp"].groupby("training.checkpoint.write_time")["goodput"].mean()
    assert np.allclose(line.get_xdata(), [30, 120]) and np.allclose(line.get_ydata(), expected.to_numpy())


def test_zip_factors_are_never_averaged_across_each_other(results):
    """Every line of the sweep's lines figure is one setting of every other axis, zip partners together."""
    from analysis.report import sweep_axes

    sweep = load_results(results["sweep"])
    rows, axes_ = sweep_axes(sweep)
    assert axes_ == ["training.checkpoint.write_time", "topology.regions.0.islands.0.count",
                     "training.policy + training.on_failure"]
    assert set(rows["training.policy + training.on_failure"]) == {"sync_dp, restart", "elastic_dp, elastic"}
    hue = "topology.regions.0.islands.0.count / training.policy + training.on_failure"
    lined = rows.assign(**{hue: rows[axes_[1:]].astype(str).agg(", ".join, axis=1)})
    ax = figures.sweep_lines(lined, axes(), axes_[0], "goodput", hue)
    assert sorted(legend_texts(ax)) == ["2, elastic_dp, elastic", "2, sync_dp, restart", "4, elastic_dp, elastic", "4, sync_dp, restart"]
    # each point of a line is the mean over seeds of exactly one sweep point
    for line in ax.get_lines():
        count, policy = line.get_label().split(", ", 1)
        sub = rows[(rows[axes_[1]].astype(str) == count) & (rows[axes_[2]] == policy)]
        expected = sub.groupby(axes_[0])["goodput"].mean().loc[["30s", "120s"]].to_numpy()  # as the sweep wrote them
        assert np.allclose(line.get_ydata(), expected)


def test_goodput_vs_numeric_factor_per_policy(results):
    """Goodput against a numeric factor draws one line per policy on a numeric axis."""
    rows = load_results(results["sweep"]).summaries
    ax = figures.goodput_vs(rows, axes(), "topology.regions.0.islands.0.count")
    assert legend_texts(ax) == ["sync_dp", "elastic_dp"]
    assert [list(line.get_xdata()) for line in ax.get_lines()] == [[2.0, 4.0], [2.0, 4.0]]
    assert "per policy" in ax.get_title()
    assert "fraction of chip-time" in ax.get_ylabel()


def test_timeline_draws_each_phase_and_marks_failures(results):
    """One bar collection per (group, phase), a legend entry per phase, a triangle per failure."""
    run = load_results(results["quick"])
    ax = figures.timeline(run.timeline, axes(), run.events)
    rep0 = run.timeline[run.timeline["replication"] == 0]
    bars = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bars) == rep0.groupby(["group", "phase"]).ngroups
    assert sum(len(c.get_paths()) for c in bars) == len(rep0)
    failures = run.events[(run.events["replication"] == 0) & (run.events["kind"] == "failure")]
    markers = next(line for line in ax.get_lines() if line.get_marker() == "v")  # filled: interruptions
    assert len(markers.get_xdata()) == len(failures) > 0
    assert np.allclose(markers.get_xdata(), failures["time_s"] / 3600)
    assert set(legend_texts(ax)) == set(rep0["phase"]) | {"failure"}
    assert ax.get_xlabel() == "simulated time (h)"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["job"]  # (its few checkpoint writes show as lines)
    assert f"{len(failures)} failures" in ax.get_title()


def test_factor_levels_read_in_their_units():
    """Sweep rows hold factor values resolved to SI numbers; tables, legends and captions show them
    as a scenario file writes them, in one unit per column."""
    from analysis.labels import level_texts

    def texts(name, values):
        return list(level_texts(pd.Series(values, name=name)))

    assert texts("training.grace.fixed", [0.0, 2.0, 60.0]) == ["0s", "2s", "60s"]
    assert texts("training.grace.max", [0.0, 30.0, float("inf")]) == ["0s", "30s", "inf"]
    # one unit per column, the one in which its values read shortest
    assert texts("faults.0.mtbf", [3600.0 * 1000, 3600.0 * 24 * 365]) == ["1000h", "8760h"]  # not 41.6667d
    assert texts("training.checkpoint.write_time", [30.0, 120.0]) == ["30s", "120s"]  # not 0.5min
    assert texts("faults.0.mtbf", [1.8e8, 3.6e8]) == ["50000h", "100000h"]  # not 2083.33d
    assert texts("training.recovery.reload", [300.0, 900.0]) == ["5min", "15min"]  # not 0.0833333h
    assert texts("topology.default_link.bandwidth", [2e9, 5e9]) == ["2Gbit/s", "5Gbit/s"]
    assert texts("training.quorum", [1, 2]) == ["1", "2"]
    assert texts("training.policy", ["sync_dp", "elastic_dp"]) == ["sync_dp", "elastic_dp"]
    assert texts("training.grace.fixed", [0.0]) == ["0s"]  # a zero alone picks no unit (not 0d)


def test_a_sweep_points_setting_reads_its_levels_as_its_column_does():
    """A panel title or caption names one point's levels in its column's unit: 120 of [0, 30, 120] s is
    120s, as the table prints it, not 2min."""
    from analysis.report import _setting_text

    rows = pd.DataFrame({"training.grace.fixed": [0.0, 30.0, 120.0], "training.quorum": [1, 2, 1]})
    axes = ["training.grace.fixed", "training.quorum"]
    assert _setting_text({"training.grace.fixed": 120.0, "training.quorum": 2}, axes, rows) == \
        "training.grace.fixed=120s, training.quorum=2"
    assert _setting_text({"training.grace.fixed": 0.0, "training.quorum": 1}, axes, rows).startswith(
        "training.grace.fixed=0s")


def test_sweep_figures_label_factor_levels_as_the_sweep_wrote_them(tmp_path):
    """--grid training.recovery.reload=5m,15m: the rows hold 300.0 and 900.0, which read
    0.0833333h in the tables and axes and 300s in a caption. Every table, tick, legend and caption
    reads 5m and 15m (and 1m, not 60s), as the sweep's plan recorded them."""
    from analysis.report import _sweep_plots, replication_text, sweep_tables

    plan = plan_sweep(QUICKSTART, ["duration=2h", "compare={}"],
                      grid={"training.recovery.reload": ["5m", "15m"], "training.checkpoint.write_time": ["30s", "1m"]},
                      seeds=[1])
    sweep = load_results(run_sweep(plan, tmp_path / "sweep", SerialExecutor()).folder)
    assert sorted(sweep.summaries["training.recovery.reload"]) == [300.0, 300.0, 900.0, 900.0]  # resolved
    table = sweep_tables(sweep)
    for text in ("<td>5m</td>", "<td>15m</td>", "<td>30s</td>", "<td>1m</td>"):
        assert text in table
    assert "0.0833333" not in table and "<td>60s</td>" not in table
    assert "training.recovery.reload=5m, training.checkpoint.write_time=30s" in replication_text(sweep, 0)
    drawn = {plot.name: plot.draw(axes()) for plot in _sweep_plots(sweep) if "timeline" not in plot.name}
    heatmap = drawn["sweep-heatmap-goodput"]
    assert [t.get_text() for t in heatmap.get_xticklabels()] == ["5m", "15m"]
    assert [t.get_text() for t in heatmap.get_yticklabels()] == ["30s", "1m"]
    assert heatmap.get_xlabel() == "training.recovery.reload"  # the ticks carry the unit
    lines = drawn["sweep-lines-goodput"]
    assert [t.get_text() for t in lines.get_xticklabels()] == ["5m", "15m"]
    assert np.allclose(lines.get_xticks(), [5, 15])  # at their places on a numeric axis
    assert legend_texts(lines) == ["30s", "1m"]
    ledger = drawn["sweep-ledger"]
    assert [t.get_text() for t in ledger.get_xticklabels()] == ["5m; 30s", "5m; 1m", "15m; 30s", "15m; 1m"]


def test_sweep_lines_ticks_an_integer_factor_at_integers(results):
    """A quorum or a chip count has no 1.5: the x ticks of an integer factor are whole numbers."""
    rows = load_results(results["sweep"]).summaries
    ax = figures.sweep_lines(rows, axes(), "topology.regions.0.islands.0.count", "goodput", hue="training.policy")
    ax.figure.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_sweep_lines_with_equal_means_stay_visible():
    """Two levels whose means coincide: each line keeps its own hollow marker, size and dash, so the
    one drawn first still shows around the other instead of vanishing under it."""
    rows = pd.DataFrame({"status": "ok", "q": [1, 2, 1, 2], "g": ["0s", "0s", "2s", "2s"], "goodput": [0.9, 0.8] * 2})
    ax = figures.sweep_lines(rows, axes(), "q", "goodput", hue="g")
    lines = [line for line in ax.get_lines() if line.get_label() in ("0s", "2s")]
    assert len(lines) == 2
    assert list(lines[0].get_ydata()) == list(lines[1].get_ydata())
    first, second = ((ln.get_marker(), ln.get_markersize(), ln.get_linestyle()) for ln in lines)
    assert first[0] != second[0] and first[1] > second[1] and first[2] != second[2]
    assert all(ln.get_markerfacecolor() == "none" for ln in lines)


def test_timeline_counts_every_failure_the_summary_counts(tmp_path):
    """The quickstart's two days under sync_dp: one of the 21 failures arrives while the job is
    already stopped (absorbed). The title counts all 21, as the run table does, and that one is a
    hollow triangle beside the 20 that interrupted the job."""
    from sim.loading import load_scenario
    from sim.runner import run_replication

    summary = run_replication(load_scenario(QUICKSTART, ["compare={}"]), 0, tmp_path / "run").summary
    assert summary["absorbed"] >= 1 and summary["interruptions"] >= 1  # the case this test is about
    run = load_results(tmp_path / "run")
    ax = figures.timeline(run.timeline, axes(), run.events)
    filled, hollow = ([line for line in ax.get_lines() if line.get_marker() == "v" and (line.get_markerfacecolor() == "none") is h]
                      for h in (False, True))
    assert len(filled[0].get_xdata()) == summary["interruptions"]
    assert len(hollow[0].get_xdata()) == summary["absorbed"]
    assert f"{summary['failures_total']} failures, {summary['absorbed']} absorbed" in ax.get_title()
    assert "failure while stopped\n(absorbed)" in legend_texts(ax)


def test_lockstep_over_wan_is_not_green_end_to_end(tmp_path):
    """sync_dp over a 2 Gbit/s WAN: the timeline's running bars are almost all hatched exposed
    communication, in the proportion the step model gives (comm / (compute + comm))."""
    from conftest import make_scenario

    from analysis.load import exposed_share
    from sim.runner import run_replication

    scenario = make_scenario(
        "topology.regions=[{name: a, islands: [{name: x, chip: v5p, chips: 1024}]}, "
        "{name: b, islands: [{name: y, chip: v5p, chips: 1024}]}]",
        "duration=6h",
    )
    summary = run_replication(scenario, 0, tmp_path / "run").summary
    expected = summary["step_comm_s"] / (summary["step_compute_s"] + summary["step_comm_s"])
    assert expected > 0.8  # 1B bf16 gradients over 2 Gbit/s take seconds; the step computes for 1 s
    run = load_results(tmp_path / "run")
    share = exposed_share(run.timeline, run.raw[0])
    assert share == pytest.approx(expected, rel=1e-6)
    ax = figures.timeline(run.timeline, axes(), run.events, share)
    bars = [c for c in ax.collections if isinstance(c, PolyCollection)]
    hatched = [c for c in bars if c.get_hatch()]
    green = [c for c in bars if not c.get_hatch() and tuple(c.get_facecolor()[0][:3]) == pytest.approx((0.173, 0.627, 0.173), abs=0.01)]
    assert hatched and green
    height = lambda c: c.get_paths()[0].get_extents().height
    assert height(hatched[0]) / (height(hatched[0]) + height(green[0])) == pytest.approx(expected, rel=1e-6)
    assert any("exposed comm" in t for t in legend_texts(ax))


def test_timeline_legend_names_only_styles_it_drew():
    """A Decoupled DiLoCo timeline whose ledger leaves a rounding residue of exposed communication
    (share 1e-9) drew no hatch anyone could see but named it 'running: exposed comm. (0.0 % ...)';
    a phase whose spans last 0 s coloured nothing but had an entry. Neither is in the legend now,
    nor drawn; a share that shows (2 %) still is."""
    h = 3600.0
    rows = pd.DataFrame(
        [("pod-0", "running", 0, 10 * h, 4096, 0), ("pod-0", "blocked", 10 * h, 10 * h, 4096, 0),
         ("pod-0", "running", 10 * h, 20 * h, 4096, 0), ("pod-1", "running", 0, 20 * h, 4096, 0)],
        columns=["group", "phase", "start_s", "end_s", "active_chips", "down_chips"]).assign(run="r", replication=0)
    ax = figures.timeline(rows, axes(), exposed_share=1e-9)
    assert legend_texts(ax) == ["running"]
    assert not [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_hatch()]
    ax = figures.timeline(rows, axes(), exposed_share=0.02)
    assert legend_texts(ax) == ["running: compute", "running: exposed comm.\n(2.0% of running chip-time)"]


def test_timeline_names_a_phase_spent_in_spans_too_short_to_draw():
    """A learner blocked 1 s of every 7 for six hours (14 %, 3,085 waits) draws as solid green: its row's
    name says "blocked 14% (short spans)". A long visible outage, a phase under 1 % of the run, a few
    short spans (they show as lines) and a row that only runs are not annotated."""
    h = 3600.0
    rows = []
    for k in range(int(6 * h / 7)):
        rows += [("east", "running", 7.0 * k, 7.0 * k + 6.0), ("east", "blocked", 7.0 * k + 6.0, 7.0 * k + 7.0)]
    rows += [("west", "running", 0, 2 * h), ("west", "downscale", 2 * h, 3 * h), ("west", "running", 3 * h, 6 * h),
             ("south", "running", 0, 6 * h - 100), ("south", "blocked", 6 * h - 100, 6 * h - 99),
             ("south", "running", 6 * h - 99, 6 * h)]
    for k in range(100):  # 100 writes of 9 s: 4 % of the run in spans under the threshold, but few
        rows += [("north", "running", 216.0 * k, 216.0 * k + 207.0), ("north", "checkpoint", 216.0 * k + 207.0, 216.0 * (k + 1))]
    rows += [("north", "running", 21600.0, 6 * h)]
    frame = pd.DataFrame(rows, columns=["group", "phase", "start_s", "end_s"]).assign(
        active_chips=4096, down_chips=0, run="r", replication=0)
    ax = figures.timeline(frame, axes())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["east\nblocked 14% (short spans)", "west", "south", "north"]


def test_timeline_shades_outage_windows_on_the_group_hit(tmp_path):
    """An island outage is a shaded span on its group's row, from its start to its end event."""
    from sim.loading import load_scenario
    from sim.runner import run_replication

    scenario = load_scenario(QUICKSTART, ["duration=4d", "faults.0.mtbf=1e9h"])  # only the 3d outage is left
    run_replication(scenario, 0, tmp_path / "run")
    run = load_results(tmp_path / "run")
    ax = figures.timeline(run.timeline, axes(), run.events)
    (window,) = [p for p in ax.patches if p.get_alpha() == pytest.approx(0.12)]
    assert window.get_x() == pytest.approx(24.0) and window.get_width() == pytest.approx(2.0)
    assert "fault window" in legend_texts(ax)


def _drawn_colours(ax) -> list[tuple[float, float, float, str]]:
    """(start h, end h, row y centre, colour) of every bar the timeline drew (exposed-comm hatches aside)."""
    from matplotlib.colors import to_hex

    bars = []
    for c in ax.collections:
        if isinstance(c, PolyCollection) and not c.get_hatch():
            colour = to_hex(c.get_facecolor()[0])
            for path in c.get_paths():
                box = path.get_extents()
                bars.append((box.x0, box.x1, (box.y0 + box.y1) / 2, colour))
    return bars


def test_a_group_with_every_chip_down_is_drawn_down_whatever_its_phase():
    """An island outage on a Decoupled DiLoCo learner records ``detect`` then ``blocked`` rows with
    no active chip and 4,096 down (quickstart, pod-0, 24-26 h): they are drawn black and named
    ``down`` in the legend, as the ledger books them. A lockstep job still holding 12,288 chips keeps
    its blocked and detect colours (those chips wait or recover; only a quarter is down)."""
    h = 3600.0
    rows = pd.DataFrame(
        [("pod-0", "running", 0, 24 * h, 4096, 0), ("pod-0", "detect", 24 * h, 24.2 * h, 0, 4096),
         ("pod-0", "blocked", 24.2 * h, 26 * h, 0, 4096), ("pod-0", "reload", 26 * h, 26.1 * h, 4096, 0),
         ("pod-0", "detect", 30 * h, 30.2 * h, 0, 0), ("pod-0", "running", 30.2 * h, 48 * h, 4096, 0),
         ("job", "running", 0, 24 * h, 16384, 0), ("job", "detect", 24 * h, 24.2 * h, 0, 4096),
         ("job", "blocked", 24.2 * h, 26 * h, 12288, 4096), ("job", "running", 26 * h, 48 * h, 16384, 0)],
        columns=["group", "phase", "start_s", "end_s", "active_chips", "down_chips"]).assign(run="r", replication=0)
    ax = figures.timeline(rows, axes())
    black = sorted((round(x0, 3), round(x1, 3), y) for x0, x1, y, colour in _drawn_colours(ax) if colour == "#252525")
    assert black == [(24.0, 24.2, 0.0), (24.2, 26.0, 0.0)]  # pod-0 (row 0) only
    colours = {(round(x0, 3), y): colour for x0, _, y, colour in _drawn_colours(ax)}
    assert colours[(24.0, 1.0)] == "#d94801" and colours[(24.2, 1.0)] == "#bdbdbd"  # job: detect, blocked
    assert colours[(30.0, 0.0)] == "#d94801"  # a chip failure's detect: nothing down
    assert "down" in legend_texts(ax)


def test_a_learner_in_an_outage_is_drawn_as_the_ledger_books_it(tmp_path):
    """The quickstart's pod-0 outage (24-26 h) under Decoupled DiLoCo: the chip-seconds drawn black
    are the ledger's down bucket exactly."""
    from sim.loading import load_scenario
    from sim.runner import run_replication

    scenario = load_scenario(QUICKSTART, ["duration=30h", "faults.0.mtbf=1e9h", "compare={}",
                                          "training.policy=decoupled_diloco", "training.on_failure=restart"])
    summary = run_replication(scenario, 0, tmp_path / "run").summary
    assert summary["chip_time"]["down"] == pytest.approx(4096 * 2 * 3600)
    run = load_results(tmp_path / "run")
    assert {"blocked", "detect"} & set(run.timeline.loc[run.timeline["down_chips"] > 0, "phase"])  # as recorded
    ax = figures.timeline(run.timeline, axes(), run.events)
    drawn = sum((x1 - x0) * 3600 * 4096 for x0, x1, _, colour in _drawn_colours(ax) if colour == "#252525")
    assert drawn == pytest.approx(summary["chip_time"]["down"])
    assert "down" in legend_texts(ax)


def test_chip_time_bars_stack_every_bucket_to_100(results):
    """Stacked ledger bars: one bar per run and non-empty bucket, stacking to 100 %."""
    runs = load_many([results["quick"], results["elastic"]])
    ledger = concat(runs, "chip_time")
    ax = figures.chip_time_bars(ledger, axes(), by="run")
    shown = legend_texts(ax)
    nonzero = ledger.groupby("bucket")["fraction"].sum()
    assert set(shown) == set(nonzero[nonzero > 0].index)
    assert shown[0] == "useful"  # goodput at the bottom
    assert len(ax.patches) == 2 * len(shown)
    tops = {}
    for patch in ax.patches:
        tops[round(patch.get_x(), 6)] = max(tops.get(round(patch.get_x(), 6), 0), patch.get_y() + patch.get_height())
    assert np.allclose(list(tops.values()), 100.0)
    assert ax.get_ylabel() == "share of provisioned chip-time (%)"
    # runs are labelled by what differs between their scenarios, not by folder name (wrapped onto lines)
    assert [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()] == [
        "replications=2, policy=sync_dp, on_failure=restart", "replications=1, policy=elastic_dp, on_failure=elastic"]


def test_ledger_labels_of_many_bars_fit_inside_them():
    """20 replications side by side: '82.9%' is wider than its bar, and white text past a bar's
    edges read '2.9'. Every label drawn lies inside its green bar (turned up it when only that fits),
    reads the whole share, and with 60 bars (no room either way) none is drawn; the title says a bar
    is one replication, not a mean."""
    for bars, expect_labels in ((20, True), (60, False)):
        rows = [{"replication": r, "bucket": b, "fraction": f}
                for r in range(bars) for b, f in (("useful", 0.829), ("recovery", 0.121), ("down", 0.05))]
        figure, ax = figures.new_axes()
        figures.chip_time_bars(pd.DataFrame(rows), ax, by="replication")
        figure.savefig(io.BytesIO(), format="png", dpi=100)
        renderer = figure.canvas.get_renderer()
        green = [p for p in ax.patches if p.get_y() == 0]
        assert len(green) == bars
        labels = [t for t in ax.texts if t.get_text().endswith("%")]
        assert bool(labels) is expect_labels and len(labels) in (0, bars)
        for text, bar in zip(labels, green):
            assert text.get_text() == "82.9%"
            inner, outer = text.get_window_extent(renderer), bar.get_window_extent(renderer)
            assert outer.x0 <= inner.x0 and inner.x1 <= outer.x1 and outer.y0 <= inner.y0 and inner.y1 <= outer.y1
        assert ax.get_title() == "Chip-time ledger, one replication per bar"


def test_ledger_title_says_what_a_bar_is(results):
    """Bars per replication are not means; bars per run over two replications are."""
    run = load_results(results["quick"])
    ax = figures.chip_time_bars(run.chip_time, axes(), by="replication")
    assert "mean" not in ax.get_title()
    ax = figures.chip_time_bars(run.chip_time, axes(), by="run")
    assert ax.get_title() == "Chip-time ledger, mean over 2 replications per bar"


def test_summary_table_shows_time_to_train(results):
    """A work-defined run (until) reports time_to_train_s: the summary table has its row, in hours,
    and so does a sweep's table per point."""
    from analysis.report import metrics_table, sweep_tables

    run = load_results(results["quick"])
    run.summaries["time_to_train_s"] = [72000.0, 79200.0]
    table = metrics_table([run])
    assert "<tr><td>time to train (h)</td><td>21 (20 to 22)</td></tr>" in table
    sweep = load_results(results["sweep"])
    sweep.summaries["time_to_train_s"] = 36000.0
    assert "<th>time to train (h)</th>" in sweep_tables(sweep) and "<td>10</td>" in sweep_tables(sweep)


def test_summary_table_says_how_many_rounds_the_loss_rests_on(results):
    """A loss from the surrogate rests on the rounds it merged, not on every round played (its resolution
    skips rounds whole): the summary table gives both counts beside the loss, and a sweep's table the
    merges per point."""
    from analysis.report import metrics_table, sweep_tables

    run = load_results(results["quick"])
    run.summaries["surrogate_merges"] = [312, 300]
    run.summaries["surrogate_rounds_skipped"] = [24312, 24000]
    table = metrics_table([run])
    assert "<tr><td>rounds the surrogate merged (the loss rests on them) (count)</td><td>306 (300 to 312)</td></tr>" in table
    assert "<td>rounds the surrogate skipped whole (its resolution) (count)</td><td>24,156 (24,000 to 24,312)</td>" in table
    sweep = load_results(results["sweep"])
    sweep.summaries["surrogate_merges"] = 40
    assert "<th>rounds the surrogate merged (the loss rests on them) (count)</th>" in sweep_tables(sweep)


def test_report_tables_name_the_outer_round_settings(results):
    """The report's summary table has a row with each run's outer-round settings (lockstep runs say so),
    and a sweep's table a line with the settings of its points."""
    from analysis.report import metrics_table, sweep_tables

    run = load_results(results["quick"])
    assert "<tr><td>outer rounds</td>" not in metrics_table([run])  # lockstep runs only: nothing to name
    run.summaries["protocol"] = "schedule learner, quorum 2"
    table = metrics_table([run, load_results(results["elastic"])])
    assert "<tr><td>outer rounds</td><td>schedule learner, quorum 2</td><td>lockstep</td></tr>" in table
    sweep = load_results(results["sweep"])
    sweep.summaries["protocol"] = ["schedule synchronizer"] * (len(sweep.summaries) - 1) + [None]
    assert "<p>Outer rounds: schedule synchronizer; lockstep.</p>" in sweep_tables(sweep)


def test_metric_bars_show_mean_and_replications(results):
    """One bar per run at the mean; downtime is shown in hours."""
    summaries = concat(load_many([results["quick"], results["elastic"]]), "summaries")
    ax = figures.metric_bars(summaries, axes(), "global_downtime_s")
    heights = [p.get_height() for p in ax.patches]
    expected = summaries.groupby("run", sort=False)["global_downtime_s"].mean() / 3600
    assert np.allclose(heights, expected.to_numpy())
    assert ax.get_ylabel() == "global downtime (h)"


def test_loss_curves_against_time_and_tokens():
    """One loss line per key, against simulated hours or tokens, with units on both axes."""
    series = series_frame()
    ax = figures.loss_curves(series, axes(), "time")
    assert legend_texts(ax) == ["decoupled_diloco", "sync_dp"]
    assert ax.get_lines()[0].get_xdata()[-1] == pytest.approx(24.0)
    assert ax.get_xlabel() == "simulated time (h)" and ax.get_ylabel() == "surrogate eval loss (nats)"
    ax = figures.loss_curves(series, axes(), "tokens")
    assert ax.get_lines()[0].get_xdata()[-1] == pytest.approx(86400 * 1e7)
    assert ax.get_xlabel() == "tokens (count)"


def test_a_single_loss_evaluation_is_a_visible_marker():
    """A 2 h run evaluates the surrogate once: one point draws no line, so each evaluation is a
    marker; a run whose surrogate merged no round says its loss is the initial model's."""
    series = series_frame()
    one = series[(series["series"] == "loss") & (series["time_s"] == series["time_s"].max())]
    one = one[one["key"] == "sync_dp"]
    for x in ("time", "tokens"):
        ax = figures.loss_curves(one, axes(), x, unmerged=["r"])
        (line,) = ax.get_lines()
        assert len(line.get_xdata()) == 1 and line.get_marker() not in (None, "None", "", " ")
        assert line.get_markersize() > 0
        assert figures.UNMERGED_NOTE in [t.get_text() for t in ax.texts]
    ax = figures.loss_curves(series, axes(), "time")  # merged rounds (or not known): no note
    assert figures.UNMERGED_NOTE not in [t.get_text() for t in ax.texts]


def test_report_says_when_no_round_merged(tmp_path, results):
    """The report reads surrogate_merges == 0 from the summary of the replication it draws."""
    run = tmp_path / "run"
    shutil.copytree(results["elastic"], run)
    series = series_frame().drop(columns=["run", "replication"])
    pq.write_table(pa_table(series[series["time_s"] == series["time_s"].max()]), run / "rep-0" / "series.parquet")
    summary = json.loads((run / "rep-0" / "summary.json").read_text())
    for merges, said in ((3, False), (0, True)):
        (run / "rep-0" / "summary.json").write_text(json.dumps({**summary, "surrogate_merges": merges}))
        page = page_of(write_report([run], tmp_path / f"report-{merges}"))
        assert (html.escape("No round merged yet: the loss is the initial model's (run).") in page) is said


def test_link_utilisation_in_percent():
    """Link utilisation is drawn per link in percent of capacity over simulated hours, 100 % marked."""
    ax = figures.link_utilisation(series_frame(), axes(), "us-east~us-central")
    line, capacity = ax.get_lines()
    assert legend_texts(ax) == ["us-east~us-central", "capacity (100 %)"]
    assert line.get_ydata().max() <= 90.0 + 1e-9 and line.get_ydata().max() > 80
    assert list(capacity.get_ydata()) == [100.0, 100.0]
    assert ax.get_ylabel() == "utilisation (% of capacity)"
    assert ax.get_title() == "Link utilisation: us-east~us-central"


def test_link_utilisation_is_never_clipped():
    """A link over capacity (a bug elsewhere would show this way) is drawn whole, not cut at 105 %."""
    frame = series_frame()
    frame.loc[frame["series"] == "link_utilisation", "value"] *= 2.0  # up to 180 %
    ax = figures.link_utilisation(frame, axes(), "us-east~us-central")
    assert ax.get_ylim()[1] >= 180.0


def test_series_figures_say_so_when_nothing_was_recorded(results):
    """A run without surrogate or link series gets an explicit empty plot, not an exception."""
    empty = load_results(results["quick"]).series
    assert empty.empty
    ax = figures.loss_curves(empty, axes())
    assert [t.get_text() for t in ax.texts] == ["no surrogate loss recorded"]
    ax = figures.link_utilisation(empty, axes())
    assert [t.get_text() for t in ax.texts] == ["no link utilisation recorded"]


# -------------------------------------------------------------------------------------------- report


def page_of(path) -> str:
    return path.read_text()


def check_self_contained(page: str, folder) -> None:
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert len(images) == len(list(folder.glob("*.png")))
    assert 'src="http' not in page and "<script" not in page and "<link" not in page and "url(" not in page


def test_report_of_one_run(tmp_path, results):
    """One run: the metrics table, the verdicts, the timeline and ledger, the scenario, all inline."""
    page_path = write_report([results["quick"]], tmp_path / "report")
    page = page_of(page_path)
    check_self_contained(page, tmp_path / "report")
    assert {p.name for p in (tmp_path / "report").glob("*.png")} == {"quick-ledger.png", "quick-timeline.png"}
    assert "<th>metric</th><th>quick</th>" in page
    assert "goodput (fraction of chip-time)" in page and "global downtime (h)" in page
    assert page.count('<span class="pass">PASS</span>') == 2  # one hypothesis x two replications
    assert "name: quickstart" in page  # the resolved scenario


def test_report_of_several_runs_side_by_side(tmp_path, results):
    """Several runs: one column each, a failing hypothesis marked FAIL, comparison figures."""
    page_path = write_report([results["quick"], results["elastic"], results["strict"]], tmp_path / "report")
    page = page_of(page_path)
    check_self_contained(page, tmp_path / "report")
    # one column per run, labelled by what differs between them, and the page names those keys
    labels = [r.label for r in load_many([results["quick"], results["elastic"], results["strict"]])]
    assert labels == [
        "replications=2, policy=sync_dp, on_failure=restart, hypotheses.0.min=0.7",
        "replications=1, policy=elastic_dp, on_failure=elastic, hypotheses.0.min=0.7",
        "replications=1, policy=sync_dp, on_failure=restart, hypotheses.0.min=0.99",
    ]
    assert "<th>metric</th>" + "".join(f"<th>{label}</th>" for label in labels) in page
    assert ("The runs differ in: <code>replications</code>, <code>training.policy</code>, "
            "<code>training.on_failure</code>, <code>hypotheses.0.min</code>") in page
    assert '<span class="fail">FAIL</span>' in page and "&gt;= 0.99" in page
    names = {p.name for p in (tmp_path / "report").glob("*.png")}
    assert {"compare-goodput.png", "compare-global_downtime_s.png", "compare-ledger.png"} <= names
    # every run has its timeline, captioned with its label
    assert len([n for n in names if n.endswith("-timeline.png")]) == 3
    for label in labels:
        assert f"<figcaption>{label}: what each learner group did" in page


def test_report_of_runs_of_different_scenarios_names_them_by_folder(tmp_path, results):
    """Two runs of different scenarios differ in a score of keys: a label (and a PNG name) spelling
    them all is 500 characters, past the file-name limit. The runs are named by their folders, the
    page spells the differences in a table, and no traceback is printed."""
    from sim.loading import load_scenario, scenario_yaml

    (tmp_path / "llama").mkdir()
    shutil.copytree(results["quick"], tmp_path / "quick")
    shutil.copytree(results["elastic"], tmp_path / "llama" / "run")
    llama = load_scenario(ROOT / "scenarios" / "llama3-like-sync.yaml", ["duration=1d"])
    (tmp_path / "llama" / "run" / "scenario.yaml").write_text(scenario_yaml(llama, tmp_path / "llama" / "run"))
    inputs = [tmp_path / "quick", tmp_path / "llama" / "run"]
    result = CliRunner().invoke(app, ["report", *map(str, inputs), "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and result.exception is None
    assert [r.label for r in load_many(inputs)] == ["quick", "run"]
    names = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert names == ["compare-global_downtime_s.png", "compare-goodput.png", "compare-ledger.png",
                     "quick-timeline.png", "run-timeline.png"]
    page = page_of(tmp_path / "report" / "report.html")
    assert "<th>metric</th><th>quick</th><th>run</th>" in page
    # the differences, one row per key with each run's value
    assert "<tr><th>scenario key</th><th>quick</th><th>run</th></tr>" in page
    assert "<tr><td><code>name</code></td><td>quickstart</td><td>llama3-like-sync</td></tr>" in page
    ax = figures.chip_time_bars(concat(load_many(inputs), "chip_time"), axes(), by="run")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["quick", "run"]


def test_long_labels_name_files_by_number(tmp_path, results):
    """A label too long to read as a file name (a folder named after its whole setting) gives its
    PNG a numbered name; a short one keeps its own."""
    long = tmp_path / ("x" * 200)
    shutil.copytree(results["quick"], long)
    write_report([long, results["quick"]], tmp_path / "report")  # the same scenario: named by folder
    names = {p.name for p in (tmp_path / "report").glob("*.png")}
    assert {"run-1-timeline.png", "quick-timeline.png"} <= names and max(map(len, names)) <= 70
    # nor does the label squeeze the bars to nothing: it wraps onto three lines and is cut
    ax = figures.metric_bars(concat(load_many([long, results["quick"]]), "summaries"), axes())
    first = ax.get_xticklabels()[0].get_text().split("\n")
    assert len(first) == 3 and first[-1] == "…" and max(map(len, first)) <= 28


def test_a_report_that_cannot_be_written_leaves_nothing_behind(tmp_path, results):
    """A file that cannot be written (here report.html is taken by a folder) is one line, exit 2,
    and none of the PNGs drawn before it stay behind as half a report."""
    out = tmp_path / "report"
    (out / "report.html").mkdir(parents=True)
    result = CliRunner().invoke(app, ["report", str(results["quick"]), str(results["elastic"]), "-o", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "cannot write the report" in line
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]


def test_report_of_a_sweep_with_a_crashed_replication(tmp_path, results):
    """A sweep: heatmaps and lines over its factors, a row per point, crashed replications listed."""
    sweep = tmp_path / "sweep"
    shutil.copytree(results["sweep"], sweep)
    first = load_results(sweep).summaries.iloc[0]
    crashed = {"index": 16, "point": 0, **{f: first[f] for f in load_results(sweep).factors}, "seed": 3,
               "status": "error", "error": "ValueError: injected"}
    pd.DataFrame([crashed]).to_parquet(sweep / "rows" / "part-000016.parquet")
    page = page_of(write_report([sweep], tmp_path / "report"))
    check_self_contained(page, tmp_path / "report")
    names = {p.name for p in (tmp_path / "report").glob("*.png")}
    # the zip factors (policy with its on_failure) stay one axis: a heatmap panel per zip setting
    assert {"sweep-heatmap-goodput-0.png", "sweep-heatmap-goodput-1.png", "sweep-heatmap-global_downtime_s-0.png",
            "sweep-lines-goodput.png"} <= names
    for setting in ("sync_dp, restart", "elastic_dp, elastic"):
        assert f"cell at training.policy + training.on_failure={setting}" in page
    assert "one line per setting of topology.regions.0.islands.0.count / training.policy + training.on_failure" in page
    assert re.search(r"Learner states of sweep replication 0 \(training.checkpoint.write_time=30s, "
                     r"topology.regions.0.islands.0.count=2, training.policy \+ training.on_failure=sync_dp, restart, seed 1\)", page)
    assert "ValueError: injected" in page and "1 replication(s) crashed" in page
    # no table pools the replications of different settings (sweep points hold them apart)
    assert "Summary metrics" not in page and "Sweep points: sweep" in page
    assert "<th>training.checkpoint.write_time</th>" in page
    assert "<td>30s</td>" in page and "<td>120s</td>" in page  # as the sweep was given, not 30.0 and 120.0


def test_report_refuses_to_write_among_results(tmp_path, results):
    """``chaossim report RUN -o SWEEP`` would drop PNGs and a report.html among another result's files:
    refused with exit 2, the folder left as it was; the run's own report/ subfolder is fine."""
    sweep = tmp_path / "sweep"
    shutil.copytree(results["sweep"], sweep)
    before = sorted(p.relative_to(sweep) for p in sweep.rglob("*"))
    for target, held in ((sweep, "holds a sweep"), (results["quick"], "holds a run")):
        result = CliRunner().invoke(app, ["report", str(results["quick"]), "-o", str(target)])
        assert result.exit_code == 2 and held in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.relative_to(sweep) for p in sweep.rglob("*")) == before
    assert not (results["quick"] / "report.html").exists()
    page = write_report([results["quick"]], tmp_path / "copy" / "report")
    assert page.exists()


def test_report_includes_series_figures_when_recorded(tmp_path, results):
    """Loss and link utilisation figures appear when the run recorded those series."""
    run = tmp_path / "run"
    shutil.copytree(results["elastic"], run)
    series = series_frame().drop(columns=["run", "replication"])
    pq.write_table(pa_table(series), run / "rep-0" / "series.parquet")
    write_report([run], tmp_path / "report")
    names = {p.name for p in (tmp_path / "report").glob("*.png")}
    assert {"loss-vs-time.png", "loss-vs-tokens.png", "link-utilisation-0.png"} <= names  # a panel per link


def pa_table(frame: pd.DataFrame):
    import pyarrow as pa

    return pa.Table.from_pandas(frame, schema=SERIES_SCHEMA, preserve_index=False)


def test_report_cli_exit_codes(tmp_path, results):
    """``chaossim report``: 0 and the page path; bad input is one line on stderr and exit 2."""
    command = [str(CHAOSSIM)] if CHAOSSIM.exists() else [sys.executable, "-m", "sim.cli"]
    done = subprocess.run([*command, "report", str(results["quick"]), "-o", str(tmp_path / "r")], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "report.html").exists() and "report.html" in done.stdout
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "missing", tmp_path / "empty", tmp_path / "r" / "report.html"):
        result = CliRunner().invoke(app, ["report", str(results["quick"]), str(bad), "-o", str(tmp_path / "r2")])
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {bad}")


def test_learners_are_a_tidy_table(results):
    """learners.parquet: one row per learner group and replication, matching the summaries' totals."""
    run = load_results(results["quick"])
    learners = run.learners
    assert (results["quick"] / "rep-0" / "learners.parquet").exists()
    assert {"run", "replication", "name", "islands", "chips", "downtime_s", "steps", "tokens"} <= set(learners)
    for summary in run.raw:
        mine = learners[learners["replication"] == summary["replication"]]
        assert list(mine["name"]) == [entry["name"] for entry in summary["learners"]]
        assert mine["tokens"].sum() == pytest.approx(summary["tokens"])
        assert mine["chips"].sum() == summary["chips"]


def test_a_quality_sweep_reports_loss_against_goodput_and_loss_per_setting(tmp_path):
    """A sweep with the surrogate on: the report plots final loss against goodput (a dot per seed, a
    ring per setting, axes not clipped) and one loss-over-tokens curve per setting."""
    text = (ROOT / "scenarios" / "sweeps" / "quality-averaging.yaml").read_text()
    scenario = tmp_path / "quality-averaging.yaml"  # its own sweep replaced by a small one
    scenario.write_text(text[: text.index("\nsweep:")] + "\nsweep: {grid: {training.averaging: [rda, mean]}, seeds: [1, 2]}\n")
    plan = plan_sweep(scenario, ["duration=1h"])
    folder = run_sweep(plan, tmp_path / "sweep", SerialExecutor()).folder
    r = load_results(folder)
    rows = r.summaries.assign(setting=r.summaries["training.averaging"])
    assert rows["final_loss"].notna().all() and len(rows) == 4
    ax = figures.loss_vs_goodput(rows, axes(), "setting")
    assert legend_texts(ax) == ["rda", "mean"] and len(ax.lines) == 4  # per setting: dots, then its ring
    assert sum(len(line.get_xdata()) for line in ax.lines[::2]) == 4
    low, high = ax.get_ylim()
    assert low <= rows["final_loss"].min() and high >= rows["final_loss"].max()
    ax = figures.loss_per_setting(r.series, rows, axes(), "setting")
    assert legend_texts(ax) == ["rda (2 seeds)", "mean (2 seeds)"] and len(ax.lines) == 4  # every seed drawn
    write_report([folder], tmp_path / "report")
    names = {p.name for p in (tmp_path / "report").glob("*.png")}
    # named by the folder; the final loss is drawn against the factors as goodput is
    assert {"sweep-loss-vs-goodput.png", "sweep-loss-per-setting.png", "sweep-lines-final_loss.png"} <= names


def diverging_sweep(settings: int = 2, seeds: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sweep rows and loss series by hand: every replication settles near 0.3 but the last seed of
    the first setting, which diverges to 1e4 (as a merge without grace can)."""
    t = np.linspace(0, 7200, 30)
    rows, series = [], []
    for point in range(settings):
        for seed in range(1, seeds + 1):
            index = point * seeds + seed - 1
            diverges = point == 0 and seed == seeds
            loss = 2.5 * np.exp(-t / 1e3) + 0.3 + (1e4 * (t / t[-1]) ** 8 if diverges else 0.0)
            rows.append({"index": index, "setting": f"s{point}", "seed": seed, "status": "ok",
                         "goodput": 0.9, "final_loss": loss[-1]})
            series += [(x, "loss", "decoupled_diloco", v, x * 1e7, index) for x, v in zip(t, loss)]
    return pd.DataFrame(rows), pd.DataFrame(series, columns=[*SERIES_SCHEMA.names, "index"])


def test_loss_per_setting_draws_every_seed_and_a_divergence_on_a_log_axis():
    """No seed is left out (the one that diverges is not the lowest), one legend entry per setting,
    and a loss spanning decades is drawn on a log axis so the settled curves stay apart."""
    rows, series = diverging_sweep()
    ax = figures.loss_per_setting(series, rows, axes(), "setting")
    assert len(ax.lines) == 4 and max(line.get_ydata().max() for line in ax.lines) > 1e3
    assert legend_texts(ax) == ["s0 (2 seeds)", "s1 (2 seeds)"]
    assert ax.get_yscale() == "log" and "log scale" in ax.get_ylabel()
    assert figures.loss_vs_goodput(rows, axes(), "setting").get_yscale() == "log"
    settled, _ = diverging_sweep(settings=1, seeds=1)
    assert figures.loss_vs_goodput(settled, axes(), "setting").get_yscale() == "linear"


def test_loss_curves_switch_to_log_only_when_a_loss_spans_decades():
    series = series_frame()
    assert figures.loss_curves(series, axes(), "time").get_yscale() == "linear"
    loss = series["series"] == "loss"
    series.loc[loss & (series["key"] == "sync_dp"), "value"] *= np.linspace(1, 1e5, 25)
    ax = figures.loss_curves(series, axes(), "time")
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "surrogate eval loss (nats, log scale)"


def test_many_settings_keep_distinct_styles_and_a_legend_beside_the_axes():
    """32 settings (averaging x bits x learners): no two share colour and dashes, and the legend
    sits right of the axes instead of covering the curves and running off the figure."""
    rows, series = diverging_sweep(settings=32, seeds=1)
    figure, ax = figures.new_axes(11, 5)
    figures.loss_per_setting(series, rows, ax, "setting")
    styles = {(line.get_color(), line.get_linestyle()) for line in ax.lines}
    assert len(ax.lines) == 32 and len(styles) == 32
    figure.canvas.draw()
    legend, frame = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= frame.x1 and legend.y0 >= 0  # beside the axes, inside the figure


def test_summary_table_counts_each_learners_merges(tmp_path):
    """The report's summary table has a row per learner after learners per merge: how many rounds
    merged it (quorum 1 without grace: the fastest learner in every round, the others in none)."""
    from analysis.report import metrics_table

    folder = tmp_path / "q"
    result = CliRunner().invoke(app, [
        "run", str(ROOT / "scenarios" / "sweeps" / "quality.yaml"), "--no-report", "-o", str(folder), "-q",
        "--set", "duration=1h", "--set", "replications=1", "--set", "surrogate=off",
        "--set", "training.quorum=1", "--set", "training.grace.mode=none"])
    assert result.exit_code == 0, result.output
    run = load_results(folder)
    merges = run.summaries.iloc[0]
    table = metrics_table([run])
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td></tr>", table)
    labels = [label for label, _ in rows]
    at = labels.index("learners per merge (learners)")
    names = ["east", "central", "west", "asia"]
    assert labels[at + 1:at + 5] == [f"rounds merging learner {n} (count)" for n in names]
    counts = [int(value.replace(",", "")) for _, value in rows[at + 1:at + 5]]
    assert counts == [int(merges[f"merges_by_learner.{n}"]) for n in names]
    assert sorted(counts)[:3] == [0, 0, 0] and max(counts) == int(merges["outer_rounds"]) > 0
    # beside goodput, how much of it is work no round merged (the run-end convention): here most of it
    at = labels.index("goodput (fraction of chip-time)") + 1
    assert labels[at] == "useful only by the run-end convention (fraction of chip-time)"
    at_end = float(rows[at][1])
    assert at_end == pytest.approx(merges["useful_at_end_fraction"], abs=1e-4) and at_end > 0.5 * merges["goodput"]


def test_a_std_band_of_a_fraction_stays_inside_zero_and_one():
    """Goodputs 0.90 and 1.00: mean 0.95 +- 0.071 would draw a band to 1.02, a share never measured;
    the band stops at 1 (and the mean line is unchanged)."""
    rows = pd.DataFrame({"training.quorum": [1, 1, 2, 2], "goodput": [0.90, 1.00, 0.97, 0.99],
                         "status": ["ok"] * 4, "seed": [1, 2, 1, 2]})
    ax = figures.sweep_lines(rows, axes(), "training.quorum", "goodput", spread="std")
    band = next(c for c in ax.collections if isinstance(c, PolyCollection))
    ys = np.concatenate([path.vertices[:, 1] for path in band.get_paths()])
    assert ys.max() == pytest.approx(1.0) and ys.min() == pytest.approx(0.95 - np.std([0.9, 1.0], ddof=1))
    assert list(ax.lines[0].get_ydata()) == pytest.approx([0.95, 0.98])


def test_timeline_counts_a_fault_on_several_learners_once(tmp_path):
    """A region outage takes both learners of its region at once: the title counts it as one failure, as
    the run table does, and names the learner hits (one triangle each) apart."""
    from sim.loading import load_scenario
    from sim.runner import run_replication

    scenario = load_scenario(ROOT / "scenarios" / "region-outage.yaml",
                             ["duration=2h", "faults.1.at=30m", "faults.1.duration=1h"])
    summary = run_replication(scenario, 0, tmp_path / "run").summary
    assert summary["failures"]["region_outage"] == 1
    run = load_results(tmp_path / "run")
    ax = figures.timeline(run.timeline, axes(), run.events)
    hits = summary["interruptions"] + summary["absorbed"]
    assert hits > summary["failures_total"]  # the case this test is about
    assert ax.get_title().endswith(f"{summary['failures_total']} failures ({hits} learner hits"
                                   + (f", {summary['absorbed']} absorbed))" if summary["absorbed"] else "))"))
    triangles = sum(len(line.get_xdata()) for line in ax.get_lines() if line.get_marker() == "v")
    assert triangles == hits


def test_loading_a_compare_folder_names_its_variant_folders(tmp_path):
    """load_results on the folder of a compare run (the default run writes one) says which variant
    folders it holds, instead of calling it no results folder."""
    from analysis.load import ResultsError

    (tmp_path / "compare.json").write_text("{}")
    for name in ("sync_dp-restart", "elastic_dp-elastic"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text("{}")
    with pytest.raises(ResultsError, match=r"a compare run; load one of its variant folders \(elastic_dp-elastic, sync_dp-restart\)"):
        load_results(tmp_path)


def test_a_long_timeline_title_wraps():
    """A run labelled by many differing keys gets a title on several lines, none wider than 90
    characters, instead of one line cut off at both edges of the figure."""
    label = ", ".join(f"training.key{i}=value{i}" for i in range(8))
    rows = pd.DataFrame({"group": ["g"], "phase": ["running"], "start_s": [0.0], "end_s": [3600.0],
                         "active_chips": [8], "down_chips": [0], "run": [label], "replication": [0]})
    ax = figures.timeline(rows, axes())
    lines = ax.get_title().splitlines()
    assert len(lines) > 1 and max(map(len, lines)) <= 90
