"""The ``autoscaler`` command: exit codes, located problems on stderr, never a traceback.

Most cases call ``autoscaler.cli.main`` in-process; a few run ``python -m autoscaler`` to prove
the module entry point (the one ``make demo`` and the console script use) works.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoscaler.cli import main
from autoscaler.policy.registry import policy_names

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
KPA_BASELINE = POLICIES / "baselines" / "knative-kpa.yaml"
LLM_CHAT = POLICIES / "llm-chat.yaml"

GOOD = """\
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: good}
spec:
  targets:
    - name: a
      policy: {name: static, params: {replicas: 2}}
"""

# Two problems: a typo in the guards (line 8, column 16) and an unknown engine (9:19).
BAD = """\
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: bad}
spec:
  targets:
    - name: a
      policy: {name: static, params: {replicas: 2}}
      guards: {maxReplica: 3}
      actuation: {engine: nomad}
"""

RECORD_KEYS = {
    "target",
    "ts",
    "policy",
    "current",
    "ready",
    "starting",
    "inputs",
    "proposal",
    "replicas",
    "token_rate",
    "token_rate_per_replica",
    "reason",
    "signals_ok",
    "guards",
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoscaler", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def table(out: str) -> list[tuple[float, str, int | None, int, str]]:
    """Rows of ``decide``'s table: (t, target, raw proposal, final replicas, guards)."""
    lines = out.splitlines()
    assert lines[0].split() == ["t(s)", "target", "signal", "raw", "final", "guards"]
    rows = []
    for line in lines[1:]:
        t, target, _signal, raw, final, *guards = line.split(maxsplit=5)
        rows.append(
            (float(t), target, None if raw == "None" else int(raw), int(final), " ".join(guards))
        )
    return rows


# -- validate -----------------------------------------------------------------------------


def test_validate_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "good.yaml", GOOD)
    assert main(["validate", str(good)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{good}: ok\n"
    assert err == ""


def test_validate_quietly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "good.yaml", GOOD)
    assert main(["validate", "-q", str(good)]) == 0
    assert capsys.readouterr() == ("", "")


def test_validate_reports_every_problem_located(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path / "bad.yaml", BAD)
    assert main(["validate", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{bad}:8:16: spec.targets[0].guards.maxReplica: unknown key 'maxReplica'",
        f"{bad}:9:19: spec.targets[0].actuation.engine: Input should be 'knative', 'kserve', "
        "'keda' or 'deployment' (got 'nomad')",
        "1 of 1 file(s) invalid, 2 problem(s)",
    ]
    assert "Traceback" not in err


def test_validate_several_files_reports_only_the_bad_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path / "good.yaml", GOOD)
    bad = write(tmp_path / "bad.yaml", BAD)
    empty = write(tmp_path / "empty.yaml", "")
    assert main(["validate", str(good), str(bad), str(empty)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing is "ok" when the run fails
    lines = err.splitlines()
    assert [line.split(": ")[0] for line in lines[:-1]] == [
        f"{bad}:8:16",
        f"{bad}:9:19",
        f"{empty}:1:1",
    ]
    assert lines[-1] == "2 of 3 file(s) invalid, 3 problem(s)"


def test_validate_expands_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "b.yaml", GOOD)
    write(tmp_path / "a.yml", GOOD)
    write(tmp_path / "nested" / "deeper" / "c.yaml", GOOD)
    write(tmp_path / "README.md", "not a policy")
    write(tmp_path / "notes.txt", "not a policy")
    assert main(["validate", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        f"{tmp_path / 'a.yml'}: ok",
        f"{tmp_path / 'b.yaml'}: ok",
        f"{tmp_path / 'nested' / 'deeper' / 'c.yaml'}: ok",
    ]


def test_validate_the_shipped_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(POLICIES)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    shipped = sorted(POLICIES.rglob("*.yaml"))
    assert out.splitlines() == [f"{p}: ok" for p in shipped]
    assert f"{KPA_BASELINE}: ok" in out


def test_a_directory_without_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "notes.txt", "nothing")
    assert main(["validate", str(tmp_path)]) == 2
    assert capsys.readouterr() == ("", "autoscaler validate: no policy files found\n")


def test_a_missing_file_is_a_located_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.yaml"
    assert main(["validate", str(missing)]) == 2
    _, err = capsys.readouterr()
    assert err.splitlines() == [
        f"{missing}:0:0: cannot read: No such file or directory",
        "1 of 1 file(s) invalid, 1 problem(s)",
    ]


def test_an_unreadable_entry_in_a_directory_is_a_located_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "looks-like.yaml").mkdir()  # rglob finds it; it cannot be read as a file
    write(tmp_path / "good.yaml", GOOD)
    assert main(["validate", str(tmp_path)]) == 2
    _, err = capsys.readouterr()
    assert err.splitlines() == [
        f"{tmp_path / 'looks-like.yaml'}:0:0: cannot read: Is a directory",
        "1 of 2 file(s) invalid, 1 problem(s)",
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_file_without_read_permission_is_a_located_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = write(tmp_path / "locked.yaml", GOOD)
    locked.chmod(0)
    try:
        assert main(["validate", str(locked)]) == 2
    finally:
        locked.chmod(0o600)
    _, err = capsys.readouterr()
    assert err.splitlines()[0] == f"{locked}:0:0: cannot read: Permission denied"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"kind: Caf\xe9\n", ":1:10: not UTF-8 text: invalid continuation byte (byte 0xe9)"),
        (b"a: 1\nb: \x00\n", ":2:4: invalid YAML: unacceptable character #x0000:"),
        (b"a: [" + b"[" * 5000 + b"\n", ": invalid YAML: nested too deeply"),
        (b"- just\n- a list\n", ":1:1: the top level must be a mapping"),
    ],
    ids=["latin-1", "nul", "deep", "list"],
)
def test_hostile_files_are_problems_not_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, problem: str
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    assert main(["validate", str(path)]) == 2
    _, err = capsys.readouterr()
    first = err.splitlines()[0]
    assert first.startswith(str(path) + ":")
    assert problem in first
    assert "Traceback" not in err


