"""Issue 17 item 1: every bad input is one line `error: <field>: <allowed>`, exit 2, nothing written.

In-process (``scenarios.cli.main``) for speed; the memory available is fixed at 16 GiB so that the
size checks do not depend on the machine. A hypothesis fuzz over the scenario schema and the flags
asserts exit 0 or exit 2 with one line, never a traceback, never a partial run directory.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scenarios.sizing as sizing
from scenarios.cli import main
from tests.conftest import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _fixed_machine(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sizing, "_available_bytes", lambda: 16 << 30)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _toml_value(v) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return json.dumps(v)


def _write_scenario(path: Path, data: dict) -> Path:
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, values in data.items():
        if isinstance(values, dict):
            lines.append(f"[{section}]")
            for k, v in values.items():
                if isinstance(v, dict):
                    lines += [f"[{section}.{k}]", *(f"{kk} = {_toml_value(vv)}" for kk, vv in v.items())]
                else:
                    lines.append(f"{k} = {_toml_value(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _tiny(**sections: dict) -> dict:
    data = json.loads(json.dumps(TINY))
    for section, values in sections.items():
        if isinstance(values, dict):
            data[section] = {**data.get(section, {}), **values}
        else:
            data[section] = values
    return data


def _cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args), prog_name="cascadesim")
        code = 0
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


BAD_SCENARIOS = [
    (_tiny(world={"n_categories": True}), "world.n_categories: Input should be a valid integer, got True"),
    (_tiny(cascade={"k_retrieve": "20"}), "cascade.k_retrieve: Input should be a valid integer, got '20'"),
    (_tiny(cascade={"stochastic": 1}), "cascade.stochastic: Input should be a valid boolean"),
    (_tiny(dynamics={"item_lifetime_rounds": 1e19}), "dynamics.item_lifetime_rounds: Input should be less than or equal to 1000000000"),
    (_tiny(timeline={"requests_per_round": 1}), "timeline.requests_per_round: every round needs at least one request"),
    (_tiny(world={"n_users": 50_000_000}), "world.n_users: this run needs about"),
    (_tiny(timeline={"requests_per_round": 100_000_000}), "timeline.requests_per_round: this run needs about"),
    (_tiny(agents={"bc": {"lr": 1e30}}), "agents.bc.lr: must be in (0, 10], got 1e+30"),
    (_tiny(agents={"bc": {"nope": 1}}), "agents.bc.nope: unknown option"),
    (_tiny(name="../../x"), "name: must be a plain name"),
    (_tiny(name="/etc/x"), "name: must be a plain name"),
    (_tiny(world={"relevance_scale": math.nan}), "world.relevance_scale:"),
]


@pytest.mark.parametrize(("data", "message"), BAD_SCENARIOS)
def test_bad_scenario_is_one_line_and_writes_nothing(data: dict, message: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # --out omitted: runs/<name> would be created here
    scenario = _write_scenario(tmp_path / "s.toml", data)
    code, _, err = _cli(capsys, "run", "--scenario", str(scenario), "--agents", "random,bc", "--rounds", "1")
    assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_unreadable_scenario_files(tmp_path: Path, capsys) -> None:
    cases = {"garbage.toml": os.urandom(256) + b"\xff", "latin1.toml": 'name = "caf\xe9"\n'.encode("latin-1"), "bad.toml": b"[world\n"}
    expected = {"garbage.toml": "is not UTF-8 text", "latin1.toml": "is not UTF-8 text", "bad.toml": "is not valid TOML"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        code, _, err = _cli(capsys, "run", "--scenario", str(tmp_path / name), "--out", str(tmp_path / "never"))
        assert code == 2 and f"error: scenario: {name} {expected[name]}" in err and err.count("\n") == 1, err
    (tmp_path / "dir.toml").mkdir()
    code, _, err = _cli(capsys, "run", "--scenario", str(tmp_path / "dir.toml"), "--out", str(tmp_path / "never"))
    assert code == 2 and err.startswith("error: scenario: no such file") and not (tmp_path / "never").exists()


def test_bad_out_paths(tmp_path: Path, capsys) -> None:
    scenario = _write_scenario(tmp_path / "s.toml", _tiny())
    (tmp_path / "afile").write_text("keep me")
    cases = [("", "--out: must name a directory, got ''"), (str(tmp_path / "afile"), "is a file, not a directory"),
             (str(tmp_path / "afile" / "sub"), "which is a file, not a directory")]
    for out, message in cases:
        code, _, err = _cli(capsys, "run", "--scenario", str(scenario), "--agents", "random", "--rounds", "1", "--out", out)
        assert code == 2 and message in err and err.count("\n") == 1, err
    assert (tmp_path / "afile").read_text() == "keep me"


def test_unwritable_out(tmp_path: Path, capsys) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode:
        ro.chmod(0o555)  # enough when not root
    try:
        scenario = _write_scenario(tmp_path / "s.toml", _tiny())
        code, _, err = _cli(capsys, "run", "--scenario", str(scenario), "--agents", "random", "--rounds", "1", "--out", str(ro / "run"))
        assert code == 2 and err.startswith("error: --out: cannot") and err.count("\n") == 1, err
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True, check=False)


def test_a_scenario_without_clicks_explains_its_nan_metrics(tmp_path: Path, capsys) -> None:
    data = _tiny(world={"relevance_bias": -50.0, "conformity_mean": 0.0}, user_model={"promo_click_prob": 0.0})
    scenario = _write_scenario(tmp_path / "s.toml", data)
    code, _, err = _cli(capsys, "run", "--scenario", str(scenario), "--agents", "random", "--rounds", "1", "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "note:" in err and "NaN" in err and "no clicks" in err


def test_smallest_traffic_runs(tmp_path: Path, capsys) -> None:
    scenario = _write_scenario(tmp_path / "s.toml", _tiny(timeline={"requests_per_round": 2}))
    out = str(tmp_path / "run")
    code, _, err = _cli(capsys, "run", "--scenario", str(scenario), "--agents", "random,bc", "--rounds", "2", "--out", out)
    assert code == 0, err


# ----- fuzz ---------------------------------------------------------------------------------------

_ODD = st.one_of(
    st.booleans(), st.text(max_size=4), st.sampled_from([-1, 0, 1, 2, 3, 10**19, -(10**19), 2**63]),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.5, 0.5, 1e30, 1e-30]), st.just([1, 2]), st.just([]),
)
_FIELDS = [(section, field) for section, values in TINY.items() if isinstance(values, dict) for field in values] + [
    ("cascade", "ranker"), ("cascade", "stochastic"), ("dynamics", "item_lifetime_rounds"), ("timeline", "daily_profile"),
    ("features", "modality_noise"), ("user_model", "examination_curve"), ("metrics", "rank_k_values"), ("world", "relevance_scale"),
]


def _near(value):
    """Small valid-looking values near the tiny scenario's: runs stay short."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return st.just(value)
    return st.sampled_from([value, type(value)(value * 2), type(value)(value // 2 if isinstance(value, int) else value / 2)])


@st.composite
def _inputs(draw) -> tuple[dict, list[str], bool]:
    data = _tiny()
    for section, field in draw(st.lists(st.sampled_from(_FIELDS), max_size=3)):
        base = TINY.get(section, {}).get(field, 1)
        data.setdefault(section, {})[field] = draw(st.one_of(_ODD, _near(base)))
    if draw(st.booleans()):
        data["agents"] = {draw(st.sampled_from(["bc", "random", "nope"])): {draw(st.sampled_from(["lr", "epochs", "x"])): draw(_ODD)}}
    flags = ["--agents", draw(st.sampled_from(["random", "popular,oracle", "", "nope", "random,random", ",", "bc"]))]
    flags += ["--rounds", draw(st.sampled_from(["1", "0", "-2", "x", "1.5"])), "--seeds", draw(st.sampled_from(["1", "2", "0", "-1", "y"]))]
    flags += draw(st.sampled_from([[], ["--device", "tpu"], ["--device", "cpu"], ["--keep-checkpoints", "some"], ["--save-logs"]]))
    return data, flags, draw(st.booleans())


def _check_fuzz_case(case: tuple[dict, list[str], bool], capsys) -> None:
    data, flags, garbage = case
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    scenario = folder / "s.toml"
    if garbage:
        scenario.write_bytes(json.dumps(data).encode()[::-1] + b"\xfe")
    else:
        _write_scenario(scenario, data)
    out = folder / "run"
    code, _, err = _cli(capsys, "run", "--scenario", str(scenario), "--out", str(out), *flags)  # a traceback fails the test
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, err
        if out.exists():  # only a failure after the run started: then a committed, resumable run directory
            assert json.loads((out / "manifest.json").read_text())["format"] == 2 and not list(out.rglob("*.tmp"))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=_inputs())
def test_fuzz_scenario_and_flags(case, capsys) -> None:
    _check_fuzz_case(case, capsys)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=_inputs())
def test_fuzz_scenario_and_flags_long(case, capsys) -> None:
    _check_fuzz_case(case, capsys)


# ----- issue 14 items 2, 3, 6: what the command line says ----------------------------------------


def test_bare_command_shows_help_and_exits_0(capsys) -> None:
    code, out, err = _cli(capsys)
    assert code == 0 and err == "" and out.startswith("Usage: cascadesim") and "\n  run " in out


def test_misspelt_names_get_a_suggestion(capsys, tmp_path: Path) -> None:
    code, _, err = _cli(capsys, "run", "--agents", "rnadom", "--out", str(tmp_path / "x"))
    assert code == 2 and "unknown agent 'rnadom' (did you mean 'random'?)" in err
    code, _, err = _cli(capsys, "run", "--scenario", "defualt", "--out", str(tmp_path / "x"))
    assert code == 2 and "unknown preset 'defualt' (did you mean 'default'?)" in err
    code, _, err = _cli(capsys, "run", "--agents", "zzzzzz", "--out", str(tmp_path / "x"))
    assert code == 2 and "did you mean" not in err


def test_list_scenarios_gives_whole_descriptions_and_sizes(capsys) -> None:
    from importlib import resources

    import tomllib

    code, out, _ = _cli(capsys, "list", "scenarios")
    assert code == 0
    for entry in (resources.files("scenarios") / "data").iterdir():
        if entry.name.endswith(".toml"):
            desc = " ".join(tomllib.loads(entry.read_text())["description"].split())
            assert desc in out and "requests/round" in out


def test_progress_lines_without_a_terminal_number_rounds_from_1() -> None:
    import io

    from scenarios.progress import RunProgress

    sink = io.StringIO()
    progress = RunProgress("true_recall@50", tty=False, out=sink)
    tick = progress(4)
    rows = [{"round": 0, "metric": "true_recall@50", "value": 0.25}, {"round": 1, "metric": "true_recall@50", "value": 0.5}]
    progress.loop("bc", 3)
    for r in range(2):
        tick()
        progress.round_done("bc", 3, r, 2, rows)
    lines = sink.getvalue().splitlines()
    assert lines[0].startswith("round 1/2  bc seed 3  true_recall@50 0.2500  [1/4 loop-rounds")
    assert lines[1].startswith("round 2/2  bc seed 3  true_recall@50 0.5000  [2/4 loop-rounds") and len(lines) == 2


def test_threads_knob_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    from scenarios.progress import choose_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("CASCADESIM_THREADS", "2")
    assert choose_threads(5) == 5 and choose_threads(None) == 2
    monkeypatch.delenv("CASCADESIM_THREADS")
    assert choose_threads(None) == 3


def test_run_prints_a_header_and_the_checkpoint_size(tmp_path: Path, capsys) -> None:
    scenario = _write_scenario(tmp_path / "s.toml", _tiny())
    out = tmp_path / "run"
    args = ["--scenario", str(scenario), "--agents", "random", "--rounds", "1", "--out", str(out), "--threads", "1"]
    code, stdout, err = _cli(capsys, "run", *args)
    assert code == 0, err
    head = "tiny: 300 users x 400 items, 240 requests/round; 1 agent(s) [random] x 1 seed(s) x 1 round(s); 1 torch thread(s)"
    assert stdout.startswith(f"{head}; -> {out}")
    assert "round 1/1  random seed 0  true_recall@20" in stdout  # the headline K: the largest below K_r = 50 and "after round 1 of 1" in stdout
    size = sum(p.stat().st_size for p in (out / "checkpoints").glob("*.pt")) / 2**20
    assert f"checkpoints: {size:.1f} MiB kept (--keep-checkpoints last)" in stdout
