"""The live broker: any exchange ccxt supports, behind :class:`app.broker.Broker`.

This is the one module that imports ccxt, and it is imported only when an account uses
it, so a paper-only service never pays ccxt's import time and memory. ccxt's shapes become
the project's value objects here, and ccxt's errors the project's errors in one mapping.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async

Exchange = Any  # ccxt's exchange classes are untyped


def create_exchange(
    exchange_id: str,
    *,
    api_key: str | None,
    secret: str | None,
    sandbox: bool,
    timeout_seconds: float,
    api_url: str | None = None,
) -> Exchange:
    """One async ccxt exchange, rate limiting on, spot markets only.

    ``api_url`` sends every API call to one base URL instead (a local fake exchange in
    tests, or a proxy): each of the exchange's API URLs keeps its path under that base.
    """
    try:
        exchange_class = getattr(ccxt_async, exchange_id)
    except AttributeError:
        raise ValueError(f"ccxt has no exchange {exchange_id!r}") from None
    exchange = exchange_class(
        {
            "apiKey": api_key,
            "secret": secret,
            "enableRateLimit": True,
            "timeout": int(timeout_seconds * 1000),
            "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
        }
    )
    if sandbox:
        exchange.set_sandbox_mode(True)
    if api_url is not None:
        exchange.urls["api"] = _rebase(exchange.urls["api"], api_url.rstrip("/"))
    return exchange


def _rebase(urls: Any, base: str) -> Any:
    if isinstance(urls, str):
        return base + urlsplit(urls).path
    if isinstance(urls, dict):
        return {key: _rebase(value, base) for key, value in urls.items()}
    return urls