def test_validate_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2
    assert "the following arguments are required: files" in capsys.readouterr().err


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: autoscaler" in capsys.readouterr().err


# -- schema -------------------------------------------------------------------------------


def test_schema_prints_json_naming_every_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    schema = json.loads(out)
    assert schema["title"] == "AutoscalingPolicy"
    assert schema["$defs"]["PolicyRef"]["properties"]["name"]["enum"] == policy_names()
    assert {"kpa", "hpa", "keda", "queue", "tokens", "gpu", "max", "static"} <= set(policy_names())


# -- decide -------------------------------------------------------------------------------


def test_decide_the_knative_baseline_scales_up_with_the_ramp_and_to_zero_at_the_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The bundled sequence over 900 s at 15 s steps: 2 in flight until 90 s, a ramp to 62 by
    # 360 s, a burst to 102 around 405-435 s, a ramp down to 0 at 675 s, then idle.
    assert main(["decide", str(KPA_BASELINE)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    rows = table(out)
    assert len(rows) == 61  # t = 0, 15, ..., 900
    assert {r[1] for r in rows} == {"default/model"}
    final = {t: replicas for t, _, _, replicas, _ in rows}
    # KPA's target is 100 x 70% = 70 concurrent requests per replica.
    assert final[0.0] == 1  # quiet: one replica
    assert final[360.0] == 1  # 57 in flight: still within one replica's target
    assert final[375.0] == 2  # the burst passes 70: a second replica
    assert max(final.values()) == 2
    assert final[705.0] == 1
    # Idle from 720 s: the decider wants 0 at once; the scaleToZero guard holds 1 for the
    # 30 s grace (idleSeconds 0), then lets it go.
    assert rows[48][3:] == (1, "scaleToZero: idle 0s of the 30s required")
    assert rows[49][3:] == (1, "scaleToZero: idle 15s of the 30s required")
    assert [r[2] for r in rows[48:50]] == [0, 0]
    assert final[750.0] == 0
    assert final[900.0] == 0
    assert all(replicas == 0 for t, replicas in final.items() if t >= 750)


def test_decide_the_llm_policy_follows_the_ramp_within_its_bounds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["decide", str(LLM_CHAT), "--step", "30"]) == 0
    rows = table(capsys.readouterr().out)
    final = [r[3] for r in rows]
    ramp = [r[3] for r in rows if 90 <= r[0] <= 390]
    assert ramp == sorted(ramp) and ramp[0] < ramp[-1]  # rises with the load
    assert min(final) == 1  # minReplicas 1: never to zero
    assert max(final) == 32  # maxReplicas 32 caps the burst
    capped = [r for r in rows if r[4] == "bounds: maxReplicas 32"]
    assert capped and all(r[2] is not None and r[2] > 32 for r in capped)
    # The llm policy steps down one replica after 600 s below target (and not while the GPUs
    # are busy): it holds the peak through the idle tail of the 900 s sequence.
    assert rows[-1][2] == 32 and rows[-1][3] == 32


def test_decide_json_emits_decision_records(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decide", str(KPA_BASELINE), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 61
    assert all(set(r) == RECORD_KEYS for r in records)
    first, last = records[0], records[-1]
    assert first["target"] == "default/model"
    assert first["policy"] == "kpa"
    assert (first["ts"], first["current"], first["proposal"], first["replicas"]) == (0.0, 0, 1, 1)
    assert first["signals_ok"] is True
    assert first["inputs"] == {
        "concurrency_panic": 2.0,
        "concurrency_stable": 2.0,
        "excess_burst_capacity": -213.0,
    }
    held = records[48]
    assert held["ts"] == 720.0
    assert held["guards"] == [
        {
            "guard": "scaleToZero",
            "before": 0,
            "after": 1,
            "reason": "idle 0s of the 30s required",
        }
    ]
    assert (last["ts"], last["replicas"], last["guards"]) == (900.0, 0, [])
    assert [r["ts"] for r in records] == [15.0 * i for i in range(61)]


def test_decide_an_invalid_policy_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path / "bad.yaml", BAD)
    assert main(["decide", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[0] == (
        f"{bad}:8:16: spec.targets[0].guards.maxReplica: unknown key 'maxReplica'"
    )
    assert "Traceback" not in err


def test_decide_a_missing_policy_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decide", str(tmp_path / "nope.yaml")]) == 2
    _, err = capsys.readouterr()
    assert err == f"{tmp_path / 'nope.yaml'}:0:0: cannot read: No such file or directory\n"


# -- python -m autoscaler -------------------------------------------------------------------


def test_the_module_entry_point_validates(tmp_path: Path) -> None:
    good = write(tmp_path / "good.yaml", GOOD)
    r = run_module("validate", str(good), str(POLICIES))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"{good}: ok"
    assert r.stderr == ""


def test_the_module_entry_point_exits_2_without_a_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", BAD)
    hostile = tmp_path / "hostile.yaml"
    hostile.write_bytes(b"a: \x00\n")
    r = run_module("validate", str(bad), str(hostile), str(tmp_path / "missing.yaml"))
    assert r.returncode == 2
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        f"{bad}:8:16: spec.targets[0].guards.maxReplica: unknown key 'maxReplica'",
        f"{bad}:9:19: spec.targets[0].actuation.engine: Input should be 'knative', 'kserve', "
        "'keda' or 'deployment' (got 'nomad')",
        f"{hostile}:1:4: invalid YAML: unacceptable character #x0000: special characters are "
        "not allowed",
        f"{tmp_path / 'missing.yaml'}:0:0: cannot read: No such file or directory",
        "3 of 3 file(s) invalid, 4 problem(s)",
    ]


def test_the_module_entry_point_decides_as_json() -> None:
    r = run_module("decide", str(KPA_BASELINE), "--json", "--seconds", "60")
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rec["ts"] for rec in records] == [0.0, 15.0, 30.0, 45.0, 60.0]
    assert all(set(rec) == RECORD_KEYS for rec in records)


def test_run_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import autoscaler.service.app as app

    seen: list[object] = []
    monkeypatch.setattr(app, "main", lambda settings: seen.append(settings) or 0)
    monkeypatch.setenv("AUTOSCALER_SCRAPE_SECONDS", "7")
    monkeypatch.setenv("AUTOSCALER_SCRAPE_MAX_RATE", "50")
    monkeypatch.setenv("AUTOSCALER_TICK_SECONDS", "3")
    assert main(["run", "--config", "p.yaml", "--scrape-max-rate", "0", "--tick-seconds", "1"]) == 0
    (settings,) = seen
    assert (settings.tick_seconds, settings.scrape_max_rate) == (1.0, 0.0)  # type: ignore[attr-defined]
    assert settings.scrape_seconds == 7.0  # type: ignore[attr-defined]
