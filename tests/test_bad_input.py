"""Bad scenario input: one line on stderr naming the file, YAML path and line; exit code 2; no traceback.

Three parts: the hand-written files of ``tests/data/bad`` (through the CLI in-process, typer's
CliRunner, separate stdout and stderr); a generated corpus of a few hundred malformed scenarios built
from the shipped ones (through the loader in-process, a sample through the installed executable);
and the hang classes (alias bombs, deep nesting, huge files and values, tags, absurd costs), each in
a forked child killed after 2 s. ``test_installed_command_end_to_end`` runs the installed executable
as a subprocess for a sample of the files.
"""

from __future__ import annotations

import copy
import multiprocessing
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import CHAOSSIM, ROOT
from typer.testing import CliRunner

from sim.cli import app

DATA = Path(__file__).parent / "data"
BAD = DATA / "bad"
SMALL = DATA / "small.yaml"  # the valid scenario every file in data/bad/ breaks in one way

# file in tests/data/bad -> (YAML path or None, line or None, a phrase saying what was expected)
CASES = {
    "unknown_top_key.yaml": ("sede", 5, "unknown key 'sede'"),
    "unknown_nested_key.yaml": ("workload.mfux", 12, "unknown key 'mfux'"),
    "unknown_fault_key.yaml": ("faults[0].blast_raduis", 23, "expected one of: name"),
    "bandwidth_in_bytes.yaml": ("topology.default_link.bandwidth", 11, "bits per second"),
    "duration_in_parsecs.yaml": ("faults[0].mtbf", 21, "expected a duration"),
    "negative_duration.yaml": ("duration", 5, "greater than 0"),
    "negative_outage.yaml": ("faults[1].duration", 27, "greater than or equal to 0"),
    "empty_topology.yaml": ("topology.regions", 7, "at least 1 item"),
    "zero_chips.yaml": ("topology.regions[0].islands[0].chips", 10, "greater than 0"),
    "unknown_chip.yaml": ("topology.regions[0].islands[0].chip", 10, "unknown chip 'v7z'"),
    "unknown_fault_kind.yaml": ("faults[1]", 23, "unknown kind 'island_explosion'"),
    "missing_fault_kind.yaml": ("faults[1]", 23, "required key 'kind' is missing"),
    "unknown_target_island.yaml": ("faults[1].target", 25, "unknown island(s) ['isl-7']"),
    "wrong_type.yaml": ("seed", 4, "valid integer"),
    "missing_topology.yaml": ("topology", None, "required key is missing"),
    "bad_indentation.yaml": (None, 15, "malformed YAML"),
    "tab_indentation.yaml": (None, 15, "malformed YAML"),
    "duplicate_key.yaml": (None, 5, "duplicate key"),
    "list_document.yaml": (None, None, "expected a mapping"),
    "empty_document.yaml": (None, None, "expected a mapping"),
}


def chaossim(*args: str) -> SimpleNamespace:
    """Run the CLI in-process; an exception other than the CLI's own exit would be a traceback."""
    result = CliRunner().invoke(app, list(args))
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    stderr = result.stderr + ("Traceback: " + repr(result.exception) if crashed else "")
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=stderr)


