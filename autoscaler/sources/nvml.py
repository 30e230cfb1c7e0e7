"""GPU readings through NVML (pynvml, from the nvidia-ml-py package), for the agent's /metrics.

``NvmlReader.read()`` samples every GPU in a worker thread (NVML calls block, some for
milliseconds) and returns one ``GpuSample`` per GPU; ``NvmlCollector`` exposes the latest
samples as Prometheus gauges, which the ``agent`` scrape preset maps to signals:

    autoscaler_agent_gpu_utilization_ratio{gpu}     nvmlDeviceGetUtilizationRates().gpu / 100
    autoscaler_agent_gpu_memory_used_ratio{gpu}     used / total, nvmlDeviceGetMemoryInfo()
    autoscaler_agent_gpu_memory_used_bytes{gpu}
    autoscaler_agent_gpu_memory_total_bytes{gpu}
    autoscaler_agent_gpu_power_watts{gpu}           nvmlDeviceGetPowerUsage() mW / 1000
    autoscaler_agent_gpu_temperature_celsius{gpu}   nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU)
    autoscaler_agent_gpu_throttle_reasons{gpu}      clock event (throttle) reason bitmask
    autoscaler_agent_gpu_info{gpu,uuid,name}        1
    autoscaler_agent_gpu_read_errors_total{field,reason}

It never raises and never crashes the agent. With no NVML library, no driver or no GPU it logs
one clear line and serves no GPU series (the library missing is final; a driver not loaded is
retried on later reads, quietly). A call that fails for one GPU (GPU lost, not supported, no
permission) leaves that field out of the sample, which Prometheus shows as a missing series,
never as zero, and is counted by (field, reason).

The binding is injectable: the ``pynvml`` module (default, imported on first read) or any object
with the same function names, error class and constants (``autoscaler.testing.fake_nvml``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("autoscaler.sources.nvml")

T = TypeVar("T")

# NVML return codes by name (the binding's constants are used when it has them).
_REASONS = {
    "NVML_ERROR_UNINITIALIZED": "uninitialized",
    "NVML_ERROR_NOT_SUPPORTED": "not_supported",
    "NVML_ERROR_NO_PERMISSION": "no_permission",
    "NVML_ERROR_NOT_FOUND": "not_found",
    "NVML_ERROR_DRIVER_NOT_LOADED": "driver_not_loaded",
    "NVML_ERROR_TIMEOUT": "timeout",
    "NVML_ERROR_IRQ_ISSUE": "irq_issue",
    "NVML_ERROR_LIBRARY_NOT_FOUND": "library_not_found",
    "NVML_ERROR_FUNCTION_NOT_FOUND": "function_not_found",
    "NVML_ERROR_GPU_IS_LOST": "gpu_lost",
    "NVML_ERROR_RESET_REQUIRED": "reset_required",
    "NVML_ERROR_UNKNOWN": "unknown",
}


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU's reading; a field is None when NVML could not give it."""

    index: int
    uuid: str | None = None
    name: str | None = None
    utilization: float | None = None  # fraction of time a kernel was running, 0..1
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    power_watts: float | None = None
    temperature_celsius: float | None = None
    throttle_reasons: int | None = None  # nvmlClocksEventReason* bitmask (0: none)

    @property
    def memory_used_ratio(self) -> float | None:
        if self.memory_used_bytes is None or not self.memory_total_bytes:
            return None
        return self.memory_used_bytes / self.memory_total_bytes


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlReader:
    """Reads every GPU through an NVML binding; ``read()`` runs the calls in a thread."""

    def __init__(self, binding: Any | None = None) -> None:
        self._nvml: Any = binding  # None until the first read imports pynvml
        self._lock = threading.Lock()
        self._initialized = False
        self._final = False  # NVML can never work here (library or package missing)
        self._announced = False  # the one "no GPU metrics" line has been logged
        self._logged: set[tuple[str, str]] = set()
        self.errors: dict[tuple[str, str], int] = {}  # (field, reason) -> count
        self.last: list[GpuSample] = []
        self.reads = 0

    @property
    def available(self) -> bool:
        return self._initialized

    async def read(self) -> list[GpuSample]:
        """Sample every GPU off the event loop; [] when NVML or GPUs are unavailable."""
        return await asyncio.to_thread(self.read_sync)

    def read_sync(self) -> list[GpuSample]:
        with self._lock:
            try:
                samples = self._read_all()
            except Exception as e:  # never crash the agent, whatever the binding does
                self._count("read", "error")
                log.exception("NVML read failed: %s", e)
                samples = []
            self.last = samples
            self.reads += 1
            return samples

    def close(self) -> None:
        with self._lock:
            if self._initialized and self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception as e:
                    log.debug("nvmlShutdown failed: %s", e)
            self._initialized = False

    # --- internals (called with the lock held) ---

    def _announce(self, why: str) -> None:
        if not self._announced:
            self._announced = True
            log.warning("no GPU metrics: %s; the agent serves no GPU series", why)

    def _reason(self, err: BaseException) -> str:
        value = getattr(err, "value", None)
        for const, reason in _REASONS.items():
            if value is not None and getattr(self._nvml, const, None) == value:
                return reason
        return "error"

    def _init(self) -> bool:
        if self._initialized:
            return True
        if self._final:
            return False
        if self._nvml is None:
            try:
                self._nvml = importlib.import_module("pynvml")
            except ImportError:
                self._final = True
                self._announce("the nvidia-ml-py package (pynvml) is not installed")
                return False
        try:
            self._nvml.nvmlInit()
        except Exception as e:
            reason = self._reason(e)
            self._count("init", reason)
            if reason == "library_not_found":
                self._final = True
                self._announce("the NVML library (libnvidia-ml.so.1) was not found")
            elif reason == "driver_not_loaded":
                self._announce("the NVIDIA driver is not loaded (will retry)")
            else:
                self._announce(f"NVML did not initialise ({e}; will retry)")
            return False
        self._initialized = True
        if self._announced:
            log.warning("NVML is available again")
            self._announced = False
        return True

    def _count(self, field: str, reason: str) -> None:
        self.errors[(field, reason)] = self.errors.get((field, reason), 0) + 1

    def _call(self, field: str, gpu: int, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except Exception as e:
            reason = self._reason(e)
            self._count(field, reason)
            if (field, reason) not in self._logged:
                self._logged.add((field, reason))
                level = logging.DEBUG if reason == "not_supported" else logging.WARNING
                log.log(level, "GPU %d: %s unavailable (%s: %s)", gpu, field, reason, e)
            return None

    def _read_all(self) -> list[GpuSample]:
        if not self._init():
            return []
        nvml = self._nvml
        count = self._call("count", -1, nvml.nvmlDeviceGetCount)
        if not count:
            if count == 0:
                self._announce("NVML found no GPU")
            return []
        if self._announced:  # GPUs (back) after "none found"
            log.warning("NVML sees %d GPU(s)", count)
            self._announced = False
        return [self._read_gpu(i) for i in range(int(count))]

    def _read_gpu(self, i: int) -> GpuSample:
        nvml = self._nvml
        handle = self._call("handle", i, lambda: nvml.nvmlDeviceGetHandleByIndex(i))
        if handle is None:
            return GpuSample(index=i)
        uuid = self._call("uuid", i, lambda: _text(nvml.nvmlDeviceGetUUID(handle)))
        name = self._call("name", i, lambda: _text(nvml.nvmlDeviceGetName(handle)))
        util = self._call("utilization", i, lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
        mem = self._call("memory", i, lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        power = self._call("power", i, lambda: nvml.nvmlDeviceGetPowerUsage(handle))
        temp = self._call(
            "temperature",
            i,
            lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
        )
        throttle = self._call("throttle_reasons", i, lambda: self._throttle(handle))
        return GpuSample(
            index=i,
            uuid=uuid,
            name=name,
            utilization=None if util is None else float(util.gpu) / 100.0,
            memory_used_bytes=None if mem is None else float(mem.used),
            memory_total_bytes=None if mem is None else float(mem.total),
            power_watts=None if power is None else float(power) / 1000.0,
            temperature_celsius=None if temp is None else float(temp),
            throttle_reasons=None if throttle is None else int(throttle),
        )

    def _throttle(self, handle: Any) -> int:
        # "Clocks event reasons" is the name since driver 535; older drivers only have the
        # throttle-reasons entry point (same bitmask).
        nvml = self._nvml
        newer = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if newer is not None:
            try:
                return int(newer(handle))
            except Exception as e:
                if self._reason(e) != "function_not_found":
                    raise
        return int(nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))


class NvmlCollector(Collector):
    """Prometheus collector over a reader's latest samples (``reader.last``).

    Collection does no NVML call (a scrape must not block the event loop): refresh with
    ``await reader.read()`` before rendering, or on a timer. A field missing from a sample is a
    missing series; with no GPU, no GPU family is emitted at all.
    """

    def __init__(self, reader: NvmlReader) -> None:
        self.reader = reader

    def collect(self) -> Iterator[Any]:
        samples = list(self.reader.last)
        gauges: list[tuple[str, str, Callable[[GpuSample], float | None]]] = [
            (
                "autoscaler_agent_gpu_utilization_ratio",
                "Fraction of the last sample period a kernel ran on the GPU (NVML), 0..1.",
                lambda s: s.utilization,
            ),
            (
                "autoscaler_agent_gpu_memory_used_ratio",
                "GPU memory used / total (NVML), 0..1.",
                lambda s: s.memory_used_ratio,
            ),
            (
                "autoscaler_agent_gpu_memory_used_bytes",
                "GPU memory used, bytes (NVML).",
                lambda s: s.memory_used_bytes,
            ),
            (
                "autoscaler_agent_gpu_memory_total_bytes",
                "GPU memory installed, bytes (NVML).",
                lambda s: s.memory_total_bytes,
            ),
            (
                "autoscaler_agent_gpu_power_watts",
                "GPU board power draw, watts (NVML).",
                lambda s: s.power_watts,
            ),
            (
                "autoscaler_agent_gpu_temperature_celsius",
                "GPU core temperature, degrees Celsius (NVML).",
                lambda s: s.temperature_celsius,
            ),
            (
                "autoscaler_agent_gpu_throttle_reasons",
                "Bitmask of current clock event (throttle) reasons (NVML); 0 is none.",
                lambda s: None if s.throttle_reasons is None else float(s.throttle_reasons),
            ),
        ]
        for name, doc, value in gauges:
            family = GaugeMetricFamily(name, doc, labels=["gpu"])
            for s in samples:
                v = value(s)
                if v is not None:
                    family.add_metric([str(s.index)], v)
            if family.samples:
                yield family
        info = InfoMetricFamily("autoscaler_agent_gpu", "GPU identity (NVML).", labels=["gpu"])
        for s in samples:
            if s.uuid is not None or s.name is not None:
                info.add_metric([str(s.index)], {"uuid": s.uuid or "", "name": s.name or ""})
        if info.samples:
            yield info
        errors = dict(self.reader.errors)
        if errors:
            counter = CounterMetricFamily(
                "autoscaler_agent_gpu_read_errors",
                "NVML calls that failed, by field and reason (the field is then missing).",
                labels=["field", "reason"],
            )
            for (field, reason), n in sorted(errors.items()):
                counter.add_metric([field, reason], float(n))
            yield counter


def main() -> None:
    """``python -m autoscaler.sources.nvml``: read every GPU once and print the exposition."""
    from prometheus_client import CollectorRegistry, generate_latest

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    reader = NvmlReader()
    samples = asyncio.run(reader.read())
    registry = CollectorRegistry()
    registry.register(NvmlCollector(reader))
    print(generate_latest(registry).decode(), end="")
    print(f"# {len(samples)} GPU(s) read; errors: {reader.errors or 'none'}")
    reader.close()


if __name__ == "__main__":
    main()
