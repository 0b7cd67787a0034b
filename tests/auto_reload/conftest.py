"""Fixtures of the auto-reload tests."""

from __future__ import annotations

from typing import Any

import pytest

from worker.psp.sandbox import RemoteSide


@pytest.fixture
def psp_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every charge call that reaches the (stub) PSP, by idempotency key."""
    calls: list[str] = []
    real = RemoteSide.charge

    def counting(self: RemoteSide, request: Any) -> Any:
        calls.append(request.idempotency_key)
        return real(self, request)

    monkeypatch.setattr(RemoteSide, "charge", counting)
    return calls
