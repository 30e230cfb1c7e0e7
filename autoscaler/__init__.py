"""KServe autoscaler: policy plugins, guards, the live service, the agent and the simulator."""

from autoscaler import native

# Before anything imports the engine: a compiled build older than its sources must not shadow
# them (autoscaler/native.py).
native.install()
