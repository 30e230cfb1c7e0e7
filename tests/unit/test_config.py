"""The policy YAML: strict models, and a loader that reports every problem at its line and column.

Each problem prints as ``FILE:LINE:COL: path: message``. Positions are 1-based and point at the
offending node: the key of a mapping entry, the item of a sequence, or, for a missing key, the
mapping that should hold it. Most cases build a document from ``HEAD`` (lines 1-5) plus targets
that start on line 6, with ``- name`` at column 5 and the target's keys at column 7.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from autoscaler.config import PolicyFile, load_policy, parse_policy, validate_files
from autoscaler.config.schema import policy_schema
from autoscaler.core.errors import ConfigError, PolicyConfigError, Problem
from autoscaler.policy.guards import TimeWindow
from autoscaler.policy.registry import policy_names

ROOT = Path(__file__).resolve().parents[2]
POLICY_FILES = sorted((ROOT / "policies").rglob("*.yaml"))
BUILTINS = ["gpu", "hpa", "keda", "kpa", "max", "queue", "static", "tokens"]
KNOWN = "known policies: " + ", ".join(policy_names())

HEAD = """\
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: test}
spec:
  targets:
"""


def doc(targets: str) -> str:
    """HEAD plus a target list written at column 1 (it lands at column 5, from line 6 on)."""
    return HEAD + textwrap.indent(textwrap.dedent(targets), "    ")


def problems(text: str, file: str = "p.yaml") -> list[str]:
    with pytest.raises(PolicyConfigError) as info:
        parse_policy(text, file)
    return [str(p) for p in info.value.problems]


def valid(text: str) -> PolicyFile:
    return parse_policy(text, "p.yaml")


STATIC = "policy: {name: static, params: {replicas: 1}}"


# -- a valid document ------------------------------------------------------------------------


def test_a_minimal_target_gets_the_documented_defaults() -> None:
    d = valid(doc(f"- name: a\n  {STATIC}\n"))
    (t,) = d.spec.targets
    assert (t.kind, t.namespace, t.name, t.selector) == ("InferenceService", "default", "a", None)
    assert (t.guards.min_replicas, t.guards.max_replicas) == (1, 10)
    assert (t.guards.stabilization.up_seconds, t.guards.stabilization.down_seconds) == (0, 300)
    assert (t.guards.scale_to_zero.idle_seconds, t.guards.scale_to_zero.grace_seconds) == (300, 30)
    assert t.guards.fallback.mode == "hold"
    assert t.guards.fallback.max_signal_age_seconds == 60
    assert t.guards.hold_while_scaling.enabled is True
    assert t.guards.restart_hold_seconds == 60
    assert t.guards.step_up is None and t.guards.step_down is None
    assert t.token_limits is None
    assert (t.actuation.engine, t.actuation.mode, t.actuation.dry_run) == (
        "knative",
        "floor",
        False,
    )
    assert t.build_policy().name == "static"
    assert str(t.ref()) == "InferenceService/default/a"


def test_yaml_keys_are_camel_case_and_reach_the_models() -> None:
    d = valid(
        doc(
            """\
            - kind: Deployment
              namespace: batch
              name: emb
              policy: {name: queue, params: {targetPerReplica: 4, windowSeconds: 10}}
              guards:
                minReplicas: 0
                maxReplicas: 5
                scaleToZero: {idleSeconds: 60, graceSeconds: 5, maxColdStartSeconds: 30}
                stepUp: {pods: 2, periodSeconds: 15}
                holdWhileScaling: {growthMargin: 0.5}
                restartHoldSeconds: 0
              tokenLimits: {floor: 10, ceiling: 100, maxIncreasePerSecond: 0.1}
              actuation: {engine: keda, mode: pin, dryRun: true}
            """
        )
    )
    (t,) = d.spec.targets
    g = t.guards
    assert (g.min_replicas, g.max_replicas, g.restart_hold_seconds) == (0, 5, 0)
    assert g.scale_to_zero.max_cold_start_seconds == 30
    assert g.step_up is not None and (g.step_up.pods, g.step_up.period_seconds) == (2, 15)
    assert g.hold_while_scaling.growth_margin == 0.5
    assert t.token_limits is not None and t.token_limits.max_increase_per_second == 0.1
    assert t.actuation.dry_run is True
    assert t.build_policy().params.target_per_replica == 4


# -- unknown keys (typos) at every depth ----------------------------------------------------


def test_a_typo_at_the_top_level_is_unknown_and_the_real_key_missing() -> None:
    text = HEAD.replace("metadata:", "metdata:") + f"    - name: a\n      {STATIC}\n"
    assert problems(text) == [
        "p.yaml:1:1: metadata: required key 'metadata' is missing",
        "p.yaml:3:1: metdata: unknown key 'metdata'",
    ]


def test_a_typo_in_the_guards() -> None:
    text = doc(f"- name: a\n  {STATIC}\n  guards:\n    minReplica: 1\n")
    assert problems(text) == [
        "p.yaml:9:9: spec.targets[0].guards.minReplica: unknown key 'minReplica'",
    ]


def test_a_typo_deep_in_the_guards() -> None:
    text = doc(
        f"""\
        - name: a
          {STATIC}
          guards:
            scaleToZero:
              protectedWindows:
                - {{start: "08:00", end: "18:00", timeZone: UTC}}
        """
    )
    assert problems(text) == [
        "p.yaml:11:46: spec.targets[0].guards.scaleToZero.protectedWindows[0].timeZone: "
        "unknown key 'timeZone'",
    ]


def test_a_typo_in_policy_params() -> None:
    text = doc(
        """\
        - name: a
          policy:
            name: queue
            params:
              targetPerReplica: 2
              windowSecond: 10
        """
    )
    assert problems(text) == [
        "p.yaml:11:11: spec.targets[0].policy.params.windowSecond: unknown key 'windowSecond'",
    ]


def test_a_typo_in_flow_style_params_points_at_its_column() -> None:
    text = doc(
        "- name: a\n  policy: {name: queue, params: {targetPerReplica: 2, windowSecond: 1}}\n"
    )
    assert problems(text) == [
        "p.yaml:7:59: spec.targets[0].policy.params.windowSecond: unknown key 'windowSecond'",
    ]


def test_a_typo_in_nested_params_of_a_policy() -> None:
    text = doc(
        """\
        - name: a
          policy:
            name: hpa
            params:
              metrics: [{signal: concurrency, target: 70}]
              behavior:
                scaleDown:
                  policies:
                    - {type: Pods, value: 1, periodSecond: 60}
        """
    )
    # The missing key points at the flow mapping that lacks it, the typo at the typo.
    assert problems(text) == [
        "p.yaml:14:19: spec.targets[0].policy.params.behavior.scaleDown.policies[0].periodSeconds: "
        "required key 'periodSeconds' is missing",
        "p.yaml:14:42: spec.targets[0].policy.params.behavior.scaleDown.policies[0].periodSecond: "
        "unknown key 'periodSecond'",
    ]


def test_a_typo_in_a_member_of_a_max_policy() -> None:
    text = doc(
        """\
        - name: a
          policy:
            name: max
            params:
              policies:
                - name: queue
                  params: {targetPerReplica: 2}
                - name: tokens
                  params:
                    tokensPerReplica: 100
                    targetUtilisation: 0.8
        """
    )
    assert problems(text) == [
        "p.yaml:16:17: spec.targets[0].policy.params.policies[1].params.targetUtilisation: "
        "unknown key 'targetUtilisation'",
    ]


def test_every_member_of_a_max_policy_is_checked_even_when_another_is_wrong() -> None:
    text = doc(
        """\
        - name: a
          policy:
            name: max
            params:
              policies:
                - name: nope
                - name: queue
                  params: {targetPerReplica: 0}
                - name: gpu
                  params: {window: 10}
        """
    )
    assert problems(text) == [
        f"p.yaml:11:15: spec.targets[0].policy.params.policies[0].name: unknown policy 'nope'; "
        f"{KNOWN}",
        "p.yaml:13:24: spec.targets[0].policy.params.policies[1].params.targetPerReplica: "
        "Input should be greater than 0 (got 0)",
        "p.yaml:15:24: spec.targets[0].policy.params.policies[2].params.window: "
        "unknown key 'window'",
    ]


def test_a_max_policy_may_not_contain_a_max() -> None:
    text = doc(
        """\
        - name: a
          policy:
            name: max
            params:
              policies:
                - {name: max, params: {policies: [{name: static, params: {replica: 1}}]}}
        """
    )
    assert problems(text) == [
        "p.yaml:11:16: spec.targets[0].policy.params.policies[0].name: "
        "a max policy cannot contain another max",
    ]


# -- wrong types and values -----------------------------------------------------------------


def test_a_wrong_type_names_the_value() -> None:
    text = doc(f"- name: a\n  {STATIC}\n  guards:\n    maxReplicas: lots\n")
    assert problems(text) == [
        "p.yaml:9:9: spec.targets[0].guards.maxReplicas: Input should be a valid integer, "
        "unable to parse string as an integer (got 'lots')",
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "maxReplicas",
            "2.5",
            "Input should be a valid integer, got a number with a fractional part (got 2.5)",
        ),
        ("minReplicas", "-1", "Input should be greater than or equal to 0 (got -1)"),
        (
            "stabilization",
            "5",
            "Input should be a valid dictionary or instance of Stabilization (got 5)",
        ),
        (
            "restartHoldSeconds",
            "soon",
            "Input should be a valid number, unable to parse string as a number (got 'soon')",
        ),
    ],
)
def test_wrong_values_in_flow_mappings(key: str, value: str, message: str) -> None:
    text = doc(f"- name: a\n  {STATIC}\n  guards: {{{key}: {value}}}\n")
    assert problems(text) == [f"p.yaml:8:16: spec.targets[0].guards.{key}: {message}"]


def test_a_literal_lists_the_allowed_values() -> None:
    text = doc(f"- name: a\n  {STATIC}\n  actuation: {{engine: knative, mode: pinned}}\n")
    assert problems(text) == [
        "p.yaml:8:36: spec.targets[0].actuation.mode: Input should be 'pin', 'floor' or "
        "'target' (got 'pinned')",
    ]


def test_a_mapping_where_a_sequence_belongs() -> None:
    text = HEAD + "    name: a\n"
    assert problems(text) == [
        "p.yaml:5:3: spec.targets: Input should be a valid tuple (got {'name': 'a'})",
    ]


def test_an_empty_target_list() -> None:
    assert problems(HEAD + "    []\n") == [
        "p.yaml:5:3: spec.targets: Tuple should have at least 1 item, not 0",
    ]


def test_a_wrong_api_version() -> None:
    text = HEAD.replace("autoscaler.kserve.io/v1alpha1", "v1") + f"    - name: a\n      {STATIC}\n"
    assert problems(text) == [
        "p.yaml:1:1: apiVersion: Input should be 'autoscaler.kserve.io/v1alpha1' (got 'v1')",
    ]


# -- missing keys point at the mapping that should hold them ------------------------------


def test_a_missing_policy_points_at_its_target() -> None:
    assert problems(doc("- name: a\n  guards: {minReplicas: 1}\n")) == [
        "p.yaml:6:7: spec.targets[0].policy: required key 'policy' is missing",
    ]


def test_a_missing_param_points_at_the_params() -> None:
    text = doc("- name: a\n  policy:\n    name: queue\n    params:\n      windowSeconds: 10\n")
    assert problems(text) == [
        "p.yaml:9:9: spec.targets[0].policy.params.targetPerReplica: "
        "required key 'targetPerReplica' is missing",
    ]


def test_missing_params_point_at_the_policy() -> None:
    assert problems(doc("- name: a\n  policy:\n    name: tokens\n")) == [
        "p.yaml:7:7: spec.targets[0].policy.params.tokensPerReplica: "
        "required key 'tokensPerReplica' is missing",
    ]


def test_a_missing_spec_points_at_the_top() -> None:
    text = (
        "apiVersion: autoscaler.kserve.io/v1alpha1\nkind: AutoscalingPolicy\nmetadata: {name: x}\n"
    )
    assert problems(text) == ["p.yaml:1:1: spec: required key 'spec' is missing"]


# -- cross-field rules name both values -------------------------------------------------


def test_min_above_max_names_both_values() -> None:
    text = doc(f"- name: a\n  {STATIC}\n  guards:\n    minReplicas: 4\n    maxReplicas: 2\n")
    assert problems(text) == [
        "p.yaml:8:7: spec.targets[0].guards: maxReplicas (2) must be >= minReplicas (4)",
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            "{metrics: [{signal: rps, target: 5}], minReplicas: 3, maxReplicas: 2}",
            "maxReplicas (2) must be >= minReplicas (3)",
        ),
        (
            "{trigger: {signal: rps, target: 5}, minReplicaCount: 3, maxReplicaCount: 2}",
            "maxReplicaCount (2) must be >= minReplicaCount (3)",
        ),
    ],
    ids=["hpa", "keda"],
)
def test_min_above_max_inside_policy_params(params: str, message: str) -> None:
    name = "hpa" if "metrics" in params else "keda"
    text = doc(f"- name: a\n  policy:\n    name: {name}\n    params: {params}\n")
    assert problems(text) == [f"p.yaml:9:9: spec.targets[0].policy.params: {message}"]


def test_fallback_replicas_must_lie_within_the_bounds() -> None:
    text = doc(
        f"- name: a\n  {STATIC}\n  guards:\n    maxReplicas: 4\n"
        "    fallback: {mode: replicas, replicas: 9}\n"
    )
    assert problems(text) == [
        "p.yaml:8:7: spec.targets[0].guards: fallback.replicas (9) must be within minReplicas "
        "(1) and maxReplicas (4)",
    ]


def test_token_limits_ceiling_below_floor() -> None:
    text = doc(f"- name: a\n  {STATIC}\n  tokenLimits: {{floor: 100, ceiling: 50}}\n")
    assert problems(text) == [
        "p.yaml:8:7: spec.targets[0].tokenLimits: ceiling (50.0) must be >= floor (100.0)",
    ]


# -- policy names -------------------------------------------------------------------------


def test_an_unknown_policy_lists_the_known_ones() -> None:
    assert problems(doc("- name: a\n  policy: {name: kpaa}\n")) == [
        f"p.yaml:7:16: spec.targets[0].policy.name: unknown policy 'kpaa'; {KNOWN}",
    ]
    assert set(BUILTINS) <= set(policy_names())


# -- YAML-level problems ---------------------------------------------------------------


def test_a_duplicate_key_names_both_lines() -> None:
    text = doc(f"- name: a\n  {STATIC}\n  name: b\n")
    assert problems(text) == [
        "p.yaml:8:7: spec.targets[0].name: duplicate key 'name' (first on line 6)",
    ]


def test_every_duplicate_key_is_reported() -> None:
    text = HEAD.replace("spec:", "kind: Other\nspec:") + doc(
        f"- name: a\n  {STATIC}\n  guards:\n    minReplicas: 1\n    minReplicas: 2\n"
    ).removeprefix(HEAD)
    assert problems(text) == [
        "p.yaml:4:1: kind: duplicate key 'kind' (first on line 2)",
        "p.yaml:11:9: spec.targets[0].guards.minReplicas: duplicate key 'minReplicas' "
        "(first on line 10)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "a: b\n  c: d\n",
            "p.yaml:2:4: invalid YAML: mapping values are not allowed here",
        ),
        (
            "spec:\n  targets: [{name: a}\n",
            "p.yaml:3:1: invalid YAML: while parsing a flow sequence: expected ',' or ']', "
            "but got '<stream end>'",
        ),
        (
            "spec:\n\ttargets: []\n",
            "p.yaml:2:1: invalid YAML: while scanning for the next token: found character "
            "'\\t' that cannot start any token",
        ),
        (
            "a: 1\n---\nb: 2\n",
            "p.yaml:2:1: invalid YAML: expected a single document in the stream: "
            "but found another document",
        ),
        (
            "a: *nowhere\n",
            "p.yaml:1:4: invalid YAML: found undefined alias 'nowhere'",
        ),
        (
            "a: 1\nb: x\x00y\n",
            "p.yaml:2:5: invalid YAML: unacceptable character #x0000: special characters are "
            "not allowed",
        ),
    ],
    ids=["indent", "unclosed", "tab", "two-documents", "alias", "nul"],
)
def test_yaml_syntax_errors_carry_their_position(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_nesting_too_deep_is_a_problem_not_a_crash() -> None:
    (only,) = problems("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert only.startswith("p.yaml:1:")
    assert only.endswith(": invalid YAML: nested too deeply")


@pytest.mark.parametrize("text", ["", "  \n\n", "\t\n"])
def test_an_empty_file(text: str) -> None:
    assert problems(text) == ["p.yaml:1:1: file is empty"]


def test_a_file_of_comments_only() -> None:
    assert problems("# nothing here\n") == ["p.yaml:1:1: file holds no YAML document"]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_the_top_level_must_be_a_mapping(text: str) -> None:
    (only,) = problems(text)
    assert only.startswith("p.yaml:1:1: the top level must be a mapping")


# -- several problems, one report --------------------------------------------------------


def test_every_problem_in_a_file_is_reported_in_file_order() -> None:
    text = doc(
        f"""\
        - name: a
          {STATIC}
          guards: {{minReplicas: 4, maxReplicas: 2}}
        - name: b
          policy: {{name: queue, params: {{targetPerReplica: 1, windowSecond: 3}}}}
          actuation: {{engine: foo}}
          bogus: true
        - name: c
          policy: {{name: nope}}
        """
    )
    assert problems(text) == [
        "p.yaml:8:7: spec.targets[0].guards: maxReplicas (2) must be >= minReplicas (4)",
        "p.yaml:10:59: spec.targets[1].policy.params.windowSecond: unknown key 'windowSecond'",
        "p.yaml:11:19: spec.targets[1].actuation.engine: Input should be 'knative', 'kserve', "
        "'keda' or 'deployment' (got 'foo')",
        "p.yaml:12:7: spec.targets[1].bogus: unknown key 'bogus'",
        f"p.yaml:14:16: spec.targets[2].policy.name: unknown policy 'nope'; {KNOWN}",
    ]


def test_a_failing_target_adds_no_spurious_list_length_error() -> None:
    # pydantic counts only the valid items of a tuple against min_length; the loader drops that.
    (only,) = problems(doc("- name: a\n  policy: {name: nope}\n"))
    assert "at least 1 item" not in only


def test_the_error_carries_structured_problems() -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy(doc(f"- name: a\n  {STATIC}\n  guards: {{maxReplicas: 0}}\n"), "f.yaml")
    (p,) = info.value.problems
    assert p == Problem(
        "f.yaml",
        8,
        16,
        "Input should be greater than or equal to 1 (got 0)",
        "spec.targets[0].guards.maxReplicas",
    )
    assert str(info.value) == str(p)


# -- anchors and merge keys --------------------------------------------------------------

ANCHORED = """\
apiVersion: autoscaler.kserve.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: shared}
spec:
  targets:
    - &llm
      kind: InferenceService
      namespace: llm
      name: chat
      policy: {name: queue, params: {targetPerReplica: 4}}
      guards: &guards
        minReplicas: 1
        maxReplicas: 8
        stabilization: {upSeconds: 0, downSeconds: 600}
    - <<: *llm
      name: code
      guards:
        <<: *guards
        maxReplicas: 24