def executable(*args: str) -> subprocess.CompletedProcess:
    """Run the installed ``chaossim`` executable."""
    return subprocess.run([str(CHAOSSIM), *args], check=False, capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *phrases: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip("\n").split("\n")
    assert len(lines) == 1, result.stderr
    line = lines[0]
    for phrase in phrases:
        assert phrase in line, (phrase, line)
    return line


def test_every_bad_file_is_in_the_table():
    """Each file in tests/data/bad has a row in CASES (and the other way round)."""
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(CASES)


def test_the_base_file_is_valid():
    """tests/data/small.yaml, which every bad file breaks, validates and runs."""
    result = chaossim("validate", str(SMALL))
    assert result.returncode == 0 and result.stderr == ""


@pytest.mark.parametrize("name", sorted(CASES))
def test_run_bad_file(name, tmp_path):
    """``chaossim run BAD`` prints one line with the file, YAML path, line and expectation, exit 2."""
    path, line, phrase = CASES[name]
    result = chaossim("run", str(BAD / name), "-q", "-o", str(tmp_path / "out"))
    phrases = [name, phrase] + ([f": {path}"] if path else [])
    if line:
        phrases.append(f"(line {line}")
    assert_one_line_error(result, *phrases)
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()  # nothing written for a bad scenario


def test_validate_all_bad_files_at_once():
    """The ``chaossim validate`` executable checks every file given: one line per bad file, in order, exit 2."""
    names = sorted(CASES)
    result = executable("validate", *(str(BAD / n) for n in names), str(SMALL))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip("\n").split("\n")
    assert len(lines) == len(names)
    for name, line in zip(names, lines):
        path, number, phrase = CASES[name]
        assert name in line and phrase in line, line
        assert path is None or path in line
        assert number is None or f"(line {number}" in line
    assert "small.yaml: ok" in result.stdout


def test_missing_file(tmp_path):
    """A file that does not exist: one line, exit 2."""
    missing = tmp_path / "nope.yaml"
    assert_one_line_error(chaossim("run", str(missing), "-q"), "nope.yaml", "no such file")
    assert_one_line_error(chaossim("validate", str(missing)), "nope.yaml", "no such file")


def test_folder_instead_of_file(tmp_path):
    """A folder where a scenario file is expected: one line, exit 2."""
    folder = tmp_path / "scenario.yaml"
    folder.mkdir()
    assert_one_line_error(chaossim("run", str(folder), "-q"), "scenario.yaml", "is a folder")
    assert_one_line_error(chaossim("validate", str(folder)), "scenario.yaml", "is a folder")


def test_an_overridden_value_is_not_blamed_on_the_line_it_replaced(tmp_path):
    """``--seed -1`` or ``--set duration=abc``: the bad value came from the command line, so the
    error does not send the user to the line of the file that holds the good one."""
    text = SMALL.read_text().splitlines()
    for option, key in ((["--set", "duration=abc"], "duration"), (["--seed", "-1"], "seed")):
        line = next(n for n, row in enumerate(text, 1) if row.startswith(f"{key}:"))
        result = chaossim("run", str(SMALL), *option, "-q", "-o", str(tmp_path / "out"))
        assert_one_line_error(result, "small.yaml", f"small.yaml: {key} (from --set)")  # (--seed is one)
        assert f"(line {line})" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "assignment, phrases",
    [
        ("seed", ["--set 'seed'", "expected dotted.key=value"]),
        ("topology.regions.3.name=x", ["--set topology.regions.3.name", "expected an index below 1"]),
        ("name.first=x", ["--set name.first", "is a value, not a section"]),
        ("seed=abc", ["small.yaml: seed (from --set): ", "valid integer"]),  # line 4 holds the file's seed, not 'abc'
        ("training.nonsense=1", ["training.nonsense", "unknown key 'nonsense'"]),
        ("surrogate.model=big", ["surrogate.model", "'mlp', 'markov' or 'off'"]),
        ("surrogate=mlp", ["small.yaml: surrogate (from --set): ", "expected a mapping such as {model: mlp}", "got 'mlp'"]),
        ("training.grace=5s", ["training.grace", "expected a mapping of the keys mode, gamma, ema_alpha, fixed, max, got '5s'"]),
        ("training.outer=[0.7]", ["training.outer", "expected a mapping of the keys lr, momentum, anchor, got a list"]),
        ("surrogate=[mlp]", ["small.yaml: surrogate (from --set): ", "expected a mapping such as {model: mlp}", "got ['mlp']"]),
        ("topology.regions.0.islands.0.chips=-8", ["topology.regions[0].islands[0].chips (from --set)", "greater than 0"]),
        ("training.nonsense.deeper=1", ["training.nonsense (from --set)", "unknown key 'nonsense'"]),
    ],
)
def test_bad_set(assignment, phrases, tmp_path):
    """A bad ``--set`` is a one-line error naming the file and the key, exit 2."""
    for command in (["run", "-q", "-o", str(tmp_path / "out")], ["validate"]):
        result = chaossim(command[0], str(SMALL), "--set", assignment, *command[1:])
        assert_one_line_error(result, "small.yaml", *phrases)


