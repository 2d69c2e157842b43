"""Scenario sections of the optional world features (issue 13): sessions, attention, click motive, mini-app, weekend.

Each section is off by default, and off means the simulator draws exactly what it drew before the feature existed
(new randomness comes from new named streams only). :class:`~simulator.config.Scenario` embeds them as
``[session]``, ``[attention]``, ``[click_motive]``, ``[mini_app]`` and ``[weekend]``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class SessionConfig(_Section):
    """Sessions: runs of consecutive requests by one user that share an intent with some persistence."""

    enabled: bool = Field(False, description="group requests into sessions (off: every request is its own session)")
    mean_length: float = Field(3.0, ge=1, le=100, description="mean requests per session (geometric length)")
    intent_persistence: float = Field(0.8, ge=0, le=1, description="P(a later request keeps the session's intent); else a fresh draw")


class AttentionConfig(_Section):
    """Entry point sets attention: a search/direct or portal entry often ignores the homepage block."""

    enabled: bool = Field(False, description="block-level attention by entry point, noisy dwell and scroll depth")
    search_share: float = Field(0.2, ge=0, le=1, description="share of non-portal requests entering by search/direct")
    browse_attend_prob: float = Field(1.0, ge=0, le=1, description="P(the block is attended) for a homepage browse entry")
    search_attend_prob: float = Field(0.2, ge=0, le=1, description="P(the block is attended) for a search/direct entry")
    portal_attend_prob: float = Field(0.6, ge=0, le=1, description="P(the block is attended) for a portal entry")
    dwell_noise: float = Field(1.2, ge=0, le=5, description="lognormal sigma of the logged viewport dwell per slot")
    scroll_noise: float = Field(1.0, ge=0, le=50, description="std (slots) of the logged scroll depth around the deepest examined slot")


class ClickMotiveConfig(_Section):
    """Click motive made observable only through a noisy post-click engagement signal."""

    enabled: bool = Field(False, description="noisy post-click signal; portal_only becomes the platform's guess")
    engagement_noise: float = Field(0.5, ge=0, le=5, description="lognormal sigma of the logged post-click engagement seconds")
    portal_glance_prob: float = Field(0.3, ge=0, le=1, description="P(a portal click still glances at the item page)")
    glance_seconds: float = Field(5.0, ge=0, le=3600, description="mean seconds of such a glance (exponential)")
    bounce_prob: float = Field(0.1, ge=0, le=1, description="P(an interest click that does not finish bounces at once: 0 seconds)")


class MiniAppConfig(_Section):
    """The mini-app domain (traffic share: ``world.mini_app_share``) behaves differently from the main feed."""

    preference_shift: float = Field(0.0, ge=0, le=20, description="std of the per-category logit shift in mini-app requests (0: off)")
    domain_affinity: float = Field(0.0, ge=0, le=20, description="logit bonus of items of the request's own domain (0: off)")
    conversion_prob: float = Field(0.0, ge=0, le=1, description="P(convert | finished) x relevance in mini-app requests (0: off)")


class WeekendConfig(_Section):
    """Weekend-heavy users hold different intents, so weekend traffic shifts toward 'weekend' categories."""

    intent_correlation: float = Field(
        0.0, ge=0, le=1, description="how much the weekend segment follows the weekend-category intents (0: off)"
    )
    weekend_category_share: float = Field(0.5, gt=0, lt=1, description="share of categories that are weekend categories")
