"""KEDA's external-push scaler: the real grpc.aio server on 127.0.0.1 and a real grpc.aio client
using the committed stubs, as KEDA's Go client would call it (externalscaler.proto)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from autoscaler.actuators.keda_grpc import METRIC_NAME, ExternalScalerServer, target_key
from autoscaler.actuators.proto import externalscaler_pb2 as pb
from autoscaler.actuators.proto import externalscaler_pb2_grpc as pb_grpc
from autoscaler.actuators.published import PublishedDecisions
from autoscaler.core.clock import ManualClock
from autoscaler.core.types import Decision

T0 = 1_700_000_000.0
PROTO = Path(__file__).resolve().parents[2] / "autoscaler/actuators/proto/externalscaler.proto"
READ_TIMEOUT = 10.0  # a safety net so a broken stream fails the test instead of hanging it


def decision(replicas: int, target: str = "ml/iris", ts: float = T0) -> Decision:
    return Decision(
        target=target,
        ts=ts,
        policy="kpa",
        current=1,
        ready=1,
        starting=0,
        proposal=replicas,
        replicas=replicas,
        token_rate=None,
        token_rate_per_replica=None,
        reason="",
        signals_ok=True,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def board(clock: ManualClock) -> PublishedDecisions:
    return PublishedDecisions(clock, max_age_seconds=30)


@pytest.fixture
async def server(board: PublishedDecisions) -> AsyncIterator[ExternalScalerServer]:
    async with ExternalScalerServer(board, host="127.0.0.1", port=0) as srv:
        yield srv


@pytest.fixture
async def stub(server: ExternalScalerServer) -> AsyncIterator[Any]:
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.ExternalScalerStub(channel)


def ref(name: str = "iris", namespace: str = "ml", **metadata: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=metadata)


async def test_metric_spec_is_constant_target_one(stub: Any) -> None:
    # Answered before any decision exists: KEDA asks when it builds the HPA.
    resp = await stub.GetMetricSpec(ref("not-yet"))
    (spec,) = resp.metricSpecs
    assert spec.metricName == METRIC_NAME == "desired-replicas"
    assert spec.targetSizeFloat == 1.0 and spec.targetSize == 1


async def test_get_metrics_and_is_active_follow_the_decision(
    stub: Any, board: PublishedDecisions, clock: ManualClock
) -> None:
    board.publish(decision(3))
    req = pb.GetMetricsRequest(scaledObjectRef=ref(), metricName=METRIC_NAME)
    (value,) = (await stub.GetMetrics(req)).metricValues
    assert value.metricName == METRIC_NAME
    assert value.metricValueFloat == 3.0 and value.metricValue == 3
    assert (await stub.IsActive(ref())).result is True
    board.publish(decision(0, ts=T0 + 1))
    assert (await stub.IsActive(ref())).result is False
    (value,) = (await stub.GetMetrics(req)).metricValues
    assert value.metricValueFloat == 0.0 and value.metricValue == 0


async def test_unknown_is_not_found_and_stale_is_unavailable(
    stub: Any, board: PublishedDecisions, clock: ManualClock
) -> None:
    with pytest.raises(aio.AioRpcError) as e:
        await stub.IsActive(ref("nobody"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    board.publish(decision(2))
    clock.advance(31)
    for call in (
        stub.IsActive(ref()),
        stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(), metricName=METRIC_NAME)),
    ):
        with pytest.raises(aio.AioRpcError) as e:
            await call
        # An error, never "inactive" or 0: KEDA's fallback holds instead of scaling to zero.
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "31s old" in (e.value.details() or "")


async def test_scaler_metadata_names_the_target(stub: Any, board: PublishedDecisions) -> None:
    board.publish(decision(5, target="ml/iris"))
    assert target_key(ref("iris-predictor", target="iris")) == "ml/iris"
    assert target_key(ref("iris-predictor", target="ml/iris")) == "ml/iris"
    assert target_key(ref("iris")) == "ml/iris"
    req = pb.GetMetricsRequest(scaledObjectRef=ref("iris-predictor", target="ml/iris"))
    (value,) = (await stub.GetMetrics(req)).metricValues
    assert value.metricValueFloat == 5.0
    assert value.metricName == METRIC_NAME  # KEDA sent none: ours


async def read(call: Any) -> bool:
    msg = await asyncio.wait_for(call.read(), READ_TIMEOUT)
    assert msg is not aio.EOF
    return bool(msg.result)


async def test_stream_pushes_the_current_state_then_every_flip(
    stub: Any, server: ExternalScalerServer, board: PublishedDecisions
) -> None:
    board.publish(decision(0))
    call = stub.StreamIsActive(ref())
    assert await read(call) is False  # the state when the stream opens
    # Repeats of the same state are not pushed; the next message is the flip to active.
    board.publish(decision(0, ts=T0 + 1))
    board.publish(decision(0, ts=T0 + 2))
    board.publish(decision(1, ts=T0 + 3))  # 0 -> 1: KEDA activates at once
    assert await read(call) is True
    board.publish(decision(4, ts=T0 + 4))  # still active: nothing
    board.publish(decision(0, ts=T0 + 5))
    assert await read(call) is False
    board.publish(decision(1, target="ml/other", ts=T0 + 6))  # another target: not ours
    board.publish(decision(2, ts=T0 + 7))
    assert await read(call) is True
    assert server.service.open_streams == 1
    call.cancel()
    await server_until(lambda: server.service.open_streams == 0)


async def server_until(predicate: Any) -> None:
    """Let the server notice a cancelled stream (a few loop turns, no sleeping)."""
    loop = asyncio.get_running_loop()
    for _ in range(10_000):
        if predicate():
            return
        fut = loop.create_future()
        loop.call_soon(fut.set_result, None)
        await fut
    raise AssertionError("condition not reached")


async def test_stream_for_an_unknown_target_waits_for_its_first_decision(
    stub: Any, board: PublishedDecisions
) -> None:
    call = stub.StreamIsActive(ref("late"))
    await server_until(lambda: board.listeners > 0)
    board.publish(decision(1, target="ml/late"))
    assert await read(call) is True
    call.cancel()


async def test_stream_sends_nothing_for_a_stale_state_on_open(
    stub: Any, board: PublishedDecisions, clock: ManualClock
) -> None:
    board.publish(decision(0))
    clock.advance(60)
    call = stub.StreamIsActive(ref())
    await server_until(lambda: board.listeners > 0)
    board.publish(decision(2, ts=clock.now()))
    assert await read(call) is True  # the first message is the fresh state, not the stale one
    call.cancel()


async def test_stream_metric_spec_is_unimplemented(stub: Any) -> None:
    call = stub.StreamMetricSpec(ref())
    with pytest.raises(aio.AioRpcError) as e:
        await asyncio.wait_for(call.read(), READ_TIMEOUT)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_stop_ends_open_streams(board: PublishedDecisions) -> None:
    server = ExternalScalerServer(board, host="127.0.0.1", port=0)
    port = await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ExternalScalerStub(channel)
        board.publish(decision(1))
        call = stub.StreamIsActive(ref())
        assert await read(call) is True
        await server.stop(grace=0)
        with pytest.raises(aio.AioRpcError):
            await asyncio.wait_for(call.read(), READ_TIMEOUT)
    assert server.service.open_streams == 0


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    """The generated descriptor equals what protoc makes of the committed .proto today."""
    protoc = pytest.importorskip("grpc_tools.protoc")
    from google.protobuf import descriptor_pb2

    out = tmp_path / "set.pb"
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTO.parents[3]}",
            f"--descriptor_set_out={out}",
            str(PROTO.relative_to(PROTO.parents[3])),
        ]
    )
    assert rc == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    committed = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(committed)
    fresh.ClearField("source_code_info")

    def drop_json_names(messages: Any) -> None:  # protoc fills them in; the gencode does not
        for m in messages:
            for f in m.field:
                f.ClearField("json_name")
            drop_json_names(m.nested_type)

    drop_json_names(fresh.message_type)
    assert committed == fresh
    service = pb.DESCRIPTOR.services_by_name["ExternalScaler"]
    assert service.full_name == "externalscaler.ExternalScaler"  # the name KEDA dials
    assert [m.name for m in service.methods] == [
        "IsActive",
        "StreamIsActive",
        "GetMetricSpec",
        "GetMetrics",
        "StreamMetricSpec",
    ]


async def test_an_activation_query_for_an_inactive_target_wakes_the_service(
    stub: Any, board: PublishedDecisions, server: ExternalScalerServer
) -> None:
    woken: list[int] = []
    server.service.on_activation_query = lambda: woken.append(1)
    board.publish(decision(0))
    assert (await stub.IsActive(ref())).result is False
    assert woken == [1]  # the service ticks now: KEDA's next poll sees a fresh decision
    board.publish(decision(2, ts=T0 + 1))
    assert (await stub.IsActive(ref())).result is True
    assert woken == [1]  # an active target needs no early tick
