"""Scenario validation: every invalid field gives one line naming the field and what is allowed."""

from __future__ import annotations

import pytest

from scenarios.presets import list_scenarios, load_scenario
from simulator.config import ConfigError, Scenario, scenario_from_dict

BAD = [
    ({"world": {"n_users": 0}}, "world.n_users"),
    ({"world": {"n_items": -5}}, "world.n_items"),
    ({"world": {"conformity_mean": float("nan")}}, "world.conformity_mean"),
    ({"world": {"activity_sigma": -1.0}}, "world.activity_sigma"),
    ({"world": {"bogus": 1}}, "world.bogus"),
    ({"cascade": {"slate_size": 300, "k_retrieve": 100}}, "cascade.slate_size"),
    ({"cascade": {"k_retrieve": 5000}}, "cascade.k_retrieve"),
    ({"cascade": {"ranker": "xgboost"}}, "cascade.ranker"),
    ({"cascade": {"exploration_share": 1.5}}, "cascade.exploration_share"),
    ({"timeline": {"train_delay_hours": 30.0}}, "timeline.train_delay_hours"),
    ({"timeline": {"rounds": 0}}, "timeline.rounds"),
    ({"timeline": {"daily_profile": [-1.0, 2.0]}}, "timeline.daily_profile"),
    ({"metrics": {"panel_size": 10**7}}, "metrics.panel_size"),
    ({"metrics": {"k_values": [0]}}, "metrics.k_values"),
    ({"user_model": {"examination_curve": [1.0, 1.5]}}, "user_model.examination_curve"),
    ({"features": {"modality_noise": [0.1, -1.0, 0.2]}}, "features.modality_noise"),
]


@pytest.mark.parametrize(("data", "field"), BAD)
def test_invalid_field_is_one_line_naming_it(data: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        scenario_from_dict(data)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(field), msg


def test_defaults_are_valid_and_frozen() -> None:
    sc = Scenario()
    assert sc.eval_ks == (10, 50, 100, 200)
    with pytest.raises(Exception):
        sc.world.n_users = 5  # type: ignore[misc]


def test_capacities_cover_all_arrivals() -> None:
    sc = scenario_from_dict({"dynamics": {"new_items_per_round": 7, "new_users_per_round": 2}, "timeline": {"rounds": 4, "warm_start_rounds": 1}})
    assert sc.item_capacity == sc.world.n_items + 7 * 5
    assert sc.user_capacity == sc.world.n_users + 2 * 5


@pytest.mark.parametrize("name", ["default", "popularity-trap", "heavy-ssb"])
def test_presets_load_and_describe_themselves(name: str) -> None:
    sc = load_scenario(name)
    assert sc.name == name
    assert len(sc.description) > 80
    assert name in list_scenarios()


def test_unknown_preset_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"scenario: unknown preset 'nope'; allowed: (\S+, )*default, "):
        load_scenario("nope")


def test_scenario_by_path(tmp_path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[world]\nn_users = 50\nn_items = 300\nn_creators = 10\n[metrics]\npanel_size = 20\n')
    sc = load_scenario(str(path))
    assert sc.name == "mine" and sc.world.n_users == 50
    path.write_text("[world\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(str(path))


def test_with_overrides_validates() -> None:
    sc = Scenario().with_overrides(timeline={"rounds": 3})
    assert sc.timeline.rounds == 3
    with pytest.raises(ConfigError, match="timeline.rounds"):
        Scenario().with_overrides(timeline={"rounds": -1})
