"""NvmlReader and NvmlCollector over a fake NVML binding (and the real pynvml, whatever this
machine has)."""

from __future__ import annotations

import logging
import threading

import pynvml
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from autoscaler.config.signals import PRESETS
from autoscaler.sources.nvml import GpuSample, NvmlCollector, NvmlReader
from autoscaler.testing.fake_nvml import FakeGpu, FakeNvml

GIB = 1024**3


def h100(**kw: object) -> FakeGpu:
    base: dict[str, object] = {
        "uuid": "GPU-aaaa",
        "utilization_percent": 87,
        "memory_used": 60 * GIB,
        "memory_total": 80 * GIB,
        "power_mw": 612_500,
        "temperature": 71,
        "throttle_reasons": 0x4,
    }
    base.update(kw)
    return FakeGpu(**base)  # type: ignore[arg-type]


def exposition(reader: NvmlReader) -> str:
    registry = CollectorRegistry()
    registry.register(NvmlCollector(reader))
    return generate_latest(registry).decode()


def no_gpu_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "no GPU metrics" in r.getMessage()]


async def test_reads_one_gpu_in_a_worker_thread() -> None:
    nvml = FakeNvml([h100()])
    reader = NvmlReader(nvml)
    [s] = await reader.read()
    assert s == GpuSample(
        index=0,
        uuid="GPU-aaaa",
        name="NVIDIA H100 80GB HBM3",
        utilization=0.87,
        memory_used_bytes=60 * GIB,
        memory_total_bytes=80 * GIB,
        power_watts=612.5,
        temperature_celsius=71,
        throttle_reasons=4,
    )
    assert s.memory_used_ratio == 0.75
    assert reader.errors == {}
    assert reader.available and reader.last == [s]
    threads = {tid for _, tid in nvml.calls}
    assert threading.get_ident() not in threads  # never on the event loop's thread
    reader.close()
    assert nvml.calls[-1][0] == "nvmlShutdown"


async def test_several_gpus() -> None:
    gpus = [h100(uuid=f"GPU-{i}", utilization_percent=10 * i) for i in range(4)]
    samples = await NvmlReader(FakeNvml(gpus)).read()
    assert [(s.index, s.uuid, s.utilization) for s in samples] == [
        (0, "GPU-0", 0.0),
        (1, "GPU-1", 0.1),
        (2, "GPU-2", 0.2),
        (3, "GPU-3", 0.3),
    ]