def test_bad_trace_at_run_time(tmp_path):
    """A trace CSV naming an unknown island is bad input (caught at load): one line naming the CSV and its line."""
    (tmp_path / "t.csv").write_text("time,target,duration,kind\n1h,isl-0,1h,chip_failure\n2h,isl-9,1h,chip_failure\n")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        SMALL.read_text().split("faults:")[0] + "faults:\n  - {name: tr, kind: trace, file: t.csv}\n"
    )
    result = chaossim("run", str(scenario), "-q", "-o", str(tmp_path / "out"))
    line = assert_one_line_error(result, "s.yaml", "t.csv:3", "column target: not an island")
    assert "isl-9" not in line  # the content of a file that did not parse is never echoed


def test_installed_command_end_to_end(tmp_path):
    """The installed executable: a bad file, a missing file and a bad --set each give one line and exit 2."""
    out = str(tmp_path / "out")
    assert_one_line_error(
        executable("run", str(BAD / "zero_chips.yaml"), "-q", "-o", out),
        "zero_chips.yaml: topology.regions[0].islands[0].chips (line 10)",
    )
    assert_one_line_error(executable("run", str(tmp_path / "nope.yaml"), "-q", "-o", out), "nope.yaml", "no such file")
    assert_one_line_error(executable("run", str(SMALL), "--set", "seed", "-q", "-o", out), "small.yaml", "--set 'seed'")
    assert not (tmp_path / "out").exists()


def load_error(*assignments: str) -> str:
    """The one-line ScenarioError of the small valid scenario with ``assignments`` applied."""
    from sim.loading import ScenarioError, apply_override, read_yaml, validate

    data = read_yaml(Path(__file__).parent / "data" / "small.yaml")
    for assignment in assignments:
        apply_override(data, assignment)
    with pytest.raises(ScenarioError) as err:
        validate(data, "small.yaml")
    return str(err.value)


def test_unknown_key_lists_the_keys_of_that_fault_kind():
    """An unknown key inside an island_outage lists island_outage's keys, not another kind's."""
    message = load_error("faults=[{name: o, kind: island_outage, at: 1h, bogus: 3}]")
    assert "faults[0].bogus" in message and "unknown key 'bogus'" in message
    assert "duration" in message and "blast_radius" not in message and "lifetime" not in message


@pytest.mark.parametrize(
    ("assignments", "phrases"),
    [
        (["duration=inf"], ["duration", "finite"]),
        (["faults=[{name: x, kind: region_outage, target: {islands: [isl]}, at: 1h}]"],
         ["faults[0].target.islands", "region_outage faults cannot select islands"]),
        (["faults=[{name: x, kind: island_outage, target: {links: [r0~r1]}, at: 1h}]"],
         ["faults[0].target.links", "cannot select links"]),
        (["training.policy=decoupled_diloco", "training.quorum=99"], ["training.quorum", "exceeds"]),
    ],
)
def test_cross_field_problems_are_caught_at_load(assignments, phrases):
    """Values no single field can judge (an infinite run, a selector of the wrong kind, a quorum above
    the number of learners) are rejected before anything runs, with their YAML path."""
    message = load_error(*assignments)
    assert all(p in message for p in phrases), message


def test_decoupled_with_a_quorum_the_islands_can_meet_is_valid():
    """The quorum check rejects only what the topology cannot meet: quorum 1 is fine."""
    from sim.loading import apply_override, read_yaml, validate

    data = read_yaml(Path(__file__).parent / "data" / "small.yaml")
    apply_override(data, "training.policy=decoupled_diloco")
    assert validate(data, "small.yaml").training.quorum == 1


def test_a_fractional_chip_count_names_the_value_once():
    """pydantic's own 'got ...' wording is kept and the value is shown once, not a second 'got'."""
    message = load_error("topology.regions.0.islands.0.chips=1.5")
    assert message.count(" got ") == 1 and "(1.5)" in message


# --------------------------------------------------------------------------------------------- corpus
#
# A generated corpus of malformed scenarios, built from the shipped ones the way a fuzzer would: every
# leaf set to a wrong type, a boolean, a negative, a zero (where only positive values mean anything), a
# huge value (where size is cost) and a bad unit; every list that must not be empty emptied, every list
# of named things duplicated; every reference renamed. Each case must be refused by the loader with one
# line naming the file and the YAML path. The loader is called in-process (a case takes milliseconds);
# test_corpus_through_the_command runs a sample through the command.


