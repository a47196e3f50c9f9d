"""Dashboard settings (`LORAFLEET_DASHBOARD_*` env vars)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORAFLEET_DASHBOARD_", extra="ignore")

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 in a container)")
    port: int = Field(8300, ge=0, le=65535, description="HTTP port (0 = any free port, printed at start)")
    token: str | None = Field(None, description="enables the actions (promote, roll back, A/B traffic, retrain, "
                                                "replay); every action must carry it. Unset = read-only")
    runs: int = Field(20, ge=1, le=500, description="pipeline runs listed on the overview")
    dead_letters: int = Field(50, ge=1, le=1000, description="dead letters listed on /services")
    reconnect_s: float = Field(2.0, gt=0, description="wait between attempts while NATS is unreachable")
    cache_dir: str | None = Field(None, description="where evaluation reports are unpacked (default: a temp dir); "
                                                    "a cache keyed by content hash, safe to delete")
