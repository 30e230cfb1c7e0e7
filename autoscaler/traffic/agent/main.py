"""Runs the agent: the proxy and the admin app on their ports until SIGTERM or SIGINT.

The CLI (the composition root) passes the real clock and, with ``--nvml``, the GPU collector
already registered in ``registry`` plus the coroutine that refreshes it before each scrape:
``traffic`` may not import ``service`` (the clock) nor ``sources`` (NVML).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from autoscaler.core.clock import Clock
from autoscaler.traffic.agent.options import AgentConfig
from autoscaler.traffic.agent.proxy import Agent

__all__ = ["run_agent", "serve"]

log = logging.getLogger("autoscaler.traffic.agent")


async def serve(
    agent: Agent,
    stop: asyncio.Event,
    ready: Callable[[list[str]], None] | None = None,
    *,
    freeze_gc: bool = True,
) -> None:
    """Serve the proxy and the admin app until ``stop`` is set; ``ready`` gets the bound
    addresses (the proxy's first). Once both are up the start-up heap is frozen out of the
    garbage collector's sight (``freeze_gc``, see ``gcpolicy``); collections are timed either
    way."""
    config = agent.config
    runner: web.AppRunner | None = None
    addresses: list[str] = []
    try:
        await agent.start()
        host, port = config.listen
        bound = await agent.listen(host, port, backlog=1024)
        addresses.extend(f"http://{a[0]}:{a[1]}" for a in bound)
        if config.metrics_listen is not None:
            runner = web.AppRunner(agent.admin_app(), handle_signals=False, access_log=None)
            await runner.setup()
            host, port = config.metrics_listen
            await web.TCPSite(runner, host, port).start()
            addresses.extend(f"http://{a[0]}:{a[1]}" for a in runner.addresses)
        if freeze_gc:
            agent.gc.take_over()  # every import done, both ports up (gcpolicy.py)
        else:
            agent.gc.pauses.install()
        log.info(
            "agent up: proxy %s -> %s, token limit %s tokens/s (%s)",
            addresses[0],
            agent.upstream,
            agent.budget.rate,
            agent.watcher.enforced.source if agent.watcher.enforced else "default",
        )
        if ready is not None:
            ready(addresses)
        await stop.wait()
    finally:
        agent.gc.release()
        if runner is not None:
            await runner.cleanup()
        await agent.close()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop (a dependency except on Windows) unless turned off with
    ``AUTOSCALER_AGENT_UVLOOP=0``: the proxy's cost is almost all event loop and HTTP parsing."""
    if os.environ.get("AUTOSCALER_AGENT_UVLOOP", "1") == "0":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    log.info("event loop: uvloop")
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_agent(
    config: AgentConfig,
    clock: Clock,
    registry: CollectorRegistry,
    *,
    before_metrics: Callable[[], Awaitable[Any]] | None = None,
    on_close: Callable[[], None] | None = None,
) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config.target is None:
        log.warning(
            "no --target: enforcing --default-token-rate %s tokens/s, published limits not read",
            config.default_token_rate,
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        agent = Agent(config, clock, registry, before_metrics=before_metrics)
        await serve(agent, stop, freeze_gc=os.environ.get("AUTOSCALER_AGENT_GC_FREEZE") != "0")

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(main())
    finally:
        if on_close is not None:
            on_close()
    return 0
