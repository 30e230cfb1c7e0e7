"""``autoscaler agent``: the per-pod sidecar in front of the model server (docs/agent.md).

- ``budget``: token buckets per model and tenant (pure)
- ``estimate``: request cost estimates and usage from responses and streams (pure)
- ``limits``: which published limit to enforce (pure)
- ``options``: process settings and the command's arguments
- ``metrics``: the agent's Prometheus metrics (injected registry); the per-request series as
  plain counters exported at scrape time
- ``watcher``: reads the published limits (HTTP and the mounted ConfigMap)
- ``http1``: the proxy port's HTTP/1.1 server (asyncio protocol, httptools)
- ``upstream``: pooled keep-alive connections to the model server (asyncio protocol, httptools)
- ``proxy``: the ``Agent``: admission, metering and relaying on that path; the aiohttp admin app
- ``gcpolicy``: garbage collection timed, the start-up heap frozen once the agent is up
- ``main``: runs both on a real clock given by the CLI
"""