async def test_library_missing_logs_one_line_and_serves_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = FakeNvml([h100()], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    reader = NvmlReader(nvml)
    with caplog.at_level(logging.DEBUG, logger="autoscaler.sources.nvml"):
        for _ in range(5):
            assert await reader.read() == []
    assert no_gpu_lines(caplog) == [
        "no GPU metrics: the NVML library (libnvidia-ml.so.1) was not found; "
        "the agent serves no GPU series"
    ]
    assert len(caplog.records) == 1
    assert [c for c, _ in nvml.calls] == ["nvmlInit"]  # final: not retried
    assert not reader.available
    assert "autoscaler_agent_gpu_utilization" not in exposition(reader)


async def test_driver_not_loaded_is_retried_quietly_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = FakeNvml([h100()], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    reader = NvmlReader(nvml)
    with caplog.at_level(logging.INFO, logger="autoscaler.sources.nvml"):
        for _ in range(3):
            assert await reader.read() == []
        assert len(no_gpu_lines(caplog)) == 1
        assert "driver is not loaded" in no_gpu_lines(caplog)[0]
        nvml.init_error = None
        assert len(await reader.read()) == 1
    assert [c for c, _ in nvml.calls].count("nvmlInit") == 4
    assert caplog.records[-1].getMessage() == "NVML is available again"
    assert reader.errors == {("init", "driver_not_loaded"): 3}


async def test_no_gpu_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    reader = NvmlReader(FakeNvml([]))
    with caplog.at_level(logging.INFO, logger="autoscaler.sources.nvml"):
        assert await reader.read() == []
        assert await reader.read() == []
    assert no_gpu_lines(caplog) == [
        "no GPU metrics: NVML found no GPU; the agent serves no GPU series"
    ]
    assert exposition(reader) == ""


async def test_gpu_lost_mid_read_leaves_the_rest_missing_and_counts_it() -> None:
    lost = h100(uuid="GPU-lost", lose_after=3)  # handle, uuid and name work, then it falls off
    nvml = FakeNvml([lost, h100(uuid="GPU-ok")])
    reader = NvmlReader(nvml)
    first, second = await reader.read()
    assert (first.uuid, first.name) == ("GPU-lost", "NVIDIA H100 80GB HBM3")
    assert first.utilization is None and first.memory_used_bytes is None
    assert first.power_watts is None and first.temperature_celsius is None
    assert first.throttle_reasons is None
    assert second.utilization == 0.87  # the other GPU is unaffected
    assert reader.errors == {
        ("utilization", "gpu_lost"): 1,
        ("memory", "gpu_lost"): 1,
        ("power", "gpu_lost"): 1,
        ("temperature", "gpu_lost"): 1,
        ("throttle_reasons", "gpu_lost"): 1,
    }
    # Next read: even the handle fails; the GPU is an index with nothing else.
    first, _ = await reader.read()
    assert first == GpuSample(index=0)
    assert reader.errors[("handle", "gpu_lost")] == 1
    text = exposition(reader)
    assert 'autoscaler_agent_gpu_utilization_ratio{gpu="1"} 0.87' in text
    assert 'gpu="0"' not in text.replace('field="handle"', "")  # missing, not zero
    assert 'autoscaler_agent_gpu_read_errors_total{field="handle",reason="gpu_lost"} 1.0' in text


async def test_not_supported_field_is_missing_and_counted() -> None:
    gpu = h100(unsupported={"nvmlDeviceGetPowerUsage", "nvmlDeviceGetCurrentClocksEventReasons"})
    reader = NvmlReader(FakeNvml([gpu]))
    for _ in range(2):
        [s] = await reader.read()
    assert s.power_watts is None and s.throttle_reasons is None
    assert s.utilization == 0.87 and s.temperature_celsius == 71
    assert reader.errors == {
        ("power", "not_supported"): 2,
        ("throttle_reasons", "not_supported"): 2,
    }
    assert "autoscaler_agent_gpu_power_watts" not in exposition(reader)


async def test_old_driver_falls_back_to_throttle_reasons() -> None:
    nvml = FakeNvml([h100(throttle_reasons=0x8)], event_reasons=False)
    [s] = await NvmlReader(nvml).read()
    assert s.throttle_reasons == 8
    names = [c for c, _ in nvml.calls]
    assert names.index("nvmlDeviceGetCurrentClocksEventReasons") < names.index(
        "nvmlDeviceGetCurrentClocksThrottleReasons"
    )


async def test_a_misbehaving_binding_never_raises() -> None:
    class Broken(FakeNvml):
        def nvmlDeviceGetTemperature(self, handle: object, sensor: int) -> int:
            raise RuntimeError("driver bug")

        def nvmlDeviceGetName(self, handle: object) -> bytes:  # type: ignore[override]
            return b"Tesla T4"  # older pynvml returns bytes

    reader = NvmlReader(Broken([h100()]))
    [s] = await reader.read()
    assert s.temperature_celsius is None and s.name == "Tesla T4"
    assert reader.errors == {("temperature", "error"): 1}

    class Exploding(FakeNvml):
        def nvmlDeviceGetCount(self) -> int:
            raise MemoryError

    reader = NvmlReader(Exploding([h100()]))
    assert await reader.read() == []
    assert reader.errors == {("count", "error"): 1}


async def test_exposition_text() -> None:
    reader = NvmlReader(FakeNvml([h100(), h100(uuid="GPU-bbbb", utilization_percent=5)]))
    await reader.read()
    lines = [ln for ln in exposition(reader).splitlines() if not ln.startswith("#")]
    assert lines == [
        'autoscaler_agent_gpu_utilization_ratio{gpu="0"} 0.87',
        'autoscaler_agent_gpu_utilization_ratio{gpu="1"} 0.05',
        'autoscaler_agent_gpu_memory_used_ratio{gpu="0"} 0.75',
        'autoscaler_agent_gpu_memory_used_ratio{gpu="1"} 0.75',
        'autoscaler_agent_gpu_memory_used_bytes{gpu="0"} 6.442450944e+10',
        'autoscaler_agent_gpu_memory_used_bytes{gpu="1"} 6.442450944e+10',
        'autoscaler_agent_gpu_memory_total_bytes{gpu="0"} 8.589934592e+10',
        'autoscaler_agent_gpu_memory_total_bytes{gpu="1"} 8.589934592e+10',
        'autoscaler_agent_gpu_power_watts{gpu="0"} 612.5',
        'autoscaler_agent_gpu_power_watts{gpu="1"} 612.5',
        'autoscaler_agent_gpu_temperature_celsius{gpu="0"} 71.0',
        'autoscaler_agent_gpu_temperature_celsius{gpu="1"} 71.0',
        'autoscaler_agent_gpu_throttle_reasons{gpu="0"} 4.0',
        'autoscaler_agent_gpu_throttle_reasons{gpu="1"} 4.0',
        'autoscaler_agent_gpu_info{gpu="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-aaaa"} 1.0',
        'autoscaler_agent_gpu_info{gpu="1",name="NVIDIA H100 80GB HBM3",uuid="GPU-bbbb"} 1.0',
    ]
    text = exposition(reader)
    assert "# TYPE autoscaler_agent_gpu_utilization_ratio gauge" in text


async def test_the_agent_preset_reads_what_the_collector_serves() -> None:
    reader = NvmlReader(FakeNvml([h100()]))
    await reader.read()
    text = exposition(reader)
    gpu_names = [n for m in PRESETS["agent"] for n in m.metric if "_gpu_" in n]
    assert gpu_names
    for name in gpu_names:
        assert f"\n{name}{{" in text


async def test_the_real_binding_never_crashes(caplog: pytest.LogCaptureFixture) -> None:
    reader = NvmlReader()  # the real pynvml: no GPU on CI machines, maybe one elsewhere
    with caplog.at_level(logging.WARNING, logger="autoscaler.sources.nvml"):
        first = await reader.read()
        second = await reader.read()
    if not reader.available:
        assert first == second == []
        assert len(no_gpu_lines(caplog)) == 1
    else:
        assert len(first) == len(second) >= 0
    reader.close()
