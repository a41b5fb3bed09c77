"""Settings: one dataclass per concern; each field binds its env var, default, parser and doc once.

Nothing here connects to anything. `Settings.from_env(env)` is the only way settings are built, in
production and in tests alike; a bad value raises ``ConfigError`` whose message names the variable,
so the CLI can print one line and exit 2. `Settings.documented()` lists every variable for the
README. `parsing.py` holds how a setting is declared and parsed, `sections.py` the settings.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any

from hsepay.config.parsing import ConfigError, Setting, normalise_db_url, path, section, setting
from hsepay.config.sections import (
    ApiSettings,
    ConsumerSettings,
    DatabaseSettings,
    EventSettings,
    GatewaySettings,
    KafkaSettings,
    ObservabilitySettings,
    RelaySettings,
    SagaSettings,
    SecuritySettings,
)

__all__ = [
    "ApiSettings",
    "ConfigError",
    "ConsumerSettings",
    "DatabaseSettings",
    "EventSettings",
    "GatewaySettings",
    "KafkaSettings",
    "ObservabilitySettings",
    "RelaySettings",
    "SagaSettings",
    "SecuritySettings",
    "Settings",
    "get_settings",
    "normalise_db_url",
]


@dataclass(frozen=True)
class Settings:
    data_dir: Path = setting(lambda: Path(".hsepay"), "HSEPAY_DATA_DIR", path, "files of the embedded engines")
    db: DatabaseSettings = section(DatabaseSettings)
    kafka: KafkaSettings = section(KafkaSettings)
    events: EventSettings = section(EventSettings)
    relay: RelaySettings = section(RelaySettings)
    consumer: ConsumerSettings = section(ConsumerSettings)
    saga: SagaSettings = section(SagaSettings)
    api: ApiSettings = section(ApiSettings)
    security: SecuritySettings = section(SecuritySettings)
    gateway: GatewaySettings = section(GatewaySettings)
    observability: ObservabilitySettings = section(ObservabilitySettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from `env` (default: the process environment)."""
        return _load(cls, os.environ if env is None else env)

    @classmethod
    def documented(cls) -> list[tuple[str, Any, str]]:
        """(variable, default, doc) of every setting, in declaration order."""
        return [(s.env, default, s.doc) for s, default in _walk(cls) if s.env]

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)


def _load(cls: type, env: Mapping[str, str]) -> Any:
    values: dict[str, Any] = {}
    for f in fields(cls):
        if "section" in f.metadata:
            values[f.name] = _load(f.metadata["section"], env)
            continue
        spec: Setting = f.metadata["setting"]
        raw = env.get(spec.env) if spec.env else None
        if raw is None or not raw.strip():
            continue
        values[f.name] = spec.parse(raw, spec.env) if spec.parse else raw
    return cls(**values)


def _walk(cls: type) -> Iterator[tuple[Setting, Any]]:
    for f in fields(cls):
        if "section" in f.metadata:
            yield from _walk(f.metadata["section"])
        else:
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            yield f.metadata["setting"], default


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()
