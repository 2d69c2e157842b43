"""The divergence guard (simulator.guard) and how the command line reports divergence: one line, exit 2."""

from __future__ import annotations

import math
import signal

import pytest
import torch

import scenarios.experiment as experiment
from scenarios.cli import main
from simulator.guard import DivergenceError, check_training
from tests.test_resume_kill import _toml


def test_finite_training_passes() -> None:
    w = torch.nn.Parameter(torch.ones(3))
    check_training(torch.tensor(0.69), [w], who="bc", round=2, hint="agents.bc.lr")
    check_training(1e6, who="bc", round=2, hint="agents.bc.lr")  # the bound itself is allowed


@pytest.mark.parametrize(
    ("loss", "params", "says"),
    [
        (torch.tensor(math.nan), [], "loss is nan"),
        (torch.tensor([1.0, math.inf]), [], "loss is inf"),
        (8.9e8, [], "loss 8.9e+08 > 1e+06"),  # the lr = 1e6 run
        (0.5, [torch.tensor([1.0, math.nan])], "non-finite parameters"),
    ],
)
def test_divergence_is_one_line_naming_agent_round_and_hyperparameter(loss, params, says: str) -> None:
    with pytest.raises(DivergenceError) as info:
        check_training(loss, params, who="bc", round=7, hint="agents.bc.lr")
    message = str(info.value)
    assert message.startswith("bc: training diverged in round 7 (") and says in message and message.endswith("; lower agents.bc.lr")
    assert "\n" not in message


@pytest.mark.parametrize(
    "error",
    [
        DivergenceError("bc: training diverged in round 0 (loss is nan); lower agents.bc.lr"),
        FloatingPointError("bc: training loss became nan (NaN/inf); lower the learning rate"),
    ],
)
def test_the_command_line_reports_divergence_in_one_line(error: Exception, tmp_path, capsys, monkeypatch) -> None:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def diverging(loop, r: int) -> None:
        raise error

    monkeypatch.setattr(experiment, "run_round", diverging)
    scenario = _toml(tmp_path / "tiny.toml")
    try:
        main(["run", "--scenario", str(scenario), "--agents", "random", "--rounds", "1", "--out", str(tmp_path / "run")])
        code = 0
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: {error}\n"


@pytest.mark.parametrize("name", ["bc", "sampled-softmax", "ss-a", "multi-clrec", "damcar"])
def test_every_trainer_family_stops_on_divergence_naming_agent_round_and_knob(name: str) -> None:
    """One agent per shared trainer (exposure pairs, sequence softmax, GMM negatives, multi-interest, adaptation):
    a parameter poisoned with NaN makes the next round's fit fail with one line naming the agent, round and lr."""
    from scenarios.experiment import agent_factory
    from simulator.guard import DivergenceError
    from simulator.round import attach_agent
    from simulator.timeline import run_round, warm_started_loop
    from tests.conftest import tiny_scenario

    sc = tiny_scenario()
    loop = warm_started_loop(sc, 0)
    attach_agent(loop, agent_factory(name, sc, 0, torch.device("cpu")), name)
    params = [p for m in _modules(loop.learner) for p in m.parameters() if p.is_floating_point()]
    assert params, name
    with torch.no_grad():
        params[0].view(-1)[0] = float("nan")
    with pytest.raises(DivergenceError, match=rf"^{name}(/\w+)?: training diverged in round 0 \(.*\); lower agents\.{name}\.lr$"):
        run_round(loop, 0)


def _modules(obj: object, depth: int = 3) -> list[torch.nn.Module]:
    """The torch modules an agent holds (its towers), found through its attributes."""
    if isinstance(obj, torch.nn.Module):
        return [obj]
    if depth == 0 or not hasattr(obj, "__dict__"):
        return []
    return [m for value in vars(obj).values() for m in _modules(value, depth - 1)]