SHIPPED = sorted((Path(__file__).resolve().parents[1] / "scenarios").rglob("*.yaml"))

# keys whose value must be > 0 (zero is a mistake); everywhere else zero is a legitimate setting
# (latency 0, spares 0, jitter 0, a bound max 0, ...)
POSITIVE = {
    "chips", "count", "mtbf", "every", "bandwidth", "params", "tokens_per_step", "step_time", "mfu",
    "peak_flops", "inner_steps", "fragments", "quorum", "replications", "bytes_per_value", "lr", "inner_lr",
    "round_timeout", "median", "mean", "dim", "hidden", "batch", "resolution", "max_steps_per_learner", "bits",
    "interval", "classes", "factor", "ema_alpha", "sigma", "shape",
}
# keys where a huge value is a huge cost: the loader must refuse it (the ceiling), not run it
HUGE = {
    "chips": 10**15, "count": 10**6, "replications": 10**9, "every": "1ns", "mtbf": "1ns",
    "max_steps_per_learner": 10**12, "eval_every": "1ns",
}
TOP_HUGE = {"duration": "1000000y"}
# bounds may be any real number: negatives there are legitimate
FREE_NUMBERS = {"min", "max"}
NAMED_LISTS = {"regions", "islands", "faults"}  # duplicating one repeats its names
NON_EMPTY_LISTS = {"regions", "islands"}
UNIT = re.compile(r"^\d[\d.]*(e\d+)?\s*[A-Za-zµ/]+$")


