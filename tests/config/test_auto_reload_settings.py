"""Auto-reload's soft-failure back-off settings: bad values stop start-up, naming the setting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from config import SettingsError, get_settings, reset_settings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.chdir(tmp_path)  # no stray .env file
    reset_settings()
    yield monkeypatch
    monkeypatch.undo()
    reset_settings()


def test_defaults_are_an_hour_doubling_to_a_day_and_the_third_tells(
    env: pytest.MonkeyPatch,
) -> None:
    for name in ("AUTO_RELOAD_SOFT_BACKOFF", "AUTO_RELOAD_SOFT_BACKOFF_MAX"):
        env.delenv(name, raising=False)
    env.delenv("AUTO_RELOAD_FAILING_AFTER", raising=False)
    settings = get_settings()
    assert settings.auto_reload_soft_backoff_seconds == 3600
    assert settings.auto_reload_soft_backoff_max_seconds == 86400
    assert settings.auto_reload_failing_after == 3


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"AUTO_RELOAD_SOFT_BACKOFF": "0"}, "AUTO_RELOAD_SOFT_BACKOFF"),
        ({"AUTO_RELOAD_SOFT_BACKOFF": "59"}, "AUTO_RELOAD_SOFT_BACKOFF"),
        ({"AUTO_RELOAD_SOFT_BACKOFF": "1h"}, "AUTO_RELOAD_SOFT_BACKOFF"),
        ({"AUTO_RELOAD_SOFT_BACKOFF_MAX": "-1"}, "AUTO_RELOAD_SOFT_BACKOFF_MAX"),
        ({"AUTO_RELOAD_SOFT_BACKOFF_MAX": "99999999"}, "AUTO_RELOAD_SOFT_BACKOFF_MAX"),
        (
            {"AUTO_RELOAD_SOFT_BACKOFF": "7200", "AUTO_RELOAD_SOFT_BACKOFF_MAX": "3600"},
            "AUTO_RELOAD_SOFT_BACKOFF_MAX",
        ),
        ({"AUTO_RELOAD_FAILING_AFTER": "0"}, "AUTO_RELOAD_FAILING_AFTER"),
    ],
)
def test_a_back_off_that_cannot_work_stops_start_up(
    env: pytest.MonkeyPatch, values: dict[str, str], named: str
) -> None:
    for name, value in values.items():
        env.setenv(name, value)
    reset_settings()
    with pytest.raises(SettingsError) as info:
        get_settings()
    message = str(info.value)
    assert message.startswith(named), message
    assert "\n" not in message


def test_a_cap_equal_to_the_base_is_a_fixed_back_off(env: pytest.MonkeyPatch) -> None:
    env.setenv("AUTO_RELOAD_SOFT_BACKOFF", "900")
    env.setenv("AUTO_RELOAD_SOFT_BACKOFF_MAX", "900")
    reset_settings()
    settings = get_settings()
    assert (
        settings.auto_reload_soft_backoff_seconds == settings.auto_reload_soft_backoff_max_seconds
    )
