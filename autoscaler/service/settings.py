"""Process settings (the service's tier of config, apart from SRE policy): flags, with every
flag also readable from an environment variable, flags winning."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field


def _env(name: str, default: str | None = None) -> str | None:
    v = os.environ.get(name)
    return v if v not in (None, "") else default


def _env_bool(name: str, default: bool = False) -> bool:
    v = _env(name)
    return default if v is None else v.strip().lower() in ("1", "true", "yes", "on")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host or "0.0.0.0"), int(port)


@dataclass
class Settings:
    config: str
    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()  # empty: every namespace the policy names
    dry_run: bool = False
    tick_seconds: float = 5.0
    # Each target's pods are scraped this often, in the background, staggered over the interval
    # (None: every tick_seconds). ``once`` scrapes inside its one tick instead.
    scrape_seconds: float | None = None
    # ... but no more than this many target scrapes a second: the interval stretches to
    # targets / scrape_max_rate when that is longer (0: no bound). Bounds the scrape's CPU.
    scrape_max_rate: float = 200.0
    listen: str = ":8080"
    once: bool = False
    lease_name: str = "kserve-autoscaler"
    lease_namespace: str = "default"
    identity: str = field(default_factory=socket.gethostname)
    lease_seconds: float = 15.0
    keda_grpc_listen: str = ":9090"  # KEDA's external-push scaler; "" turns it off
    source_deadline_seconds: float = 5.0
    actuation_deadline_seconds: float = 10.0
    # Selector targets are listed again this often (and at start, and after a policy reload).
    selector_refresh_seconds: float = 60.0
    log_level: str = "info"
    log_json: bool = True

    @property
    def host_port(self) -> tuple[str, int]:
        return _split(self.listen)

    @property
    def grpc_host_port(self) -> tuple[str, int] | None:
        return _split(self.keda_grpc_listen) if self.keda_grpc_listen else None

    @property
    def scrape_interval(self) -> float | None:
        """Seconds between two background scrapes of a target; None: scrape in the tick."""
        if self.once:
            return None
        return self.scrape_seconds if self.scrape_seconds else self.tick_seconds

    @property
    def lease_timings(self) -> tuple[float, float, float]:
        """(lease duration, renew deadline, retry period) in client-go's default proportions
        (15 s / 10 s / 2 s), scaled from ``lease_seconds``."""
        d = self.lease_seconds
        return d, d * 2 / 3, d * 2 / 15

    @staticmethod
    def env_defaults() -> dict[str, object]:
        """Defaults taken from AUTOSCALER_* (and the downward API's POD_NAME/POD_NAMESPACE)."""
        out: dict[str, object] = {}
        pairs = {
            "config": "AUTOSCALER_CONFIG",
            "kubeconfig": "AUTOSCALER_KUBECONFIG",
            "listen": "AUTOSCALER_LISTEN",
            "lease_name": "AUTOSCALER_LEASE_NAME",
            "lease_namespace": "POD_NAMESPACE",
            "identity": "POD_NAME",
            "log_level": "AUTOSCALER_LOG_LEVEL",
            "keda_grpc_listen": "AUTOSCALER_KEDA_GRPC_LISTEN",
        }
        for key, var in pairs.items():
            v = _env(var)
            if v is not None:
                out[key] = v
        for key, var in (
            ("tick_seconds", "AUTOSCALER_TICK_SECONDS"),
            ("lease_seconds", "AUTOSCALER_LEASE_SECONDS"),
            ("scrape_seconds", "AUTOSCALER_SCRAPE_SECONDS"),
            ("scrape_max_rate", "AUTOSCALER_SCRAPE_MAX_RATE"),
            ("selector_refresh_seconds", "AUTOSCALER_SELECTOR_REFRESH_SECONDS"),
        ):
            v = _env(var)
            if v is not None:
                out[key] = float(v)
        ns = _env("AUTOSCALER_NAMESPACES")
        if ns:
            out["namespaces"] = tuple(x.strip() for x in ns.split(",") if x.strip())
        out["dry_run"] = _env_bool("AUTOSCALER_DRY_RUN")
        out["log_json"] = _env_bool("AUTOSCALER_LOG_JSON", True)
        return out