def path_text(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def leaves(node, path=()):
    """(path, value) of every scalar leaf and every list, outside the sweep section."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not path and key == "sweep":
                continue
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        yield path, node
        for index, value in enumerate(node):
            yield from leaves(value, (*path, index))
    else:
        yield path, node


def mutations(data):
    """(kind, path, new value) for one shipped scenario."""
    for path, value in leaves(data):
        key = next((p for p in reversed(path) if isinstance(p, str)), "")
        if isinstance(value, list):
            if key in NON_EMPTY_LISTS:
                yield "emptied", path, []
            if key in NAMED_LISTS and value:
                yield "duplicated", path, [copy.deepcopy(value[0]), *value]
            continue
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        unit = isinstance(value, str) and bool(UNIT.match(value))
        yield "wrong type", path, {"bogus": 1}
        if not isinstance(value, bool):  # a switch set to true is no mistake
            yield "boolean", path, True
        if (numeric or unit) and key not in FREE_NUMBERS and str(value).strip("0.") != "":
            yield "negative", path, -value if numeric else f"-{value}"
        if (numeric or unit) and key in POSITIVE and (key != "duration" or len(path) == 1):
            yield "zero", path, 0
        if numeric or unit:
            yield "bad unit", path, f"{value}parsec"
        huge = TOP_HUGE.get(key) if len(path) == 1 else HUGE.get(key)
        if huge is not None:
            yield "huge", path, huge
        reference = key == "chip" or "target" in path or key == "between" or path[-2:] == ("syncer", "region")
        if reference and isinstance(value, str) and value != "all" and key != "mode":
            yield "renamed", path, f"{value}-renamed"
        if key == "file":
            yield "renamed", path, f"{value}.renamed"


def pattern(path: tuple) -> tuple:
    return tuple("*" if isinstance(p, int) else p for p in path)


def build_corpus() -> list[tuple[str, Path, str, tuple, object]]:
    """Every distinct (leaf pattern, kind) across the shipped scenarios, first occurrence kept."""
    from sim.loading import read_yaml

    seen, cases = set(), []
    for file in SHIPPED:
        data = read_yaml(file)
        for kind, path, value in mutations(data):
            if (pattern(path), kind) in seen:
                continue
            seen.add((pattern(path), kind))
            cases.append((f"{file.name}:{path_text(path)}:{kind}", file, kind, path, value))
    return cases


CORPUS = build_corpus()


def mutated(file: Path, path: tuple, value):
    from sim.loading import read_yaml

    data = read_yaml(file)
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = copy.deepcopy(value)
    return data


def test_the_corpus_is_large_and_covers_every_class():
    """At least 150 cases, every mutation kind present, most shipped scenarios contributing."""
    kinds = {case[2] for case in CORPUS}
    assert len(CORPUS) >= 150, len(CORPUS)
    assert kinds == {"wrong type", "boolean", "negative", "zero", "bad unit", "huge", "emptied", "duplicated", "renamed"}
    assert len({case[1] for case in CORPUS}) >= len(SHIPPED) // 2  # leaves first met in many files


@pytest.mark.parametrize("case", CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus_case_is_refused_in_one_line(case):
    """A malformed scenario is one ScenarioError line naming the file and the YAML path (or, for a huge
    cost, the term that makes it huge and how to lift the ceiling)."""
    from sim.compare import variants_of
    from sim.loading import ScenarioError

    _, file, kind, path, value = case
    data = mutated(file, path, value)
    with pytest.raises(ScenarioError) as info:
        variants_of(data, file, allow_large=False)  # as `chaossim run` loads: each compared variant too
    message = str(info.value)
    # a bad value in compare: is an error of the variant it makes, at the key it sets
    variant = path[0] == "compare" and message.startswith(f"{file} [compare variant {path[2]}: ")
    assert "\n" not in message and (message.startswith(f"{file}: ") or variant), message
    assert "Traceback" not in message and "function-after" not in message and "literal[" not in message
    if kind == "huge":
        assert "--allow-large" in message or "limit" in message, message
        return
    # the message names the mutated place, or its list item or parent (a renamed island is an error
    # of the fault's target, a duplicated region one of the region list)
    named = [path_text(path[:k]) for k in range(len(path), max(len(path) - 3, 0), -1)] + ([path[1]] if variant else [])
    assert any(re.search(re.escape(p) + r"(?=[ .\[:(]|$)", message) for p in named), (named, message)


# --------------------------------------------------------------------------------------------- hang classes
#
# Inputs that would hang the loader or exhaust memory. Each runs in a forked child that is killed after
# 2 s: a regression fails the test instead of hanging the suite.


HANG_TIMEOUT_S = 2.0


def refused_within(seconds: float, fn, *args) -> str:
    """The one-line ScenarioError that ``fn(*args)`` raises, which must come within ``seconds``."""
    from sim.loading import ScenarioError

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child():
        try:
            fn(*args)
            send.send(("accepted", ""))
        except ScenarioError as err:
            send.send(("refused", str(err)))
        except BaseException as err:  # noqa: BLE001 - reported to the parent as a failure
            send.send(("crashed", f"{type(err).__name__}: {str(err)[:200]}"))

    process = context.Process(target=child)
    process.start()
    try:
        if not receive.poll(seconds):
            pytest.fail(f"not refused within {seconds} s")
        status, message = receive.recv()
    finally:
        process.kill()
        process.join()
    assert status == "refused", (status, message)
    assert "\n" not in message
    return message


def bomb(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for k in range(1, levels):
        lines.append(f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "name, text, phrase",
    [
        ("billion-laughs.yaml", bomb(), "expands to"),
        ("fan-out.yaml", "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nb: &b [" + ", ".join(["*a"] * 1_000) + "]\n"
                         "c: [" + ", ".join(["*b"] * 900) + "]\n", "expands to"),
        ("many-items.yaml", "at: [" + ", ".join(["1h"] * 10_000) + "]\n", "list items"),
        ("deep-flow.yaml", "name: " + "[" * 20_000 + "]" * 20_000 + "\n", "nesting deeper"),
        ("deep-block.yaml", "".join(" " * (2 * k) + f"k{k}:\n" for k in range(300)) + " " * 600 + "x: 1\n", "nesting deeper"),
        ("deep-dashes.yaml", "name:\n" + "- " * 20_000 + "x\n", "nesting deeper"),
        ("long-value.yaml", "name: x\ndescription: " + "a" * 90_000 + "\n", "characters"),
        ("python-tag.yaml", "name: !!python/object/apply:os.system ['true']\n", "!!python/object/apply:os.system"),
        ("custom-tag.yaml", "seed: !secret 3\n", "the YAML tag !secret"),
        ("binary.yaml", "name: !!binary aGVsbG8=\n", "!!binary"),
    ],
)
def test_hostile_yaml_is_refused_fast(tmp_path, name, text, phrase):
    """Alias bombs, deep nesting, huge values and YAML tags: one line naming the file, within 2 s."""
    from sim.loading import load_scenario

    path = tmp_path / name
    path.write_text(text)
    message = refused_within(HANG_TIMEOUT_S, load_scenario, path)
    assert message.startswith(f"{path}") and phrase in message, message


def test_a_50_mb_file_is_refused_by_its_size(tmp_path):
    """A 50 MB scenario file is refused before it is read."""
    from sim.loading import load_scenario

    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(50_000_000)
    assert "larger than the limit" in refused_within(HANG_TIMEOUT_S, load_scenario, path)


def test_tags_are_refused_not_executed(tmp_path):
    """A !!python tag that would run a command if constructed is refused, and the command never runs."""
    from sim.loading import load_scenario

    marker = tmp_path / "ran"
    path = tmp_path / "s.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    refused_within(HANG_TIMEOUT_S, load_scenario, path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "sets, phrase",
    [
        (["topology.regions.0.islands.0.chips=1e15"], "--allow-large"),
        (["duration=1000000y"], "--allow-large"),
        (["faults.1.every=1ns"], "faults[1]"),
        (["replications=1e9"], "replications"),
        (["topology.regions.0.islands.0.count=1e9"], "islands"),
        (["faults.0.lifetime=weibull", "faults.0.shape=2", "topology.regions.0.islands.0.chips=1e9"], "memory"),
        # lognormal lifetimes keep a next-failure time per chip too: 10^10 chips would need 80 GB
        (["faults.0.lifetime=lognormal", "faults.0.mtbf=1e9h", "topology.regions.0.islands.0.chips=1e10"], "memory"),
    ],
)
def test_absurd_cost_is_refused_fast_with_the_estimate(sets, phrase):
    """10^15 chips, a million years, every 1ns, 10^9 replications: refused within 2 s, the estimate named."""
    from sim.loading import load_scenario

    message = refused_within(HANG_TIMEOUT_S, load_scenario, SMALL, sets, False)
    assert "small.yaml" in message and phrase in message, message


def test_validate_with_allow_large_answers_at_once_at_any_scale():
    """``validate --allow-large`` on 10^12 chips (a failure every 50 ns, a round every few ns, Weibull
    ages for every chip) still checks the hypothesis metrics, on a short probe with memoryless lifetimes."""
    import time

    from sim.checks import bound_problems
    from sim.loading import load_scenario

    scenario = load_scenario(ROOT / "scenarios" / "quickstart.yaml", [
        "topology.regions.0.islands.0.chips=1e12", "compare={}", "training.policy=elastic_dp",
        "training.on_failure=elastic", "hypotheses=[{metric: goodptu, min: 0.5}]",
        "faults.0.lifetime=weibull", "faults.0.shape=1.5"], allow_large=True)  # 96 TB of Weibull ages
    start = time.perf_counter()
    ((_, _, error),) = bound_problems(scenario)
    assert time.perf_counter() - start < 2.0
    assert "unknown metric 'goodptu'" in error


def test_out_of_memory_past_a_lifted_ceiling_is_one_line(monkeypatch, capsys):
    """A run that runs out of memory: one line, exit 2, saying whether --allow-large let it past the ceiling."""
    import sim.cli

    def exhausted():
        raise MemoryError("Unable to allocate 2.91 TiB for an array with shape (400000000000,)")

    monkeypatch.setattr(sim.cli, "app", exhausted)
    for argv, says in ((["chaossim", "run", "s.yaml", "--allow-large"], "the ceiling --allow-large lifted"),
                       # without the flag the estimate let it through: the message does not claim a flag
                       (["chaossim", "run", "s.yaml"], "more than the memory estimate foresaw")):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_:
            sim.cli.main()
        assert exit_.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("error: out of memory (Unable to allocate 2.91 TiB") and says in line, line


def test_allow_large_lifts_the_ceiling():
    """The same scenario loads with allow_large (the run would then be the user's explicit choice)."""
    from sim.loading import load_scenario

    assert load_scenario(SMALL, ["replications=1e9"], allow_large=True).replications == 10**9


def test_a_billion_seeds_and_a_million_points_are_refused_fast():
    """--seeds 0-999999999 is counted before it is expanded; a grid of 3.2M points is refused before validation."""
    from sim.sweep import parse_factors, plan_sweep

    assert "1,000,000,000 seeds" in refused_within(HANG_TIMEOUT_S, _sweep_seeds, "0-999999999")
    grid = parse_factors([f"training.checkpoint.write_time={','.join(f'{k}s' for k in range(1, 21))}"] +
                         [f"faults.{f}.duration={','.join(f'{k}m' for k in range(1, 21))}" for f in (1,)] +
                         [f"training.recovery.{key}={','.join(f'{k}s' for k in range(1, 21))}" for key in ("detect", "reschedule", "reload")],
                         "--grid")
    assert "3,200,000 points" in refused_within(HANG_TIMEOUT_S, plan_sweep, SMALL, (), grid, None, None, False)


def _sweep_seeds(text: str):
    from sim.sweep import parse_seeds

    return parse_seeds(text)


def test_the_command_refuses_cost_and_names_allow_large(tmp_path):
    """Through the installed command: one line, exit 2, nothing written, and --allow-large is named."""
    out = tmp_path / "out"
    line = assert_one_line_error(executable("run", str(SMALL), "--set", "duration=1000000y", "-q", "-o", str(out)),
                                 "small.yaml", "--allow-large", "estimated work")
    assert "ceiling" in line and not out.exists()
    result = executable("sweep", str(SMALL), "--seeds", "0-999999999", "-q", "-o", str(out))
    assert_one_line_error(result, "--seeds", "seeds")
    assert not out.exists()


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its size, mtime and bytes."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CORPUS[7::len(CORPUS) // 4][:4], ids=lambda c: c[0])
def test_corpus_through_the_command(case, tmp_path):
    """A sample of the corpus through the installed ``chaossim run``: exit 2, one line naming the file and
    path, no traceback, and the output folder (holding an earlier run) unchanged."""
    from ruamel.yaml import YAML

    _, file, _, path, value = case
    folder = tmp_path / "scenarios"
    shutil.copytree(file.parent, folder)  # trace files sit beside their scenario
    bad = folder / file.name
    with bad.open("w") as handle:
        YAML(typ="rt").dump(mutated(file, path, value), handle)
    out = tmp_path / "earlier-run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    before = snapshot(out)
    line = assert_one_line_error(executable("run", str(bad), "-q", "-o", str(out)), str(bad))
    assert path_text(path[:2]) in line, line
    assert snapshot(out) == before


# --------------------------------------------------------------------------------------------- classes


@pytest.mark.parametrize(
    "sets, phrases",
    [
        (["topology.regions.0.islands.0.chips=true"], ["chips", "got the boolean true"]),
        (["seed=true"], ["seed", "boolean"]),
        (["replications=true"], ["replications", "boolean"]),
        (["workload.mfu=true"], ["workload.mfu", "boolean"]),
        (["training.policy=decoupled_diloco", "training.quorum=true"], ["training.quorum", "boolean"]),
        (["topology.default_link.bandwidth=0Gbps"], ["default_link.bandwidth", "link_partition"]),
        (["topology.intra_region.bandwidth=0"], ["intra_region.bandwidth", "bandwidth > 0"]),
        (["faults=[{name: d, kind: link_degradation, at: 1h, bandwidth: 0}]"], ["faults[0].bandwidth", "link_partition"]),
        (["training.policy=streaming_diloco", "training.fragments=1", "training.overlap=30"],
         ["training.overlap", "must not exceed inner_steps (24)"]),
        (["workload.params=1e20"], ["workload.params", "longer than the whole run"]),
        (["workload.step_time=0s"], ["workload.step_time", "greater than 0"]),
        (["training.checkpoint.interval=often"], ["training.checkpoint.interval", "'young' or 'daly' or a duration"]),
    ],
)
def test_wrong_types_and_meaningless_values(sets, phrases):
    """Booleans are not numbers, a link carries something, overlap fits in H, a step fits in the run;
    a union field's message names the field and the alternatives, never pydantic's member labels."""
    message = load_error(*sets)
    assert all(p in message for p in phrases), message
    assert "function-after" not in message and "literal[" not in message and "Input should be 'auto'" not in message


@pytest.mark.parametrize(
    "args, phrases",
    [
        (["run", "--seed", "abc", "x.yaml"], ["run: Invalid value for '--seed'"]),
        (["frobnicate"], ["No such command 'frobnicate'"]),
        (["run", str(SMALL), "--bogus"], ["No such option: --bogus"]),
        (["sweep", str(SMALL), "--workers", "0"], ["--workers", "greater than or equal to 1"]),
        (["bandwidth", "--params", "twelve"], ["--params", "expected a count"]),
        (["bandwidth", "--target", "1.5"], ["--target", "(0, 1]"]),
        (["bandwidth", "--target", "0"], ["--target", "(0, 1]"]),
    ],
)
def test_usage_errors_are_one_line(args, phrases):
    """Typer's multi-line usage panels become one ``error:`` line, exit 2, naming the option."""
    assert_one_line_error(chaossim(*args), *phrases)


def test_usage_errors_are_one_line_from_the_executable():
    """The installed command prints the same single line (no rich panel, no traceback)."""
    assert_one_line_error(executable("run", "--seed", "abc", str(SMALL)), "--seed")


def _scenario_with_trace(folder: Path, file: str) -> Path:
    scenario = folder / "s.yaml"
    scenario.write_text(SMALL.read_text().split("faults:")[0] + f"faults:\n  - {{name: tr, kind: trace, file: '{file}'}}\n")
    return scenario


def test_trace_paths_stay_in_the_scenario_folder_unless_allowed(tmp_path):
    """A trace outside the scenario's folder (by ../ or an absolute path) is refused before it is read;
    --trace-dir allows a folder."""
    from sim.loading import ScenarioError, load_scenario

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "t.csv").write_text("time,target\n1h,isl-0\n")
    folder = tmp_path / "scenario"
    folder.mkdir()
    for name in ("../elsewhere/t.csv", str(elsewhere / "t.csv")):
        with pytest.raises(ScenarioError, match="outside the scenario's folder") as info:
            load_scenario(_scenario_with_trace(folder, name))
        assert "faults[0].file" in str(info.value)
    assert load_scenario(_scenario_with_trace(folder, str(elsewhere / "t.csv")), trace_dirs=[elsewhere]).faults
    line = assert_one_line_error(chaossim("validate", str(_scenario_with_trace(folder, "../elsewhere/t.csv"))),
                                 "s.yaml", "faults[0].file")
    assert "--trace-dir" in line


@pytest.mark.parametrize("content", [b"time,target\n\xff\xfe\x00\x01secret", b"time,target\n1h,secret\x00data\n"])
def test_binary_traces_are_one_line_without_their_content(tmp_path, content):
    """A trace that is not UTF-8 text, or holds NUL bytes: one line naming the file, never its bytes."""
    (tmp_path / "t.csv").write_bytes(content)
    line = assert_one_line_error(chaossim("validate", str(_scenario_with_trace(tmp_path, "t.csv"))), "t.csv")
    assert "secret" not in line


def test_a_sweep_over_trace_files_resolves_them_from_the_scenario_folder(tmp_path):
    """A factor naming traces in a subfolder plans (the point's label holds a '/'); one leading outside is refused."""
    from sim.loading import ScenarioError
    from sim.sweep import plan_sweep

    (tmp_path / "traces").mkdir()
    for name in ("a.csv", "b.csv"):
        (tmp_path / "traces" / name).write_text("time,target\n1h,isl-0\n")
    scenario = _scenario_with_trace(tmp_path, "traces/a.csv")
    plan = plan_sweep(scenario, grid={"faults.0.file": ["traces/a.csv", "traces/b.csv"]}, seeds=[1])
    assert [p["faults"][0]["file"] for p in plan.scenarios] == [str(tmp_path / "traces" / n) for n in ("a.csv", "b.csv")]
    with pytest.raises(ScenarioError, match="outside the scenario's folder"):
        plan_sweep(scenario, grid={"faults.0.file": ["traces/a.csv", "../../etc/passwd"]}, seeds=[1])
