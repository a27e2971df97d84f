"""Process settings: one pydantic-settings class fed by init kwargs, `TABLELOCK_*` env and a TOML file.

Precedence, highest first: keyword arguments (the CLI's flags) > environment > TOML file > defaults.
The TOML file is the one named by `TABLELOCK_CONFIG` (or the `_config_file` argument), else
`config/tablelock.toml` in the repository when it exists. Per-store lock settings are not here:
they live in `config/store_defaults.toml` (`load_store_defaults`) and, per store, in Redis.
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"
DEFAULT_CONFIG_FILE = CONFIG_DIR / "tablelock.toml"
DEFAULT_STORE_DEFAULTS_FILE = CONFIG_DIR / "store_defaults.toml"
CONFIG_ENV = "TABLELOCK_CONFIG"

_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")

# settings_customise_sources only receives the class, so the per-call `_config_file` reaches the
# TOML source through this variable; it is set only for the duration of one __init__.
_config_file_override: ContextVar[Path | None] = ContextVar("_config_file_override", default=None)


def config_file_path() -> Path | None:
    """Return the TOML settings file to read, or None when there is none."""
    explicit = _config_file_override.get() or os.environ.get(CONFIG_ENV) or None
    if explicit is not None:
        path = Path(explicit)
        # An operator who names a file means it: a typo must not silently fall back to defaults.
        if not path.is_file():
            raise FileNotFoundError(f"settings file not found: {path} (from --config or {CONFIG_ENV})")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


class Settings(BaseSettings):
    """Settings of one coordinator process."""

    model_config = SettingsConfigDict(env_prefix="TABLELOCK_", extra="forbid", validate_default=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # None: start an embedded redis-server under data_dir. Otherwise redis://, rediss://, unix://
    # (a single server or any node of a Redis Cluster) or, for a primary under Redis Sentinel,
    # redis+sentinel://[[user]:password@]host:26379[,host2:26380...]/mymaster[?db=N&sentinel_password=P]
    redis_url: str | None = None
    # WAIT for this many replicas after each grant and completion (0: off). A timeout still
    # returns the grant (see LockEngine._replicated); it narrows what a failover can lose.
    redis_wait_replicas: int = Field(default=0, ge=0)
    redis_wait_timeout_ms: int = Field(default=100, ge=1, le=1500)  # under the 2 s command timeout
    data_dir: Path = Path("./.tablelock")
    admin_token: SecretStr | None = None
    secret_key: SecretStr | None = None
    public_url: str | None = None  # base of QR links; None: http://{host}:{port}
    cors_origins: Annotated[list[str], NoDecode] = []
    log_level: str = "INFO"
    # Lower bounds are loose on purpose: tests shrink limits to reach them quickly.
    max_body_bytes: int = Field(default=65536, ge=1)
    ws_queue_size: int = Field(default=256, ge=1)
    ws_heartbeat_seconds: float = Field(default=10, gt=0)
    ws_idle_timeout_seconds: float = Field(default=30, gt=0)
    h5_session_ttl_seconds: int = Field(default=7200, ge=1)
    session_rate_per_minute: int = Field(default=30, ge=1)
    h5_rate_per_minute: int = Field(default=120, ge=1)
    event_retention: int = Field(default=10000, ge=1)  # SPEC §7 wants >= 10,000 in production
    # Websocket caps, counted across processes in Redis (realtime/admission.py): open sockets per H5
    # session, per ERP terminal and per client address (1008 past them); connects per minute per
    # address (4429 past it); how long a dead process's sockets keep counting; and the most events
    # one `since` may replay (further behind: a snapshot instead).
    ws_per_h5_session: int = Field(default=4, ge=1)
    ws_per_terminal: int = Field(default=8, ge=1)
    ws_per_address: int = Field(default=200, ge=1)
    ws_connect_rate_per_minute: int = Field(default=120, ge=1)
    ws_slot_ttl_seconds: int = Field(default=60, ge=1)
    ws_replay_max_events: int = Field(default=1000, ge=1)
    # A store's live channel stays subscribed this long after its last local socket left, so a
    # reconnecting client does not cost an UNSUBSCRIBE + SUBSCRIBE pair (realtime/stream.py).
    ws_store_linger_seconds: float = Field(default=2.0, ge=0)
    # Refused H5 requests audited one by one per table and window; the rest are counted
    # (lua/refusals.lua): the first refusal of a kind per session, at most this many per table.
    h5_refusal_window_seconds: int = Field(default=60, ge=1)
    h5_refusals_per_table: int = Field(default=5, ge=1)
    store_defaults_file: Path = DEFAULT_STORE_DEFAULTS_FILE
    # Payments (SPEC §9): first provider query of a trade whose notification has not come, and
    # the timeout of one call to a payment provider.
    payment_first_query_ms: int = Field(default=20000, ge=1)
    payment_provider_timeout_seconds: float = Field(default=5.0, gt=0)
    # `tablelock serve`: coordinator processes sharing the port (SO_REUSEPORT; coordinator/workers.py).
    workers: int = Field(default=1, ge=1, le=64)

    def __init__(self, _config_file: Path | str | None = None, **values: Any) -> None:
        token = _config_file_override.set(Path(_config_file) if _config_file is not None else None)
        try:
            super().__init__(**values)
        finally:
            _config_file_override.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read init kwargs, then the environment, then the TOML file."""
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file_path())
        return (init_settings, env_settings, toml)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        # Operators write `TABLELOCK_CORS_ORIGINS=https://a,https://b`; a JSON list works too.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
        return level

    @field_validator("redis_url", "public_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        # `TABLELOCK_REDIS_URL=` (set but empty) means "not set", i.e. the embedded Redis.
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def effective_public_url(self) -> str:
        """Return the base URL of QR links, without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        # A wildcard bind address is not a place a browser can go; loopback at least works locally.
        host = "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def ensure_secrets(self) -> Settings:
        """Return a copy whose unset admin_token / secret_key are loaded from, or created in, data_dir."""
        updates: dict[str, SecretStr] = {}
        for name in ("admin_token", "secret_key"):
            if getattr(self, name) is None:
                updates[name] = SecretStr(_load_or_create_secret(self.secret_file(name)))
        return self.model_copy(update=updates) if updates else self

    def secret_file(self, name: str) -> Path:
        """Return the path where the secret `name` is kept when not configured."""
        return self.data_dir / name


def _load_or_create_secret(path: Path) -> str:
    """Return the secret stored at `path`, creating it (mode 0600) on first use."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = None
    if existing:
        return existing
    value = secrets.token_urlsafe(32)
    # Write a private temp file, then link it into place: a second process starting at the same
    # moment either wins the link or reads the winner's value, never a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    try:
        if existing is None:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)  # the file was there but blank: nothing to keep
    except FileExistsError:
        return path.read_text().strip()
    finally:
        tmp.unlink(missing_ok=True)
    return value


def load_store_defaults(path: Path | str = DEFAULT_STORE_DEFAULTS_FILE) -> dict[str, Any]:
    """Read the per-store default configuration TOML into a plain dict (validated by models.StoreConfig)."""
    with open(path, "rb") as f:
        return tomllib.load(f)
