"""The agent's process settings and its ``autoscaler agent`` arguments (no heavy imports here, so
``autoscaler --help`` stays fast)."""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from autoscaler.traffic.agent.budget import Shares

__all__ = ["AgentConfig", "add_agent_parser", "config_from_args", "parse_listen"]

DEFAULT_LIMITS_FILE = "/etc/token-limits/{name}.json"


def parse_listen(value: str, what: str = "--listen") -> tuple[str, int]:
    """``:8081`` (all interfaces), ``127.0.0.1:8081`` or ``[::1]:8081`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{what}: expected [HOST]:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _rate(value: str) -> float:
    if value.strip().lower() in ("inf", "unlimited"):
        return math.inf
    rate = float(value)
    if math.isnan(rate) or rate < 0:
        raise argparse.ArgumentTypeError(f"a token rate must be >= 0 or 'unlimited', got {value}")
    return rate


def _share(value: str) -> tuple[str, float]:
    name, sep, share = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected TENANT=SHARE, got {value!r}")
    try:
        return name, float(share)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: SHARE must be a number") from None


@dataclass(frozen=True, slots=True)
class AgentConfig:
    upstream: str
    listen: tuple[str, int] = ("0.0.0.0", 8081)
    metrics_listen: tuple[str, int] | None = ("0.0.0.0", 9095)
    nvml: bool = False
    target: str | None = None  # "namespace/name" of the policy target
    limits_url: str | None = None  # the service's base URL; GET {limits_url}/tokens/{ns}/{name}
    limits_file: str | None = None  # the mounted ConfigMap key
    limits_interval: float = 5.0
    limits_timeout: float = 2.0
    default_token_rate: float = 2500.0
    burst_seconds: float = 1.0
    default_max_tokens: int = 512
    tenant_header: str = "X-Tenant"
    tenant_from_api_key: bool = True
    shares: Shares = field(default_factory=Shares)
    max_tenants: int = 1000
    max_concurrency: int = 0  # 0: no cap
    queue_size: int = 0  # 0: reject at once
    queue_timeout: float = 5.0
    upstream_timeout: float = 600.0
    upstream_connections: int = 1000
    upstream_metrics_path: str | None = "/metrics"
    max_body_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        if parts.scheme != "http" or not parts.hostname:
            # the model server is in the same pod, on loopback: TLS ends before the agent
            raise ValueError(f"--upstream: expected http://HOST:PORT, got {self.upstream!r}")
        if self.target is not None and self.target.count("/") != 1:
            raise ValueError(f"--target: expected NAMESPACE/NAME, got {self.target!r}")
        if self.limits_url is not None and not self.limits_url.startswith(("http://", "https://")):
            raise ValueError(f"--limits-url: expected http(s)://..., got {self.limits_url!r}")
        for name, value, low in (
            ("--limits-interval", self.limits_interval, 0.1),
            ("--limits-timeout", self.limits_timeout, 0.01),
            ("--burst-seconds", self.burst_seconds, 0.001),
            ("--upstream-timeout", self.upstream_timeout, 0.001),
        ):
            if not value >= low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        for name, ivalue in (
            ("--max-concurrency", self.max_concurrency),
            ("--queue-size", self.queue_size),
            ("--default-max-tokens", self.default_max_tokens),
        ):
            if ivalue < 0:
                raise ValueError(f"{name} must be >= 0, got {ivalue}")
        if self.queue_timeout < 0:
            raise ValueError(f"--queue-timeout must be >= 0, got {self.queue_timeout}")
        if self.max_tenants < 1 or self.upstream_connections < 1:
            raise ValueError("--max-tenants and --upstream-connections must be >= 1")

    @property
    def target_name(self) -> str | None:
        return None if self.target is None else self.target.partition("/")[2]

    @property
    def limits_path(self) -> str | None:
        """The HTTP path of this target's limits on the service."""
        return None if self.target is None else f"/tokens/{self.target}"