"""


def test_anchors_and_merge_keys_share_settings() -> None:
    a, b = valid(ANCHORED).spec.targets
    assert (b.kind, b.namespace, b.name) == ("InferenceService", "llm", "code")
    assert b.policy == a.policy
    assert (b.guards.min_replicas, b.guards.max_replicas) == (1, 24)
    assert b.guards.stabilization.down_seconds == 600
    assert a.guards.max_replicas == 8


def test_a_problem_in_an_anchor_is_reported_where_it_is_written_for_every_user() -> None:
    text = ANCHORED.replace("        minReplicas: 1\n", "        minReplica: 1\n")
    assert problems(text) == [
        "p.yaml:12:9: spec.targets[0].guards.minReplica: unknown key 'minReplica'",
        "p.yaml:12:9: spec.targets[1].guards.minReplica: unknown key 'minReplica'",
    ]


def test_a_problem_next_to_a_merge_key_keeps_its_own_position() -> None:
    text = ANCHORED.replace("        maxReplicas: 24\n", "        maxReplicas: 0\n")
    assert problems(text) == [
        "p.yaml:19:9: spec.targets[1].guards.maxReplicas: Input should be greater than or equal "
        "to 1 (got 0)",
    ]


def test_a_merged_key_is_not_a_duplicate_but_a_repeated_one_is() -> None:
    text = ANCHORED + "        maxReplicas: 30\n"
    assert problems(text) == [
        "p.yaml:20:9: spec.targets[1].guards.maxReplicas: duplicate key 'maxReplicas' "
        "(first on line 19)",
    ]


# -- targets: name or selector, each once -------------------------------------------------


def test_a_selector_target() -> None:
    d = valid(doc(f"- selector: {{matchLabels: {{app: chat}}}}\n  {STATIC}\n"))
    (t,) = d.spec.targets
    assert t.selector is not None and t.selector.match_labels == {"app": "chat"}
    assert str(t.ref("chat-1")) == "InferenceService/default/chat-1"


@pytest.mark.parametrize(
    "head",
    ["- name: a\n  selector: {matchLabels: {app: x}}\n", "- namespace: llm\n"],
    ids=["both", "neither"],
)
def test_exactly_one_of_name_or_selector(head: str) -> None:
    assert problems(doc(head + f"  {STATIC}\n")) == [
        "p.yaml:6:7: spec.targets[0]: set exactly one of name or selector",
    ]


def test_an_empty_selector() -> None:
    assert problems(doc(f"- selector: {{matchLabels: {{}}}}\n  {STATIC}\n")) == [
        "p.yaml:6:18: spec.targets[0].selector.matchLabels: Dictionary should have at least "
        "1 item, not 0",
    ]


def test_a_target_listed_twice_is_reported_at_the_second() -> None:
    text = doc(f"- name: a\n  {STATIC}\n- name: b\n  {STATIC}\n- name: a\n  {STATIC}\n")
    assert problems(text) == [
        "p.yaml:10:7: spec.targets[2]: target InferenceService default/a is listed twice "
        "(first as targets[0])",
    ]


def test_a_selector_listed_twice() -> None:
    sel = "- selector: {matchLabels: {app: x, tier: gpu}}\n"
    text = doc(
        f"{sel}  {STATIC}\n{sel.replace('app: x, tier: gpu', 'tier: gpu, app: x')}  {STATIC}\n"
    )
    assert problems(text) == [
        "p.yaml:8:7: spec.targets[1]: target InferenceService default/selector app=x,tier=gpu "
        "is listed twice (first as targets[0])",
    ]


def test_the_same_name_in_another_namespace_or_kind_is_another_target() -> None:
    text = doc(
        f"- name: a\n  {STATIC}\n- name: a\n  namespace: other\n  {STATIC}\n"
        f"- name: a\n  kind: Deployment\n  {STATIC}\n"
    )
    assert len(valid(text).spec.targets) == 3


# -- protected windows -------------------------------------------------------------------


def _window(window: str) -> str:
    return doc(
        f"""\
        - name: a
          {STATIC}
          guards:
            minReplicas: 0
            scaleToZero:
              protectedWindows:
                - {window}
        """
    )


def test_a_protected_window_in_a_named_zone() -> None:
    d = valid(_window('{days: [mon, fri], start: "08:00", end: "18:00", timezone: Europe/Berlin}'))
    (w,) = d.spec.targets[0].guards.scale_to_zero.protected_windows
    assert (w.days, w.start, w.end, w.timezone) == (
        ("mon", "fri"),
        "08:00",
        "18:00",
        "Europe/Berlin",
    )


def test_a_protected_window_with_an_unknown_time_zone() -> None:
    assert problems(_window('{start: "08:00", end: "18:00", timezone: Mars/Olympus}')) == [
        "p.yaml:12:46: spec.targets[0].guards.scaleToZero.protectedWindows[0].timezone: "
        "unknown time zone 'Mars/Olympus'",
    ]


def test_a_protected_window_with_bad_times_and_days() -> None:
    text = _window('{start: "8:00", end: "25:00", days: [mon, funday]}')
    assert problems(text) == [
        "p.yaml:12:16: spec.targets[0].guards.scaleToZero.protectedWindows[0].start: "
        "String should match pattern '^([01]\\d|2[0-3]):[0-5]\\d$' (got '8:00')",
        "p.yaml:12:31: spec.targets[0].guards.scaleToZero.protectedWindows[0].end: "
        "String should match pattern '^([01]\\d|2[0-4]):[0-5]\\d$' (got '25:00')",
        "p.yaml:12:57: spec.targets[0].guards.scaleToZero.protectedWindows[0].days[1]: "
        "Input should be 'mon', 'tue', 'wed', 'thu', 'fri', 'sat' or 'sun' (got 'funday')",
    ]


def test_a_protected_window_needs_a_start() -> None:
    assert problems(_window('{end: "18:00"}')) == [
        "p.yaml:12:15: spec.targets[0].guards.scaleToZero.protectedWindows[0].start: "
        "required key 'start' is missing",
    ]


def test_an_unquoted_time_is_read_by_yaml_as_a_number() -> None:
    # YAML 1.1 reads 18:00 as the base-60 integer 1080 (08:00, with its leading zero, stays a
    # string): the error shows the number YAML produced instead of accepting it.
    assert problems(_window("{start: 08:00, end: 18:00}")) == [
        "p.yaml:12:30: spec.targets[0].guards.scaleToZero.protectedWindows[0].end: "
        "Input should be a valid string (got 1080)",
    ]


def test_protected_window_times_follow_the_zone() -> None:
    w = TimeWindow(days=("mon",), start="08:00", end="18:00", timezone="Europe/Berlin")
    monday_1030_utc = 1_704_709_800.0  # 2024-01-08, a Monday: 11:30 in Berlin
    assert w.contains(monday_1030_utc)
    assert w.contains(monday_1030_utc - 3 * 3600)  # 07:30 UTC is 08:30 in Berlin
    assert not w.contains(monday_1030_utc + 7 * 3600)  # 17:30 UTC is 18:30 in Berlin
    assert not w.contains(monday_1030_utc + 24 * 3600)  # Tuesday


# -- files --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", POLICY_FILES, ids=[str(p.relative_to(ROOT)) for p in POLICY_FILES])
def test_every_shipped_policy_validates(path: Path) -> None:
    d = load_policy(path)
    for t in d.spec.targets:
        assert t.build_policy().name == t.policy.name


def test_the_shipped_policies_are_found() -> None:
    assert len(POLICY_FILES) >= 8
    assert ROOT / "policies" / "baselines" / "knative-kpa.yaml" in POLICY_FILES


def test_a_missing_file_is_a_located_problem(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(PolicyConfigError) as info:
        load_policy(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:0:0: cannot read: No such file or directory"
    ]


def test_a_file_that_is_not_utf8_is_located_at_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"apiVersion: x\nkind: Caf\xe9\n")
    with pytest.raises(PolicyConfigError) as info:
        load_policy(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:2:10: not UTF-8 text: invalid continuation byte (byte 0xe9)"
    ]


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + doc(f"- name: a\n  {STATIC}\n").encode())
    assert load_policy(path).metadata.name == "test"


def test_validate_files_collects_the_problems_of_every_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(doc(f"- name: a\n  {STATIC}\n"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(doc(f"- name: a\n  {STATIC}\n  guards: {{maxReplica: 3}}\n"))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert validate_files([good]) == []
    assert [str(p) for p in validate_files([good, bad, empty])] == [
        f"{bad}:8:16: spec.targets[0].guards.maxReplica: unknown key 'maxReplica'",
        f"{empty}:1:1: file is empty",
    ]


# -- the examples in the docs ------------------------------------------------------------

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TARGET_KEYS = ("policy:", "guards:", "tokenLimits:", "actuation:", "signals:")


def _yaml_blocks() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        parts = path.read_text().split("```yaml\n")[1:]
        for i, part in enumerate(parts):
            out.append((f"{path.relative_to(ROOT)}#{i + 1}", part.split("```")[0]))
    return out


@pytest.mark.parametrize(("where", "block"), _yaml_blocks(), ids=[w for w, _ in _yaml_blocks()])
def test_every_yaml_example_in_the_docs_validates(where: str, block: str) -> None:
    if block.startswith("apiVersion:"):
        text = block
    else:
        # A fragment of one target: its keys, under a named target (with a policy if it has none).
        assert block.startswith(TARGET_KEYS), f"{where}: neither a document nor a target fragment"
        policy = "" if block.startswith("policy:") else f"{STATIC}\n"
        text = doc("- name: doc\n" + textwrap.indent(policy + block, "  "))
    try:
        parse_policy(text, where)
    except PolicyConfigError as e:
        pytest.fail(f"{where}:\n{e}\n---\n{text}")


def test_the_docs_have_examples() -> None:
    assert len([w for w, _ in _yaml_blocks() if w.startswith("docs/policy-reference.md")]) >= 15


# -- the JSON Schema ---------------------------------------------------------------------


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_schema_is_json_and_lists_every_policy() -> None:
    schema = json.loads(json.dumps(policy_schema()))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "AutoscalingPolicy"
    assert set(schema["required"]) == {"apiVersion", "kind", "metadata", "spec"}
    assert schema["additionalProperties"] is False
    defs = schema["$defs"]
    ref = defs["PolicyRef"]
    assert ref["properties"]["name"]["enum"] == policy_names()
    assert [v["properties"]["name"]["const"] for v in ref["oneOf"]] == policy_names()
    for name in BUILTINS:
        assert f"params_{name}" in defs
    assert "tokensPerReplica" in defs["params_tokens"]["properties"]
    assert "minReplicas" in defs["Guards"]["properties"]
    assert "protectedWindows" in defs["ScaleToZero"]["properties"]
    missing = {r for r in _refs(schema) if r.removeprefix("#/$defs/") not in defs}
    assert missing == set()
