"""Settings: one frozen, typed object, built once by :func:`load_settings` and passed in.

Sources, highest priority first:

1. ``SIGNALBRIDGE_*`` environment variables (nested fields with ``__``, e.g.
   ``SIGNALBRIDGE_MAX_SIGNAL_AGE_SECONDS=60``);
2. the TOML file named by the ``--config`` flag, else ``SIGNALBRIDGE_CONFIG``, else
   ``config/signalbridge.toml``;
3. the defaults below.

This is the only module that reads the environment.
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from app.faults import CrashStep

DEFAULT_CONFIG_PATH = Path("config/signalbridge.toml")
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/signalbridge.db"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UserConfig(_Section):
    email: str


class AccountConfig(_Section):
    """Where trades execute. ``broker = "paper"`` simulates fills at the configured quotes
    (or, with ``quotes = "ccxt:<exchange id>"``, at an exchange's public prices);
    ``broker = "ccxt"`` trades on ``exchange`` (its testnet while ``sandbox``), with the API
    key and secret read from the environment variables named by ``api_key_env`` and
    ``secret_env``: secrets never appear in the file."""

    name: str
    user: str = Field(description="the owner's email")
    broker: Literal["paper", "ccxt"] = "paper"
    exchange: str | None = None
    sandbox: bool = True
    api_key_env: str | None = None
    secret_env: str | None = None
    api_url: str | None = Field(
        default=None, description="send every exchange API call here (a proxy, or a test fake)"
    )
    quotes: str | None = None
    currency: str = "USD"
    is_sandbox: bool = True
    is_verified: bool = True
    initial_deposit: Decimal = Decimal(0)
    allow_short: bool = False
    short_margin: Decimal = Field(
        default=Decimal(1), ge=0, description="collateral locked per unit of short notional"
    )
    fee_bps: Decimal = Field(default=Decimal(0), ge=0)
    slippage_bps: Decimal = Field(default=Decimal(0), ge=0)

    @model_validator(mode="after")
    def _venue(self) -> AccountConfig:
        if self.broker == "ccxt" and not self.exchange:
            raise ValueError(f"account {self.name!r}: a ccxt account needs an exchange id")
        if self.broker == "ccxt" and self.allow_short:
            raise ValueError(f"account {self.name!r}: ccxt accounts trade spot; no shorts")
        if self.quotes is not None and not self.quotes.startswith("ccxt:"):
            raise ValueError(f"account {self.name!r}: quotes must be 'ccxt:<exchange id>'")
        return self

    @property
    def quotes_exchange(self) -> str | None:
        return self.quotes.removeprefix("ccxt:") if self.quotes else None


class IntegrationConfig(_Section):
    """A signal provider connected to a user; its signals trade on ``account``.

    ``tokens`` are the live tokens in plain text (demo only); ``token_sha256`` the same as
    hex SHA-256 digests, which is how a real deployment should give them. Two at once allow
    rotation.
    """

    name: str
    user: str
    account: str
    provider: Literal["proquant"] = "proquant"
    status: Literal["pending", "approved", "rejected", "deleted"] = "approved"
    token_header: str = "x-signalbridge-token"  # noqa: S105 (a header name)
    tokens: tuple[SecretStr, ...] = ()
    token_sha256: tuple[str, ...] = ()

    @field_validator("token_header")
    @classmethod
    def _lower_header(cls, value: str) -> str:
        return value.lower()

    @model_validator(mode="after")
    def _has_tokens(self) -> IntegrationConfig:
        if not self.tokens and not self.token_sha256:
            raise ValueError(f"integration {self.name!r} needs tokens or token_sha256")
        if len(self.tokens) + len(self.token_sha256) > 2:
            raise ValueError(f"integration {self.name!r} may have at most two live tokens")
        return self


class SessionsConfig(_Section):
    """Weekly trading windows in a time zone; see :mod:`app.sessions` for the grammar."""

    timezone: str = "UTC"
    windows: tuple[str, ...]


class InstrumentConfig(_Section):
    ticker: str
    symbol: str
    quantity_step: Decimal = Field(gt=0)
    min_quantity: Decimal = Field(default=Decimal(0), ge=0)
    max_quantity: Decimal | None = Field(default=None, gt=0)
    min_notional: Decimal = Field(default=Decimal(0), ge=0)
    sessions: Literal["always"] | SessionsConfig = "always"
    price: Decimal | None = Field(default=None, gt=0, description="the paper broker's quote")


class StrategyRulesConfig(_Section):
    """Sizing rules. ``[strategy_defaults]`` applies to every strategy; ``[[strategies]]``
    entries override it for one provider strategy id."""

    quantity_multiplier: Decimal = Field(default=Decimal(1), gt=0)
    max_order_quantity: Decimal | None = Field(default=None, gt=0)
    allocation_percent: Decimal = Field(default=Decimal(100), gt=0, le=100)


class StrategyConfig(StrategyRulesConfig):
    id: str
    integration: str


class OperatorKeyConfig(_Section):
    """An operator API key: ``key`` in plain text (demo only) or ``sha256`` of it.
    ``scope = "read"`` keys may only read; ``"write"`` keys may also act."""

    name: str
    scope: Literal["read", "write"] = "read"
    key: SecretStr | None = None
    sha256: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> OperatorKeyConfig:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError(f"operator key {self.name!r} needs exactly one of key or sha256")
        return self


# About twice the cores of the database server the bench runs against (2): on PostgreSQL,
# more connections than it can serve at once only queue inside it, on an account's row lock
# above all (README, Storage, has the figures).
DATABASE_POOL_SIZE = 5


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SIGNALBRIDGE_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    database_url: str = DEFAULT_DATABASE_URL
    database_pool_size: int = Field(
        default=DATABASE_POOL_SIZE,
        gt=0,
        description="connections per process and pool (fixed): about twice the database "
        "server's cores; more only wait on each other",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    migrate_on_start: bool = True
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="the address providers reach this service at (for webhook URLs)",
    )
    provider_api_url: str | None = Field(
        default=None, description="the provider's API, e.g. https://www.proquant.com"
    )
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    body_timeout_seconds: float = Field(
        default=10.0, gt=0, description="how long a request's whole body may take to arrive"
    )
    max_signal_age_seconds: float = Field(default=300, gt=0)
    broker_timeout_seconds: float = Field(default=2.0, gt=0)
    duplicate_wait_seconds: float = Field(default=10.0, gt=0)
    reconcile_interval_seconds: float = Field(default=10.0, gt=0)
    reconcile_max_lookups: int = Field(default=5, gt=0)
    markets_refresh_seconds: float = Field(default=3600.0, gt=0)
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0)
    close_position_on_disable: bool = False
    crash_at: CrashStep | None = Field(
        default=None, description="fault-injection tests only: SIGKILL at this write-path step"
    )
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    api_key: SecretStr | None = Field(
        default=None, description="the operator key the CLI sends (SIGNALBRIDGE_API_KEY)"
    )

    users: tuple[UserConfig, ...] = ()
    accounts: tuple[AccountConfig, ...] = ()
    integrations: tuple[IntegrationConfig, ...] = ()
    instruments: tuple[InstrumentConfig, ...] = ()
    strategy_defaults: StrategyRulesConfig = StrategyRulesConfig()
    strategies: tuple[StrategyConfig, ...] = ()
    operator_keys: tuple[OperatorKeyConfig, ...] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; the environment overrides them.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _references_exist(self) -> Settings:
        users = {user.email for user in self.users}
        accounts = {account.name for account in self.accounts}
        integrations = {integration.name for integration in self.integrations}
        for account in self.accounts:
            _require(account.user in users, f"account {account.name!r}: unknown user")
        for integration in self.integrations:
            _require(integration.user in users, f"integration {integration.name!r}: unknown user")
            _require(
                integration.account in accounts,
                f"integration {integration.name!r}: unknown account",
            )
        for strategy in self.strategies:
            _require(
                strategy.integration in integrations,
                f"strategy {strategy.id!r}: unknown integration",
            )
        tickers = [instrument.ticker for instrument in self.instruments]
        _require(len(tickers) == len(set(tickers)), "instrument tickers must be unique")
        return self

    def account(self, name: str) -> AccountConfig:
        return next(account for account in self.accounts if account.name == name)

    def credentials(self, account: AccountConfig) -> tuple[str | None, str | None]:
        """The account's API key and secret, from the environment variables it names."""
        return (
            os.environ.get(account.api_key_env) if account.api_key_env else None,
            os.environ.get(account.secret_env) if account.secret_env else None,
        )

    def strategy_rules(self, *, integration: str, strategy_id: str) -> StrategyRulesConfig:
        for strategy in self.strategies:
            if strategy.integration == integration and strategy.id == strategy_id:
                return strategy
        return self.strategy_defaults


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def config_path(explicit: str | Path | None = None) -> Path:
    """The config file: the explicit path, else ``SIGNALBRIDGE_CONFIG``, else the default."""
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get("SIGNALBRIDGE_CONFIG", DEFAULT_CONFIG_PATH))


def share_config(config: str | Path | None) -> None:
    """Name the config file in the environment (``SIGNALBRIDGE_CONFIG``), for the processes
    this one starts (``serve --workers``): they read the same file, and the same
    environment overrides, as the parent."""
    os.environ["SIGNALBRIDGE_CONFIG"] = str(config_path(config).resolve())


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the config file (if it exists) and the environment into one ``Settings``.

    ``overrides`` replace values of the file (tests use them to point at a fresh database);
    the environment still wins over both.
    """
    path = config_path(config)
    values: dict[str, Any] = {}
    if path.exists():
        with path.open("rb") as file:
            values = tomllib.load(file, parse_float=Decimal)
    elif config is not None:
        raise FileNotFoundError(f"config file not found: {path}")
    return Settings(**{**values, **overrides})
