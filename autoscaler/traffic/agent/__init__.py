"""``autoscaler agent``: the per-pod sidecar in front of the model server (docs/agent.md).

- ``budget``: token buckets per model and tenant (pure)
- ``estimate``: request cost estimates and usage from responses and streams (pure)
- ``limits``: which published limit to enforce (pure)
- ``options``: process settings and the command's arguments
- ``metrics``: the agent's Prometheus metrics (injected registry)
- ``watcher``: reads the published limits (HTTP and the mounted ConfigMap)
- ``proxy``: the aiohttp proxy and admin apps
- ``main``: runs both on a real clock given by the CLI
"""
