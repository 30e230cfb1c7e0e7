"""The pure decision core: Engine.tick(now, observations) -> list[Decision]."""

from autoscaler.engine.engine import Engine

__all__ = ["Engine"]
