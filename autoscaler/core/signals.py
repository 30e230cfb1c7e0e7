"""Well-known signal names. Sources map what they scrape onto these; policies read them.

Values are target-wide aggregates (sums over the target's pods), except where the name says
otherwise (``*_mean``/``*_max`` and utilisations, which are averages over pods).
"""

from typing import Final

# Replica status, from the Kubernetes status source (or the simulator's cluster model).
REPLICAS: Final = "replicas"  # spec.replicas in force (what is being asked for now)
REPLICAS_READY: Final = "replicas_ready"
REPLICAS_STARTING: Final = "replicas_starting"  # created, not yet ready
COLD_START_SECONDS: Final = "cold_start_seconds"  # measured pod start -> ready, latest

# Load.
CONCURRENCY: Final = "concurrency"  # in-flight requests (queue-proxy / running + waiting)
RPS: Final = "rps"  # requests per second
REQUESTS_TOTAL: Final = "requests_total"  # counter; windows turn it into a rate
RUNNING: Final = "requests_running"  # vllm:num_requests_running summed
WAITING: Final = "requests_waiting"  # vllm:num_requests_waiting summed (queue depth)
KV_CACHE_USAGE: Final = "kv_cache_usage"  # fraction 0..1, mean over pods
PROMPT_TOKENS_TOTAL: Final = "prompt_tokens_total"  # counter
GENERATION_TOKENS_TOTAL: Final = "generation_tokens_total"  # counter
TOKENS_PER_SECOND: Final = "tokens_per_second"  # prompt + generation tokens/s (gauge form)
TTFT_P95_SECONDS: Final = "ttft_p95_seconds"
THROTTLED_TOKENS_PER_SECOND: Final = "throttled_tokens_per_second"  # demand the agent refused
GPU_UTILIZATION: Final = "gpu_utilization"  # fraction 0..1, mean over GPUs of the target
GPU_MEMORY_USED_FRACTION: Final = "gpu_memory_used_fraction"

STATUS_SIGNALS: Final = frozenset({REPLICAS, REPLICAS_READY, REPLICAS_STARTING, COLD_START_SECONDS})
