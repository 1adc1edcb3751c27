"""The ``chaossim`` command: run --json, the results folder, validate and run every shipped scenario."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import CHAOSSIM, ROOT
from typer.testing import CliRunner

from sim.checkpointing import daly_interval_s, expected_goodput
from sim.cli import app
from sim.compare import Variant
from sim.loading import load_scenario
from sim.runner import run_replication

SCENARIO_DIR = ROOT / "scenarios"
TOP_SCENARIOS = sorted(SCENARIO_DIR.glob("*.yaml"))
ALL_SCENARIOS = sorted(SCENARIO_DIR.rglob("*.yaml"))
DESIGN_METRICS = {
    "goodput", "uptime", "global_downtime_s", "chip_time", "chip_time_fraction", "failures", "failures_total",
    "interruptions", "steps", "tokens", "wall_time_s", "events", "events_per_s", "replications", "runs",
}
SHORT_S = 6 * 3600.0  # shipped scenarios are cut to 6 simulated hours to keep the suite fast
SHORT_ROUNDS_S = 1800.0  # the DiLoCo family plays every round: half an hour of it


def cli(*args: str):
    """Run the CLI in-process and return the click Result (stdout and stderr apart)."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_run_quickstart_json(tmp_path):
    """``chaossim run scenarios/quickstart.yaml --json``: three policies on the same failures, one JSON object,
    a folder per variant and a report."""
    out = tmp_path / "qs"
    result = subprocess.run(
        [str(CHAOSSIM), "run", str(SCENARIO_DIR / "quickstart.yaml"), "-o", str(out), "--json", "-q"],
        check=False, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["compared"] == ["training.policy", "training.on_failure"]
    variants = document["variants"]
    assert [(v["policy"], v["on_failure"]) for v in variants] == [
        ("sync_dp", "restart"), ("elastic_dp", "elastic"), ("decoupled_diloco", "restart")]
    for summary in variants:
        assert DESIGN_METRICS <= set(summary)
        assert 0 < summary["goodput"] <= summary["uptime"] <= 1
        assert summary["replications"] == len(summary["runs"]) == 1
        assert summary["chip_time"].keys() == {"useful", "lost", "recovery", "checkpoint", "waiting", "down", "spare"}
        assert summary["tokens"] > 0 and summary["failures"]["chip_failure"] > 0
    # the same seeds inject the same failures into every variant; the strategies make the difference
    assert len({json.dumps(v["failures"]) for v in variants}) == 1
    assert variants[0]["goodput"] < variants[1]["goodput"] < variants[2]["goodput"]
    names = ["compare.json", "decoupled_diloco-restart", "elastic_dp-elastic", "report", "scenario.yaml", "sync_dp-restart"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert (out / "report" / "report.html").exists()
    folder = out / "sync_dp-restart"
    assert json.loads((folder / "summary.json").read_text())["goodput"] == variants[0]["goodput"]
    for rep in ("rep-0",):
        assert {"timeline.parquet", "events.parquet", "summary.json", "rounds.parquet"} <= {p.name for p in (folder / rep).iterdir()}
        timeline = pq.read_table(folder / rep / "timeline.parquet")
        assert timeline.num_rows > 0 and {"group", "phase", "start_s", "end_s"} <= set(timeline.column_names)
        assert pq.read_table(folder / rep / "events.parquet").num_rows > 0
    # the resolved scenarios load back to the same models
    assert load_scenario(out / "scenario.yaml") == load_scenario(SCENARIO_DIR / "quickstart.yaml")
    policy = ["training.policy=sync_dp", "training.on_failure=restart", "compare={}"]
    assert load_scenario(folder / "scenario.yaml") == load_scenario(SCENARIO_DIR / "quickstart.yaml", policy)
    # the report (and `chaossim report DIR`) reads the compare run as its variants, labelled by their values
    from analysis.load import load_many

    labels = ["sync_dp, restart", "elastic_dp, elastic", "decoupled_diloco, restart"]
    assert [r.label for r in load_many([out])] == labels
    page = (out / "report" / "report.html").read_text()
    assert "<th>metric</th>" + "".join(f"<th>{label}</th>" for label in labels) in page
    assert "The runs differ in: <code>training.policy</code>, <code>training.on_failure</code>;" in page
    assert len(list((out / "report").glob("*-timeline.png"))) == 3


def test_run_without_compare(tmp_path):
    """``--set compare={}`` (or a --set on a compared key) plays one setting: the summary at the top level."""
    for extra in (["--set", "compare={}"], ["--set", "training.policy=elastic_dp", "--set", "training.on_failure=elastic"]):
        out = tmp_path / str(len(extra))
        result = cli("run", str(SCENARIO_DIR / "quickstart.yaml"), "-o", str(out), "--json", "--no-report",
                     "--replications", "1", "--set", "duration=1d", *extra)
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert DESIGN_METRICS <= set(summary) and summary["replications"] == 1
        assert sorted(p.name for p in out.iterdir()) == ["rep-0", "scenario.yaml", "summary.json"]
    assert summary["policy"] == "elastic_dp"


def test_run_table_output(tmp_path):
    """Without --json, run prints the summary table, the hypotheses and the results folder."""
    result = cli("run", str(SCENARIO_DIR / "quickstart.yaml"), "-o", str(tmp_path / "o"), "-q",
                 "--replications", "1", "--set", "duration=1d")
    assert result.exit_code == 0
    for word in ("goodput", "uptime", "global downtime", "failures", "tokens", "hypothesis goodput", "results:"):
        assert word in result.stdout


def test_run_without_faults_prints_no_failures(tmp_path):
    """A scenario with ``faults: []`` has no failures to count: the table says so instead of failing."""
    result = cli("run", str(SCENARIO_DIR / "quickstart.yaml"), "-o", str(tmp_path / "o"), "-q",
                 "--set", "duration=2h", "--set", "faults=[]", "--set", "compare={}")
    assert result.exit_code == 0, result.stdout
    assert "failures by kind" in result.stdout and "none" in result.stdout


def test_failed_hypothesis_exits_1(tmp_path):
    """A steady-state hypothesis that fails makes ``run`` exit 1 (the CI gate)."""
    result = cli("run", str(SCENARIO_DIR / "quickstart.yaml"), "-o", str(tmp_path / "o"), "--json",
                 "--replications", "1", "--set", "duration=1d", "--set", "hypotheses=[{metric: goodput, min: 0.999}]")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["hypotheses_passed"] is False


def test_validate_every_scenario():
    """``chaossim validate`` accepts every YAML file under scenarios/ (recursively)."""
    result = cli("validate", *map(str, ALL_SCENARIOS))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count(": ok") == len(ALL_SCENARIOS)


@pytest.mark.parametrize("path", TOP_SCENARIOS, ids=lambda p: p.stem)
def test_every_scenario_runs(path, tmp_path):
    """Each scenarios/*.yaml runs (cut to 6 h, one replication) with a balanced chip-time ledger."""
    scenario = load_scenario(path)
    played = scenario.training.policy.value in ("diloco", "streaming_diloco", "decoupled_diloco")
    duration = min(scenario.duration, SHORT_ROUNDS_S if played else SHORT_S)
    result = cli("run", str(path), "-o", str(tmp_path / "o"), "--json", "-q", "--replications", "1",
                 "--set", f"duration={duration}", "--no-report")
    document = json.loads(result.stdout)
    # exit 1 only for a hypothesis that a shortened run does not meet, never for a crash
    assert result.exit_code == 0 or (result.exit_code == 1 and not document["hypotheses_passed"]), result.stderr
    compared = "variants" in document
    for summary in document.get("variants", [document]):
        total = math.fsum(summary["chip_time"].values())
        assert total == pytest.approx(summary["chips"] * duration, rel=1e-9)
        folder = tmp_path / "o" / (Variant(summary["variant"], {}, None).folder_name if compared else "")
        assert (folder / "rep-0" / "timeline.parquet").exists()


def test_schema_command_prints_json_schema():
    """``chaossim schema`` prints one JSON document describing the scenario sections."""
    result = cli("schema")
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"topology", "workload", "training", "faults", "hypotheses"} <= set(schema["properties"])


# ------------------------------------------------------------------------------------------ shipped sync scenarios


def test_llama3_like_interruptions():
    """llama3-like-sync: 419 +- Poisson unexpected interruptions in 54 days, plus exactly 47 planned ones."""
    scenario = load_scenario(SCENARIO_DIR / "llama3-like-sync.yaml")
    assert scenario.topology.regions[0].islands[0].chips * scenario.topology.regions[0].islands[0].count == 16384
    summary = run_replication(scenario, 0, scenario_dir=SCENARIO_DIR).summary
    mu = 16384 * 54 * 24 / 50700  # = 418.8, Llama 3's 419 unexpected interruptions
    assert abs(summary["failures"]["chip_failure"] - mu) < 4 * math.sqrt(mu)
    assert summary["failures"]["island_outage"] == 47
    # restart costs ~15 min; uptime (running time whose work was kept) stays near Llama 3's "more than
    # 90 % effective training time"
    assert 0.8 < summary["uptime"] < 0.95
    assert summary["hypotheses_passed"]
    # every arrival either interrupted the job or came while it held no chips, fault by fault
    assert summary["interruptions"] + summary["absorbed"] == summary["failures_total"]
    for fault, arrivals in summary["failures_by_fault"].items():
        got = summary["interruptions_by_fault"].get(fault, 0) + summary["absorbed_by_fault"].get(fault, 0)
        assert got == arrivals, fault


def test_million_chips_sync_collapses():
    """million-chips-sync: a failure every ~174 s against a 15 min restart leaves a few % goodput."""
    scenario = load_scenario(SCENARIO_DIR / "million-chips-sync.yaml")
    summary = run_replication(scenario, 0).summary
    assert summary["chips"] == 168 * 6144 == 1_032_192
    M = 50000 * 3600 / summary["chips"]
    assert M == pytest.approx(174.4, abs=0.1)
    mu = 86400 / M
    assert abs(summary["failures"]["chip_failure"] - mu) < 4 * math.sqrt(mu)
    assert summary["goodput"] < 0.05  # vs 0.83 for the 16k-chip job at the same per-chip rate
    assert expected_goodput(daly_interval_s(60, M), 60, 600, 300, M) < 0.05
    assert summary["chip_time_fraction"]["recovery"] > 0.9


def test_aggregate_skips_maps_that_are_not_numbers_in_every_run():
    """Replications whose rejoin lists differ (empty in one, a list in another) aggregate without error."""
    from sim.cli import aggregate

    base = {"scenario": "s", "policy": "p", "goodput": 0.5, "hypotheses_passed": True, "halted": None,
            "chip_time": {"useful": 1.0}}
    runs = [{**base, "rejoin_s": {}}, {**base, "goodput": 0.7, "rejoin_s": {"a": [120.0]}, "chip_time": {"useful": 3.0}}]
    result = aggregate(runs)
    assert result["goodput"] == pytest.approx(0.6) and result["chip_time"] == {"useful": 2.0}
    assert "rejoin_s" not in result and len(result["runs"]) == 2


def test_bandwidth_command_reports_dp_against_streaming():
    """`chaossim bandwidth --json`: DP of a 12B model over 2 Gbit/s between 4 sites needs its 2*(3/4)*24 GB
    ring all-reduce every step (144 s of stall per 1 s step); 4-bit streaming needs far less bandwidth."""
    import json

    from typer.testing import CliRunner

    from sim.cli import app

    result = CliRunner().invoke(app, ["bandwidth", "--params", "12B", "--step-time", "1s", "--bandwidth", "2Gbps",
                                      "--sites", "4", "--json"])
    assert result.exit_code == 0, result.output
    rows = {(r["method"], r["bits"]): r for r in json.loads(result.stdout)}
    assert rows[("dp", 16)]["exposed_comm_s_per_step"] == pytest.approx(144.0, rel=0.01)
    assert rows[("streaming_diloco", 4)]["required_bandwidth_bps"] < rows[("dp", 16)]["required_bandwidth_bps"] / 30
    bad = CliRunner().invoke(app, ["bandwidth", "-H", "24", "-P", "5"])
    assert bad.exit_code == 2 and "multiple of fragments" in bad.output


def test_provenance_and_readable_resolved_scenario(tmp_path):
    """summary.json, scenario.yaml and the report say which chaossim, command, overrides, seeds and date
    made them; the resolved scenario keeps units readable and trace files relative."""
    from sim import __version__

    out = tmp_path / "o"
    path = SCENARIO_DIR / "llama3-like-sync.yaml"
    result = cli("run", str(path), "-o", str(out), "-q", "--set", "duration=1d", "--seed", "11")
    assert result.exit_code in (0, 1), result.output
    record = json.loads((out / "summary.json").read_text())["provenance"]
    assert record["chaossim"] == __version__
    assert record["command"] == f"chaossim run {path} --set duration=1d --seed 11 -o {out}"
    assert record["overrides"] == ["duration=1d"] and record["seeds"] == [11]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", record["date"])
    text = (out / "scenario.yaml").read_text()
    assert text.startswith(f"# chaossim {__version__}, {record['date']}\n# command: {record['command']}\n")
    for readable in ("duration: 1d", "bandwidth: 2Gbps", "latency: 30ms", "params: 405B", "tokens_per_step: 16M"):
        assert readable in text
    assert "2000000000" not in text
    (trace,) = re.findall(r"file: (.*)", text)
    assert not Path(trace).is_absolute() and (out / trace).resolve() == (path.parent / "traces/llama3-planned-maintenance.csv").resolve()
    # the trace lies outside the results folder: loading the copy back names its folder, as --trace-dir does
    again = load_scenario(out / "scenario.yaml", trace_dirs=[path.parent])
    assert again == load_scenario(path, ["duration=1d", "seed=11"])
    page = (out / "report" / "report.html").read_text()
    assert record["command"] in page and record["date"] in page


def test_default_outputs_are_git_ignored():
    """The folders the commands write by default (results/, report/, sweeps/) are ignored by git, at the
    top of the checkout only: scenarios/sweeps/ holds shipped sweep files."""
    ignored = set((ROOT / ".gitignore").read_text().split())
    assert {"/results/", "/report/", "/sweeps/"} <= ignored and "sweeps/" not in ignored


def test_terminal_output_fits_80_columns(tmp_path):
    """The comparison, the hypotheses and the sweep table fit an 80-column terminal, nothing cut off;
    flags show as flags in --help."""
    from rich.cells import cell_len

    env = {"COLUMNS": "80"}
    runs = [
        ["run", str(SCENARIO_DIR / "quickstart.yaml"), "-o", str(tmp_path / "q"), "--set", "duration=1d", "--no-report"],
        ["run", str(SCENARIO_DIR / "four-regions-12b.yaml"), "-o", str(tmp_path / "f"), "--set", "duration=2h",
         "--set", "surrogate=off", "--no-report"],
        ["sweep", str(SCENARIO_DIR / "quickstart.yaml"), "--executor", "serial", "--seeds", "1", "-o", str(tmp_path / "s"),
         "--set", "duration=6h", "--set", "compare={}", "--grid", "topology.regions.0.islands.0.chips=2048,4096",
         "--zip", "training.policy=sync_dp,elastic_dp", "--zip", "training.on_failure=restart,elastic"],
        ["bandwidth", "--params", "12B", "--step-time", "0.1s"],
    ]
    outputs = []
    for args in runs:
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code in (0, 1), result.output
        outputs.append(result.stdout)
        for line in result.stdout.splitlines():
            assert "…" not in line, line
            if line.startswith(("results: ", "report: ")):
                continue  # a path stays on one line, however long, so it can be copied whole
            assert cell_len(line) <= 80, line
    assert "variants of training.policy, training.on_failure" in outputs[0]
    assert "training.policy +" in outputs[2]  # zip partners are one row (folded in its cell)
    help_text = CliRunner().invoke(app, ["run", "--help"], env=env).stdout
    assert re.search(r"--json\s+print the summary", help_text) and "<bool>  print" not in help_text


def test_summary_table_shows_mean_counts_unrounded():
    """Over replications a count is a mean: 1.5 failures and 0.5 interruptions are not shown as 2 and 0."""
    from rich.console import Console

    from sim.cli import summary_table

    result = {"scenario": "s", "policy": "sync_dp", "replications": 2, "goodput": 0.9, "uptime": 0.95,
              "global_downtime_s": 360.0, "failures_total": 1.5, "interruptions": 0.5, "tokens": 1e12,
              "failures": {"chip_failure": 1.5}, "sim_speedup": 1000.0, "events": 100.0, "wall_time_s": 0.1,
              "halted": [], "runs": [{}, {}]}
    console = Console(width=100, record=True)
    console.print(summary_table(result))
    text = console.export_text()
    assert re.search(r"^\s*interruptions\s+0\.5\s*$", text, re.MULTILINE)
    assert re.search(r"^\s*failures\s+1\.5\s*$", text, re.MULTILINE)
    assert "chip_failure 1.5" in text
    assert "(100 events, 0.10 s)" in text
    console = Console(width=100, record=True)
    console.print(summary_table({**result, "events": 0.0}))  # played by the restart loop
    assert "(restart loop, 0.10 s)" in console.export_text()


def test_tables_say_which_outer_round_settings_the_numbers_rest_on():
    """A Decoupled DiLoCo number depends on the schedule, quorum, grace and apply mode (the README's
    schedule comparison): the run table names them under it; variants that differ in them get a row."""
    from rich.console import Console

    from sim.cli import comparison_table, summary_table
    from sim.summary import protocol_settings

    def settings(*sets):
        return protocol_settings(load_scenario(SCENARIO_DIR / "four-regions-12b.yaml", list(sets)).training)

    assert settings() == ("schedule synchronizer, quorum 1, grace adaptive gamma 0.5 max 30s, keep_local, "
                          "no timeout, H 24, P 24, tau 2, 4 bits")
    assert settings("training.schedule=learner", "training.quorum=2", "training.grace.mode=fixed",
                    "training.grace.fixed=5s", "training.apply=overwrite", "training.round_timeout=2m").startswith(
        "schedule learner, quorum 2, grace fixed 5s, overwrite, timeout 2m,")
    assert settings("training.grace.mode=none", "training.grace.max=.inf").startswith("schedule synchronizer, quorum 1, no grace,")
    assert settings("training.grace.max=.inf").startswith("schedule synchronizer, quorum 1, grace adaptive gamma 0.5 uncapped,")
    assert settings("training.policy=streaming_diloco") == "H 24, P 24, tau 2, 4 bits, timeout 10m"
    assert protocol_settings(load_scenario(SCENARIO_DIR / "quickstart.yaml").training) is None  # lockstep

    base = {"scenario": "s", "policy": "decoupled_diloco", "replications": 1, "goodput": 0.9, "failures": {},
            "sim_speedup": 1.0, "events": 1.0, "wall_time_s": 1.0, "halted": [], "runs": [{}]}
    console = Console(width=80, record=True)
    console.print(summary_table({**base, "protocol": "schedule learner, quorum 2"}))
    assert "outer rounds: schedule learner, quorum 2" in console.export_text()
    scenario = load_scenario(SCENARIO_DIR / "four-regions-12b.yaml")
    variants = [{**base, "variant": v, "protocol": f"schedule {v}, quorum 1"} for v in ("synchronizer", "learner")]
    console = Console(width=80, record=True)
    console.print(comparison_table(variants, scenario))
    text = console.export_text()  # what differs as a row, what they share under the table
    assert re.search(r"outer rounds\s+schedule synchronizer\s+schedule learner", text) and "outer rounds: quorum 1" in text
    console = Console(width=80, record=True)
    console.print(comparison_table([{**v, "protocol": "quorum 1"} for v in variants], scenario))
    text = console.export_text()
    assert "outer rounds: quorum 1" in text and not re.search(r"^\s*outer rounds\s", text, re.MULTILINE)


@pytest.mark.parametrize("command", ["run", "sweep", "validate", "export"])
def test_flags_show_as_flags_in_help(command):
    """``--allow-large`` and ``--goodput-log`` take no value: the help does not show one (``<bool>``)."""
    help_text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "120"}).stdout
    flags = [line for line in help_text.splitlines() if re.search(r"--(allow-large|goodput-log|json|quiet)\b", line)]
    assert flags and not [line for line in flags if "<bool>" in line]


@pytest.mark.parametrize("command", ["run", "sweep", "validate", "report"])
def test_help_names_what_each_value_is(command):
    """The help shows what a value looks like (``--set KEY=VALUE``, ``--grid KEY=V1,V2,...``,
    ``--trace-dir DIR``, the FILE argument), never a Python type such as ``<list[str]>`` in its place."""
    help_text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "120"}).stdout
    options = help_text[help_text.index("Options"):]
    assert "list[" not in options and "{file}" not in help_text, help_text
    expected = {"run": ["KEY=VALUE", "DIR", "FILE"], "sweep": ["KEY=V1,V2,...", "KEY=VALUE", "DIR", "FILE"],
                "validate": ["KEY=VALUE", "DIR", "FILE"], "report": ["RESULTS"]}[command]
    assert all(word in help_text for word in expected), help_text
