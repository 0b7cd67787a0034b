"""The daily fetch of the ECB's reference rates from FX_RATES_URL (when it is set)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import httpx

from config import get_settings
from worker.db.session import UnitOfWork
from worker.fx import ecb, service
from worker.kernel.errors import DomainError

log = logging.getLogger(__name__)


class FetchFailed(DomainError):
    """The rates could not be fetched (network, HTTP status, size): nothing was stored."""

    code = "fx_fetch_failed"


def download(url: str, timeout: float) -> bytes:
    """The body at `url` (http or https), at most ecb.MAX_BYTES. Raises FetchFailed
    (field `FX_RATES_URL`) on any network error, a non-2xx status or an oversized body."""
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            if response.status_code // 100 != 2:
                raise FetchFailed("FX_RATES_URL", f"{url} answered HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > ecb.MAX_BYTES:
                    raise FetchFailed("FX_RATES_URL", f"{url} sent over {ecb.MAX_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise FetchFailed("FX_RATES_URL", f"cannot fetch {url}: {exc}") from None


def fetch(uow: UnitOfWork, now: datetime) -> dict[str, Any]:
    """Fetch FX_RATES_URL and import it (`service.import_rates`); `{skipped: true}` when
    the setting is empty. The download happens before the first query, so no database
    transaction waits on the network. Returns `{url, dates, rates, first, last}`.
    Raises FetchFailed, or ValidationError naming the bad part of the file."""
    settings = get_settings()
    url = settings.fx_rates_url
    if not url:
        return {"skipped": True, "reason": "FX_RATES_URL is not set"}
    body = download(url, settings.fx_fetch_timeout_seconds)
    result = service.import_rates(uow, body, now=now)
    log.info("fx rates from %s: %s days, %s rates", url, result["dates"], result["rates"])
    return {"url": url, **result}
