"""Scenario configuration: typed, frozen, validated once at load time.

A scenario is a TOML file parsed into :class:`Scenario`. Every bias and every
dynamic is a parameter that can be switched off (set to 0 / false). Invalid
input raises :class:`ConfigError` whose message is one line naming the field
and what is allowed, e.g. ``cascade.slate_size: must be <= cascade.k_retrieve
(100), got 200``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simulator.cascade.ranker_registry import ranker_kinds
from simulator.evaluation_config import EvaluationConfig, check_estimators
from simulator.world_config import AttentionConfig, ClickMotiveConfig, MiniAppConfig, SessionConfig, WeekendConfig


class ConfigError(ValueError):
    """A one-line, user-facing configuration error naming the field."""


class _Section(BaseModel):
    # strict: no bool or str -> number coercion (`n_categories = true`, `k_retrieve = "20"` are errors);
    # ints are still accepted for floats, and TOML arrays become tuples in scenario_from_dict
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)


class WorldConfig(_Section):
    """Sizes and the generative model of users, items and true relevance."""

    n_users: int = Field(2000, ge=10, le=50_000_000, description="initial live users")
    n_items: int = Field(2000, ge=10, le=50_000_000, description="initial live items")
    n_categories: int = Field(20, ge=1, le=10_000, description="category / intent prototypes")
    n_creators: int = Field(200, ge=1, description="creators; each creates in one category")
    d_true: int = Field(16, ge=2, le=512, description="dimension of the true latent space")
    category_skew: float = Field(0.5, ge=0, le=5, description="Zipf exponent of category sizes")
    creator_skew: float = Field(0.6, ge=0, le=5, description="Zipf exponent of creator output")
    item_spread: float = Field(0.6, ge=0, le=10, description="item latent noise around its prototype")
    user_noise: float = Field(0.3, ge=0, le=10, description="user latent noise around its intents")
    intents_per_user: float = Field(2.0, ge=1, le=50, description="mean number of intents a user holds")
    intent_weight: float = Field(0.5, ge=0, le=10, description="extra weight of the current intent in relevance")
    quality_std: float = Field(0.5, ge=0, le=10, description="std of the item quality term")
    relevance_scale: float = Field(3.0, gt=0, le=100, description="slope of the logistic true relevance")
    relevance_bias: float = Field(-3.0, ge=-50, le=50, description="intercept of the logistic true relevance")
    activity_sigma: float = Field(1.0, ge=0, le=5, description="lognormal sigma of user activity (0: all equal)")
    attention_sigma: float = Field(0.3, ge=0, le=5, description="lognormal sigma of user attention depth (0: all equal)")
    conformity_mean: float = Field(0.1, ge=0, le=1, description="mean conformity to observed popularity (0: off)")
    weekend_segment_share: float = Field(0.3, ge=0, le=1, description="share of weekend-heavy users")
    mini_app_share: float = Field(0.0, ge=0, le=1, description="share of items and requests in the mini-app domain")
    promoted_share: float = Field(0.02, ge=0, le=1, description="share of items behind a promotion portal")
    popularity_confounding: float = Field(1.0, ge=0, le=10, description="how strongly quality drives prior popularity")
    prior_clicks: float = Field(5.0, ge=0, le=1e6, description="mean prior click count seeding popularity counters")


class FeatureConfig(_Section):
    """What the platform observes and how noisy it is."""

    modality_dim: int = Field(16, ge=1, le=1024, description="dimension of each of the three modality vectors")
    modality_noise: tuple[float, float, float] = Field((0.1, 0.2, 0.4), description="noise std of visual, acoustic, text vectors")
    profile_dim: int = Field(8, ge=1, le=1024, description="dimension of the noisy user profile")
    profile_noise: float = Field(0.2, ge=0, le=100, description="noise std of the user profile")
    history_len: int = Field(20, ge=1, le=1000, description="length of the click history given with each request")

    @model_validator(mode="after")
    def _noise_non_negative(self) -> FeatureConfig:
        if any(n < 0 for n in self.modality_noise):
            raise ValueError("features.modality_noise: each value must be >= 0")
        return self


class UserModelConfig(_Section):
    """How a simulated user examines a slate, clicks and engages."""

    position_bias: float = Field(0.7, ge=0, le=10, description="examination = (1 + pos)^-position_bias (0: off)")
    examination_curve: tuple[float, ...] = Field((), description="explicit examination probability per slot (overrides position_bias)")
    promo_click_prob: float = Field(0.2, ge=0, le=1, description="click prob of a promoted item through its portal (0: off)")
    portal_entry_share: float = Field(0.1, ge=0, le=1, description="share of requests entering through a marketing portal")
    duration_sigma: float = Field(0.5, ge=0, le=5, description="lognormal sigma of item duration (seconds, median 60)")

    @model_validator(mode="after")
    def _curve_in_unit_interval(self) -> UserModelConfig:
        if any(not 0.0 <= p <= 1.0 for p in self.examination_curve):
            raise ValueError("user_model.examination_curve: every value must be in [0, 1]")
        return self


class DynamicsConfig(_Section):
    """Ground-truth dynamics; each one is off at 0."""

    drift_rate: float = Field(0.05, ge=0, le=1, description="step of a user's latent toward consumed items per round")
    boredom_rate: float = Field(0.1, ge=0, le=10, description="relevance penalty per finished item of a category")
    boredom_decay: float = Field(0.7, ge=0, le=1, description="share of boredom kept from one round to the next")
    churn_rate: float = Field(0.0, ge=0, le=1, description="leave probability per round of a dissatisfied user")
    churn_threshold: float = Field(0.05, ge=0, le=1, description="satisfaction (finished per visit) below which users may churn")
    new_users_per_round: int = Field(0, ge=0, description="users joining each round")
    new_items_per_round: int = Field(20, ge=0, description="items arriving each round")
    item_lifetime_rounds: float = Field(0.0, ge=0, le=1e9, description="mean item lifetime in rounds (0: items never retire)")
    weekend_shift: float = Field(2.0, ge=1, le=100, description="activity multiplier of weekend-heavy users on weekends (1: off)")


class CascadeConfig(_Section):
    """Retrieval -> ranking -> exposure."""

    k_retrieve: int = Field(100, ge=1, le=10_000, description="candidates recalled per request (K_r)")
    slate_size: int = Field(10, ge=1, description="items exposed per request (S)")
    ranker: str = Field("deepfm", description="the platform ranker: deepfm, dcn, noisy-oracle or a kind added by register_ranker")
    ranker_noise: float = Field(0.1, ge=0, le=10, description="noise std of the noisy-oracle ranker")
    ranker_epochs: int = Field(1, ge=0, le=100, description="ranker epochs per retrain")
    ranker_dim: int = Field(16, ge=1, le=512, description="ranker field embedding size")
    stochastic: bool = Field(False, description="sample recall and exposure (Gumbel-top-k) and log inclusion probabilities")
    retrieve_temperature: float = Field(0.5, gt=0, le=100, description="Gumbel-top-k temperature on retrieval scores")
    expose_temperature: float = Field(0.1, gt=0, le=100, description="Gumbel-top-k temperature on ranking scores")
    candidate_pool: float = Field(2.0, ge=1, le=100, description="stochastic recall samples from the top pool*K_r items")
    propensity_samples: int = Field(256, ge=8, le=100_000, description="Monte-Carlo draws estimating inclusion probabilities")
    exploration_share: float = Field(0.0, ge=0, le=1, description="share of requests served uniformly at random")
    legacy_popularity_bias: float = Field(
        0.3, ge=0, le=10, description="warm-start legacy recall samples items with P ~ (1 + clicks)^bias (0: uniform)"
    )

    @model_validator(mode="after")
    def _ranker_known(self) -> CascadeConfig:
        if self.ranker not in ranker_kinds():
            raise ValueError(f"cascade.ranker: must be one of {', '.join(ranker_kinds())}, got {self.ranker!r}")
        return self

    @model_validator(mode="after")
    def _slate_fits(self) -> CascadeConfig:
        if self.slate_size > self.k_retrieve:
            raise ValueError(f"cascade.slate_size: must be <= cascade.k_retrieve ({self.k_retrieve}), got {self.slate_size}")
        return self


class TimelineConfig(_Section):
    """When things happen (SimPy). A round is one retraining cycle."""

    rounds: int = Field(20, ge=1, le=100_000, description="rounds after the warm start")
    round_hours: float = Field(24.0, gt=0, le=24 * 365, description="hours per round (retrain every round)")
    slice_hours: float = Field(4.0, gt=0, description="traffic batch length in hours")
    train_delay_hours: float = Field(4.0, ge=0, description="hours the stale model keeps serving after a retrain")
    requests_per_round: int = Field(2000, ge=1, le=100_000_000, description="mean requests per round")
    daily_profile: tuple[float, ...] = Field((0.4, 0.6, 1.0, 1.2, 1.6, 1.2), description="relative traffic per slice of a day")
    weekend_traffic: float = Field(1.3, gt=0, le=100, description="traffic multiplier on days 5 and 6 of each week")
    warm_start_rounds: int = Field(1, ge=1, le=100, description="rounds of logging-policy traffic before round 0")

    @model_validator(mode="after")
    def _slices_fit(self) -> TimelineConfig:
        if self.slice_hours > self.round_hours:
            raise ValueError(f"timeline.slice_hours: must be <= timeline.round_hours ({self.round_hours}), got {self.slice_hours}")
        if self.train_delay_hours >= self.round_hours:
            raise ValueError(
                f"timeline.train_delay_hours: must be < timeline.round_hours ({self.round_hours}), got {self.train_delay_hours}"
            )
        if not self.daily_profile or any(w < 0 for w in self.daily_profile) or sum(self.daily_profile) <= 0:
            raise ValueError("timeline.daily_profile: must be non-negative weights with a positive sum")
        if self.least_requests() < 1:
            raise ValueError(
                f"timeline.requests_per_round: every round needs at least one request; {self.requests_per_round} "
                "spread over the daily_profile and weekend_traffic leaves a round empty; raise it"
            )
        return self

    def least_requests(self) -> int:
        """A lower bound of the requests of any round (slice volumes as in simulator.world.traffic)."""
        n_slices = int(self.round_hours / self.slice_hours)
        mean_w = sum(self.daily_profile) / len(self.daily_profile)
        weekly = min(1.0, self.weekend_traffic)
        per_slice = self.requests_per_round / n_slices * weekly / mean_w
        prof = self.daily_profile
        return min(sum(int(round(per_slice * prof[(start + i) % len(prof)])) for i in range(n_slices)) for start in range(len(prof)))


class TrainingConfig(_Section):
    """Defaults every learning agent and the ranker share (agents may override)."""

    window_rounds: int = Field(3, ge=1, le=10_000, description="rounds of log in the training view")
    epochs: int = Field(1, ge=0, le=1000, description="epochs per retrain (one pass: the window overlaps from round to round)")
    batch_size: int = Field(1024, ge=1, le=1_000_000, description="minibatch size")
    lr: float = Field(0.01, gt=0, le=10, description="learning rate")
    embedding_dim: int = Field(32, ge=2, le=1024, description="retrieval embedding size")
    pretrain_fits: int = Field(3, ge=1, le=1000, description="fits on the warm-start log before round 0 (pretraining on history)")


class MetricsConfig(_Section):
    """How truth and log metrics are computed."""

    panel_size: int = Field(500, ge=1, description="evaluation users (fixed panel)")
    k_values: tuple[int, ...] = Field((50, 100, 200), description="K for true_/logged_ recall, precision, ndcg (slate size is added)")
    rank_k_values: tuple[int, ...] = Field(
        (10, 20), description="N for the after-the-ranker metrics ranked_true_ndcg/map/hr@N (N > cascade.k_retrieve is skipped)"
    )
    block_size: int = Field(256, ge=1, le=1_000_000, description="users per block when scanning the catalogue")
    long_tail_share: float = Field(0.8, gt=0, lt=1, description="the least popular share of items that is the long tail")
    gap_negatives: int = Field(100, ge=1, le=100_000, description="sampled unexposed true negatives per panel user")
    homogenisation_users: int = Field(200, ge=2, le=100_000, description="active users sampled for pairwise Jaccard")


class Scenario(_Section):
    """One named, validated configuration of world, biases, dynamics, cascade and timeline."""

    name: str = Field("custom", min_length=1, max_length=100, description="run name; runs/<name> when --out is omitted")
    description: str = ""
    world: WorldConfig = WorldConfig()
    features: FeatureConfig = FeatureConfig()
    user_model: UserModelConfig = UserModelConfig()
    dynamics: DynamicsConfig = DynamicsConfig()
    cascade: CascadeConfig = CascadeConfig()
    timeline: TimelineConfig = TimelineConfig()
    training: TrainingConfig = TrainingConfig()
    metrics: MetricsConfig = MetricsConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    session: SessionConfig = SessionConfig()
    attention: AttentionConfig = AttentionConfig()
    click_motive: ClickMotiveConfig = ClickMotiveConfig()
    mini_app: MiniAppConfig = MiniAppConfig()
    weekend: WeekendConfig = WeekendConfig()
    agents: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-agent config overrides")

    @model_validator(mode="after")
    def _cross_checks(self) -> Scenario:
        if "/" in self.name or "\\" in self.name or "\0" in self.name or self.name.strip() in ("", ".", ".."):
            raise ValueError(f"name: must be a plain name (no '/', '\\', '..'; it names runs/<name>), got {self.name!r}")
        k, live = self.cascade.k_retrieve, self.world.n_items
        if k > live:
            raise ValueError(f"cascade.k_retrieve: must be <= world.n_items ({live}), got {k}")
        if any(kv < 1 or kv > live for kv in self.metrics.k_values):
            raise ValueError(f"metrics.k_values: each K must be in [1, world.n_items={live}], got {list(self.metrics.k_values)}")
        if any(n < 1 for n in self.metrics.rank_k_values):
            raise ValueError(f"metrics.rank_k_values: each N must be >= 1, got {list(self.metrics.rank_k_values)}")
        if self.metrics.panel_size > self.world.n_users:
            raise ValueError(f"metrics.panel_size: must be <= world.n_users ({self.world.n_users}), got {self.metrics.panel_size}")
        if self.world.n_creators > self.world.n_items:
            raise ValueError(f"world.n_creators: must be <= world.n_items ({self.world.n_items}), got {self.world.n_creators}")
        check_estimators(self)
        return self

    # --- derived sizes (capacities fix the id space for the whole run) ---
    @property
    def item_capacity(self) -> int:
        """Item ids ever used: initial items plus all arrivals (warm start included)."""
        return self.world.n_items + self.dynamics.new_items_per_round * self.total_rounds

    @property
    def user_capacity(self) -> int:
        """User ids ever used: initial users plus all newcomers."""
        return self.world.n_users + self.dynamics.new_users_per_round * self.total_rounds

    @property
    def total_rounds(self) -> int:
        return self.timeline.warm_start_rounds + self.timeline.rounds

    @property
    def eval_ks(self) -> tuple[int, ...]:
        """The K values every top-K metric reports: the slate size plus metrics.k_values."""
        return tuple(sorted({self.cascade.slate_size, *self.metrics.k_values}))

    @property
    def rank_ks(self) -> tuple[int, ...]:
        """The N values of the after-the-ranker metrics: the slate size plus metrics.rank_k_values (<= k_retrieve)."""
        return tuple(sorted({self.cascade.slate_size, *(n for n in self.metrics.rank_k_values if n <= self.cascade.k_retrieve)}))

    def with_overrides(self, **sections: dict[str, Any]) -> Scenario:
        """Return a validated copy with some section fields replaced, e.g. ``timeline={"rounds": 3}``."""
        data = self.model_dump()
        for section, values in sections.items():
            if section not in data:
                raise ConfigError(f"{section}: unknown section; allowed: {', '.join(data)}")
            if isinstance(data[section], dict):
                data[section] = {**data[section], **values}
            else:
                data[section] = values
        return scenario_from_dict(data)


def _one_line(err: ValidationError, prefix: str = "") -> str:
    """Turn pydantic's error into one line: ``field.path: what is allowed, got X``."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-after"))
    msg = first["msg"].removeprefix("Value error, ")
    head = msg.split(":", 1)[0]
    if ":" in msg and head and " " not in head:
        return msg  # our own validators already name the field
    got = first.get("input")
    got_txt = "" if isinstance(got, dict) else f", got {got!r}"
    return f"{prefix}{loc}: {msg}{got_txt}"


def _tuples(value: Any, depth: int = 0) -> Any:
    """TOML arrays as tuples (the strict schema takes tuples); agent overrides are checked by the agents' registry."""
    if isinstance(value, dict):
        return {k: (v if depth == 0 and k == "agents" else _tuples(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v, depth + 1) for v in value)
    return value


def scenario_from_dict(data: dict[str, Any]) -> Scenario:
    """Validate a dict (as read from TOML) into a Scenario or raise a one-line ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"scenario: must be a table of sections, got {type(data).__name__}")
    try:
        return Scenario.model_validate(_tuples(data))
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None


def load_scenario_file(path: str | Path) -> Scenario:
    """Load and validate a scenario TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"scenario: no such file {str(path)!r}")
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise ConfigError(f"scenario: cannot read {str(path)!r} ({err.strerror or type(err).__name__})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"scenario: {path.name} is not UTF-8 text (byte {err.start}); a scenario is a TOML file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"scenario: {path.name} is not valid TOML ({str(err).splitlines()[0]})") from None
    data.setdefault("name", path.stem)
    return scenario_from_dict(data)
