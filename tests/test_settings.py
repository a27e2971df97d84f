"""Process settings: precedence of kwargs > env > TOML > defaults, secrets on disk, the config/ files."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from coordinator.core.models import StoreConfig
from coordinator.settings import (
    CONFIG_DIR,
    DEFAULT_STORE_DEFAULTS_FILE,
    Settings,
    load_store_defaults,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Start every test from no TABLELOCK_* variables and an empty settings file."""
    for name in list(os.environ):
        if name.startswith("TABLELOCK_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    monkeypatch.setenv("TABLELOCK_CONFIG", str(empty))
    return empty


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tablelock.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    """With nothing configured, the documented defaults apply."""
    s = Settings()
    assert (s.host, s.port, s.redis_url, s.data_dir) == ("127.0.0.1", 8080, None, Path(".tablelock"))
    assert s.admin_token is None and s.secret_key is None and s.public_url is None
    assert s.cors_origins == [] and s.log_level == "INFO"
    assert (s.max_body_bytes, s.ws_queue_size, s.ws_heartbeat_seconds, s.ws_idle_timeout_seconds) == (65536, 256, 10, 30)
    assert (s.h5_session_ttl_seconds, s.session_rate_per_minute, s.h5_rate_per_minute) == (7200, 30, 120)
    assert s.event_retention == 10000
    assert s.store_defaults_file == DEFAULT_STORE_DEFAULTS_FILE


def test_toml_overrides_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys in the TOML file named by TABLELOCK_CONFIG replace the defaults."""
    path = _toml(tmp_path, 'port = 9001\nredis_url = "redis://10.0.0.5:6379/0"\ncors_origins = ["https://a"]\n')
    monkeypatch.setenv("TABLELOCK_CONFIG", str(path))
    s = Settings()
    assert (s.port, s.redis_url, s.cors_origins, s.host) == (9001, "redis://10.0.0.5:6379/0", ["https://a"], "127.0.0.1")


def test_env_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TABLELOCK_* variable beats the same key in the TOML file."""
    monkeypatch.setenv("TABLELOCK_CONFIG", str(_toml(tmp_path, 'port = 9001\nlog_level = "DEBUG"\n')))
    monkeypatch.setenv("TABLELOCK_PORT", "9002")
    s = Settings()
    assert s.port == 9002
    assert s.log_level == "DEBUG"  # not in env: the file still counts


def test_init_kwargs_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword arguments (the CLI flags) beat the environment."""
    monkeypatch.setenv("TABLELOCK_PORT", "9002")
    monkeypatch.setenv("TABLELOCK_HOST", "0.0.0.0")
    s = Settings(port=9003)
    assert (s.port, s.host) == (9003, "0.0.0.0")


def test_spec_env_names_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every variable SPEC §6 promises to operators is honoured."""
    env = {
        "TABLELOCK_HOST": "0.0.0.0",
        "TABLELOCK_PORT": "8181",
        "TABLELOCK_REDIS_URL": "redis://r:6379",
        "TABLELOCK_DATA_DIR": str(tmp_path / "d"),
        "TABLELOCK_ADMIN_TOKEN": "adm",
        "TABLELOCK_SECRET_KEY": "sek",
        "TABLELOCK_PUBLIC_URL": "https://order.example.com/",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert (s.host, s.port, s.redis_url, s.data_dir) == ("0.0.0.0", 8181, "redis://r:6379", tmp_path / "d")
    assert s.admin_token == SecretStr("adm") and s.secret_key == SecretStr("sek")
    assert s.effective_public_url == "https://order.example.com"


def test_config_file_argument_beats_the_env_variable(tmp_path: Path) -> None:
    """`_config_file` (serve --config) is read instead of the file TABLELOCK_CONFIG names."""
    path = tmp_path / "other.toml"
    path.write_text("port = 9100\n")
    assert Settings(_config_file=path).port == 9100
    assert Settings().port == 8080  # the override does not leak into later instances


def test_a_named_but_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A settings file the operator named but that does not exist is reported, not silently skipped."""
    monkeypatch.setenv("TABLELOCK_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        Settings()


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    """A misspelt key in the TOML file fails validation instead of being ignored."""
    with pytest.raises(ValidationError, match="prot"):
        Settings(_config_file=_toml(tmp_path, "prot = 1\n"))


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Out-of-range ports and unknown log levels fail validation; log levels are case-insensitive."""
    monkeypatch.setenv("TABLELOCK_PORT", "70000")
    with pytest.raises(ValidationError, match="port"):
        Settings()
    with pytest.raises(ValidationError, match="log_level"):
        Settings(port=1, log_level="LOUD")
    assert Settings(port=1, log_level="debug").log_level == "DEBUG"


def test_cors_origins_from_env_accept_commas_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """TABLELOCK_CORS_ORIGINS may be comma-separated or a JSON list."""
    monkeypatch.setenv("TABLELOCK_CORS_ORIGINS", "https://a, https://b")
    assert Settings().cors_origins == ["https://a", "https://b"]
    monkeypatch.setenv("TABLELOCK_CORS_ORIGINS", '["https://c"]')
    assert Settings().cors_origins == ["https://c"]


def test_empty_redis_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    """TABLELOCK_REDIS_URL set but empty counts as unset, i.e. the embedded Redis."""
    monkeypatch.setenv("TABLELOCK_REDIS_URL", "")
    assert Settings().redis_url is None


@pytest.mark.parametrize(
    ("kwargs", "url"),
    [
        ({}, "http://127.0.0.1:8080"),
        ({"host": "192.168.1.20", "port": 9000}, "http://192.168.1.20:9000"),
        ({"host": "0.0.0.0"}, "http://127.0.0.1:8080"),
        ({"host": "::1"}, "http://[::1]:8080"),
        ({"public_url": "https://order.example.com/t/"}, "https://order.example.com/t"),
    ],
)
def test_effective_public_url(kwargs: dict, url: str) -> None:
    """QR links use public_url when set, else a browsable http://host:port."""
    assert Settings(**kwargs).effective_public_url == url


def test_ensure_secrets_generates_persists_and_reuses(tmp_path: Path) -> None:
    """Unset secrets are generated once into data_dir (mode 0600) and read back by the next process."""
    data_dir = tmp_path / "data"
    first = Settings(data_dir=data_dir).ensure_secrets()
    assert first.admin_token is not None and first.secret_key is not None
    token, key = first.admin_token.get_secret_value(), first.secret_key.get_secret_value()
    assert len(token) >= 40 and token != key
    for name, value in (("admin_token", token), ("secret_key", key)):
        path = data_dir / name
        assert path.read_text().strip() == value
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert list(data_dir.glob(".*tmp")) == []

    second = Settings(data_dir=data_dir).ensure_secrets()
    assert second.admin_token == first.admin_token and second.secret_key == first.secret_key


def test_ensure_secrets_keeps_configured_values(tmp_path: Path) -> None:
    """A configured secret is used as is and not written to disk; the other is still generated."""
    s = Settings(data_dir=tmp_path, admin_token="configured").ensure_secrets()
    assert s.admin_token == SecretStr("configured")
    assert not (tmp_path / "admin_token").exists()
    assert (tmp_path / "secret_key").exists()


def test_ensure_secrets_replaces_a_blank_file(tmp_path: Path) -> None:
    """An empty secret file (e.g. truncated by a full disk) is replaced, never used as a secret."""
    (tmp_path / "admin_token").write_text("\n")
    s = Settings(data_dir=tmp_path).ensure_secrets()
    assert s.admin_token is not None and s.admin_token.get_secret_value()
    assert (tmp_path / "admin_token").read_text().strip() == s.admin_token.get_secret_value()


def test_ensure_secrets_returns_a_copy() -> None:
    """ensure_secrets does not modify the instance it is called on."""
    s = Settings(admin_token="a", secret_key="b")
    assert s.ensure_secrets() == s


def test_sample_config_documents_every_setting_and_changes_nothing() -> None:
    """config/tablelock.toml mentions every field, and loading it gives exactly the defaults."""
    sample = CONFIG_DIR / "tablelock.toml"
    text = sample.read_text()
    for name in Settings.model_fields:
        assert re.search(rf"^# {name} = ", text, re.MULTILINE), f"{name} missing from {sample}"
    assert Settings(_config_file=sample) == Settings()


def test_store_defaults_are_the_spec_defaults() -> None:
    """config/store_defaults.toml holds the SPEC §6 defaults, valid for StoreConfig."""
    defaults = load_store_defaults()
    assert defaults == {
        "strong_link_enabled": True,
        "h5_payment_lock_seconds": 15,
        "erp_payment_lock_seconds": 180,
        "order_lock_seconds": 300,
        "presettle_lock_seconds": 1800,
        "erp_disconnect_grace_seconds": 30,
        "erp_rpc_timeout_ms": 3000,
        # SPEC §9
        "h5_payment_window_seconds": 180,
        "auto_refund_surplus": True,
    }
    assert StoreConfig.model_validate(defaults) == StoreConfig()


def test_store_defaults_comment_every_key_in_chinese_and_english() -> None:
    """Each key of store_defaults.toml is preceded by a Chinese and an English comment line."""
    lines = DEFAULT_STORE_DEFAULTS_FILE.read_text().splitlines()
    keys = tomllib.loads("\n".join(lines)).keys()
    for key in keys:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
        zh, en = lines[at - 2], lines[at - 1]
        assert zh.startswith("#") and re.search(r"[\u4e00-\u9fff]", zh), key
        assert en.startswith("#") and re.search(r"[A-Za-z]{3,}", en) and not re.search(r"[\u4e00-\u9fff]", en), key
