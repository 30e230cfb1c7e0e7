"""``autoscaler agent`` arguments: the deploy example's flags, defaults, and clear errors."""

from __future__ import annotations

import math

import pytest

from autoscaler.cli import build_parser, main
from autoscaler.traffic.agent.options import AgentConfig, config_from_args, parse_listen


def config(*argv: str) -> AgentConfig:
    return config_from_args(build_parser().parse_args(["agent", *argv]))


def test_the_deploy_examples_flags() -> None:
    c = config("--upstream", "http://127.0.0.1:8080", "--listen", ":8081", "--nvml")
    assert c.upstream == "http://127.0.0.1:8080"
    assert c.listen == ("0.0.0.0", 8081)
    assert c.metrics_listen == ("0.0.0.0", 9095)
    assert c.nvml is True
    # no target: the published limits are not read, the default applies (a number, not inf)
    assert c.target is None and c.limits_file is None and c.limits_url is None
    assert c.default_token_rate == 2500.0


def test_the_deploy_example_container_parses() -> None:
    from pathlib import Path

    import yaml

    example = Path(__file__).parents[3] / "deploy/examples/inferenceservice-with-agent.yaml"
    (container,) = yaml.safe_load(example.read_text())["spec"]["predictor"]["containers"]
    assert container["command"] == ["autoscaler"]
    c = config_from_args(build_parser().parse_args(container["args"]))
    assert (c.upstream, c.listen, c.nvml) == ("http://127.0.0.1:8080", ("0.0.0.0", 8081), True)
    assert [p["containerPort"] for p in container["ports"]] == [c.listen[1]]
    # the readiness probe goes through the proxy port to the model server, never queued
    assert container["readinessProbe"]["httpGet"]["port"] == c.listen[1]


def test_target_fills_the_limits_file_and_shares_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOSCALER_AGENT_LIMITS_URL", "http://svc:8080")
    c = config(
        "--upstream", "http://127.0.0.1:8080",
        "--target", "llm/chat",
        "--tenant-share", "free=0.1",
        "--tenant-share", "batch=0.5",
        "--default-share", "0.8",
        "--default-token-rate", "unlimited",
        "--metrics-listen", "off",
    )  # fmt: skip
    assert c.limits_file == "/etc/token-limits/chat.json"
    assert c.limits_path == "/tokens/llm/chat"
    assert c.limits_url == "http://svc:8080"
    assert c.shares.of("free") == 0.1 and c.shares.of("batch") == 0.5 and c.shares.of("x") == 0.8
    assert math.isinf(c.default_token_rate)  # only when asked for by name
    assert c.metrics_listen is None


def test_listen_addresses() -> None:
    assert parse_listen(":8081") == ("0.0.0.0", 8081)
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:9095") == ("::1", 9095)
    with pytest.raises(ValueError, match="--listen: expected \\[HOST\\]:PORT, got '8081x'"):
        parse_listen("8081x")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--upstream", "127.0.0.1:8080"], "--upstream: expected http://HOST:PORT"),
        (["--upstream", "https://127.0.0.1:8443"], "--upstream: expected http://HOST:PORT"),
        (["--upstream", "http://u", "--target", "chat"], "--target: expected NAMESPACE/NAME"),
        (["--upstream", "http://u", "--queue-size", "-1"], "--queue-size must be >= 0"),
        (["--upstream", "http://u", "--tenant-share", "free=2"], "share of free must be in"),
        (["--upstream", "http://u", "--listen", "nope"], "--listen: expected"),
    ],
)
def test_bad_flags_exit_2_with_the_flag_named(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["agent", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_negative_default_rate_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["agent", "--upstream", "http://u", "--default-token-rate", "-5"])
    assert info.value.code == 2
    assert "a token rate must be >= 0 or 'unlimited'" in capsys.readouterr().err


def test_cli_wires_the_real_clock_and_nvml_into_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    import autoscaler.traffic.agent.main as agent_main
    from autoscaler.service.clock import SystemClock
    from autoscaler.sources.nvml import NvmlCollector

    calls: list[dict[str, object]] = []

    def fake_run(config: AgentConfig, clock: object, registry: object, **kw: object) -> int:
        calls.append({"config": config, "clock": clock, "registry": registry, **kw})
        return 0

    monkeypatch.setattr(agent_main, "run_agent", fake_run)
    assert main(["agent", "--upstream", "http://127.0.0.1:8080", "--nvml"]) == 0
    assert main(["agent", "--upstream", "http://127.0.0.1:8080"]) == 0
    with_nvml, without = calls
    assert isinstance(with_nvml["clock"], SystemClock)
    collectors = list(with_nvml["registry"]._collector_to_names)  # type: ignore[attr-defined]
    assert [type(c) for c in collectors] == [NvmlCollector]
    reader = collectors[0].reader
    assert with_nvml["before_metrics"] == reader.read  # refreshed before each scrape
    assert with_nvml["on_close"] == reader.close
    assert "before_metrics" not in without
    assert not list(without["registry"]._collector_to_names)  # type: ignore[attr-defined]