def add_agent_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``agent`` to the ``autoscaler`` subcommands; the caller sets ``func``."""
    p = sub.add_parser(
        "agent",
        help="the per-pod sidecar: token-rate admission proxy, agent metrics, NVML GPU gauges",
        description="Reverse proxy in front of the model server: admits requests by token "
        "budget (per model and tenant) and a concurrency cap, passes everything else through "
        "untouched, and serves its metrics on a separate port (docs/agent.md).",
    )
    env = os.environ.get
    p.add_argument(
        "--upstream",
        required=True,
        help="the model server in the pod, http://127.0.0.1:8080 (plain HTTP)",
    )
    p.add_argument("--listen", default=":8081", help="proxy address, default :8081")
    p.add_argument(
        "--metrics-listen",
        default=":9095",
        help="address of the agent's own /metrics, /healthz, /limits; 'off' to disable "
        "(default :9095, never the proxy port, so no model path is shadowed)",
    )
    p.add_argument("--nvml", action="store_true", help="serve the GPU gauges (NVML)")
    p.add_argument(
        "--target",
        default=env("AUTOSCALER_AGENT_TARGET"),
        help="NAMESPACE/NAME of the policy target whose limits to read "
        "(AUTOSCALER_AGENT_TARGET); without it only --default-token-rate applies",
    )
    p.add_argument(
        "--limits-url",
        default=env("AUTOSCALER_AGENT_LIMITS_URL"),
        help="the service, e.g. http://kserve-autoscaler.kserve-autoscaler.svc:8080 "
        "(AUTOSCALER_AGENT_LIMITS_URL); polled at /tokens/NAMESPACE/NAME",
    )
    p.add_argument(
        "--limits-file",
        default=DEFAULT_LIMITS_FILE,
        help="the mounted ConfigMap key; {name} is the target's name "
        f"(default {DEFAULT_LIMITS_FILE}; '' to disable)",
    )
    p.add_argument("--limits-interval", type=float, default=5.0, help="seconds between reads")
    p.add_argument(
        "--default-token-rate",
        type=_rate,
        default=2500.0,
        help="tokens/s this replica admits until a limit is read, or when the policy sets "
        "none (default 2500; 'unlimited' only if you mean it)",
    )
    p.add_argument(
        "--burst-seconds", type=float, default=1.0, help="bucket size in seconds of the rate"
    )
    p.add_argument(
        "--default-max-tokens",
        type=int,
        default=512,
        help="completion tokens charged when a request sets no max_tokens (default 512)",
    )
    p.add_argument("--tenant-header", default="X-Tenant", help="header naming the tenant")
    p.add_argument(
        "--no-tenant-from-api-key",
        action="store_true",
        help="do not tell tenants apart by their API key (Authorization: Bearer) when the "
        "tenant header is absent",
    )
    p.add_argument(
        "--tenant-share",
        action="append",
        type=_share,
        default=[],
        metavar="TENANT=SHARE",
        help="a tenant's share of the rate, 0..1 (repeatable)",
    )
    p.add_argument("--default-share", type=float, default=1.0, help="share of other tenants")
    p.add_argument("--max-concurrency", type=int, default=0, help="requests in flight; 0: no cap")
    p.add_argument(
        "--queue-size", type=int, default=0, help="requests that may wait for budget; 0: none"
    )
    p.add_argument(
        "--queue-timeout", type=float, default=5.0, help="longest wait in the queue, seconds"
    )
    p.add_argument("--upstream-timeout", type=float, default=600.0, help="seconds per request")
    p.add_argument(
        "--upstream-metrics-path",
        default="/metrics",
        help="the model server's metrics, appended to the agent's /metrics so one scrape "
        "reads both ('' to disable)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    target = args.target or None
    name = None if target is None else target.partition("/")[2]
    limits_file = args.limits_file.format(name=name) if args.limits_file and name else None
    metrics = None if args.metrics_listen in ("off", "") else parse_listen(args.metrics_listen)
    return AgentConfig(
        upstream=args.upstream,
        listen=parse_listen(args.listen),
        metrics_listen=metrics,
        nvml=args.nvml,
        target=target,
        limits_url=args.limits_url or None,
        limits_file=limits_file,
        limits_interval=args.limits_interval,
        default_token_rate=args.default_token_rate,
        burst_seconds=args.burst_seconds,
        default_max_tokens=args.default_max_tokens,
        tenant_header=args.tenant_header,
        tenant_from_api_key=not args.no_tenant_from_api_key,
        shares=Shares(args.default_share, dict(args.tenant_share)),
        max_concurrency=args.max_concurrency,
        queue_size=args.queue_size,
        queue_timeout=args.queue_timeout,
        upstream_timeout=args.upstream_timeout,
        upstream_metrics_path=args.upstream_metrics_path or None,
    )
