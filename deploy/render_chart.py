"""Render the kserve-autoscaler Helm chart without helm.

Helm is not installable where the tests run (neither Debian nor PyPI ships it), so the chart is
written in a small subset of Helm's template language, and this module renders exactly that
subset. Anything outside it is an error naming the file and line, never a silent difference
from what helm would produce:

- ``{{ .Values.a.b }}``, ``{{ .Release.Name }}``, ``{{ .Release.Namespace }}``,
  ``{{ .Release.Service }}``, ``{{ .Chart.Name }}``, ``{{ .Chart.Version }}``,
  ``{{ .Chart.AppVersion }}`` (a missing value is an error; helm would print nothing);
- pipelines through ``toYaml``, ``nindent N``, ``indent N`` and ``quote``;
- ``{{ include "name" . }}`` of a ``{{ define "name" }}...{{ end }}`` block;
- ``{{ if PIPELINE }}...{{ else }}...{{ end }}`` with Go's truthiness;
- ``{{/* comments */}}`` and the ``{{-``/``-}}`` whitespace trim markers.

On a machine with helm, ``helm template`` must give the same objects; ``--compare`` checks::

    helm template kserve-autoscaler deploy/helm/kserve-autoscaler -n kserve-autoscaler \\
        > /tmp/helm.yaml
    python deploy/render_chart.py --compare /tmp/helm.yaml

Usage without helm::

    python deploy/render_chart.py --namespace kserve-autoscaler --set dryRun=true \\
        | kubectl apply -f -
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent / "helm" / "kserve-autoscaler"

# An action: {{ ... }}, with optional trim markers ("{{- " and " -}}").
_ACTION = re.compile(r"\{\{(-[ \t\r\n])?(.*?)([ \t\r\n]-)?\}\}", re.DOTALL)
_COMMENT = re.compile(r"/\*.*\*/", re.DOTALL)
_WORD = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s"]+')


class ChartError(Exception):
    """The chart uses something outside the subset, or a value it names is missing."""


@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    pipeline: str
    where: str


@dataclass
class _If:
    pipeline: str
    where: str
    then: list[Any] = field(default_factory=list)
    otherwise: list[Any] = field(default_factory=list)


def _tokens(source: str, name: str) -> list[_Text | tuple[str, str]]:
    """Text pieces and (action, where) pairs, with trim markers applied to the text."""
    out: list[_Text | tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(source):
        text = source[pos : m.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        out.append(_Text(text))
        line = source.count("\n", 0, m.start()) + 1
        out.append((m.group(2).strip(), f"{name}:{line}"))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = source[pos:]
    out.append(_Text(tail.lstrip(" \t\r\n") if trim_next else tail))
    return out


def _parse(source: str, name: str, defines: dict[str, list[Any]]) -> list[Any]:
    """The node tree of one template file; ``define`` blocks go into ``defines``."""
    root: list[Any] = []
    # Each frame: (node list being filled, the If or define name that opened it, where).
    stack: list[tuple[list[Any], Any, str]] = [(root, None, name)]
    for tok in _tokens(source, name):
        body = stack[-1][0]
        if isinstance(tok, _Text):
            if tok.text:
                body.append(tok)
            continue
        action, where = tok
        if _COMMENT.fullmatch(action):
            continue
        word, _, rest = action.partition(" ")
        rest = rest.strip()
        if word == "if":
            node = _If(rest, where)
            body.append(node)
            stack.append((node.then, node, where))
        elif word == "else" and not rest:
            opener = stack[-1][1]
            if not isinstance(opener, _If) or stack[-1][0] is not opener.then:
                raise ChartError(f"{where}: else outside an if")
            stack[-1] = (opener.otherwise, opener, where)
        elif word == "define":
            if len(stack) != 1:
                raise ChartError(f"{where}: define inside a block")
            stack.append(([], ("define", _unquote(rest, where)), where))
        elif word == "end" and not rest:
            if len(stack) == 1:
                raise ChartError(f"{where}: end without a block")
            nodes, opener, _ = stack.pop()
            if isinstance(opener, tuple):
                defines[opener[1]] = nodes
        elif word in {"range", "with", "template", "block", "tpl", "else", "end"}:
            raise ChartError(f"{where}: {{{{ {action} }}}} is outside the renderer's subset")
        else:
            body.append(_Action(action, where))
    if len(stack) != 1:
        raise ChartError(f"{stack[-1][2]}: block never ends")
    return root


def _unquote(word: str, where: str) -> str:
    if len(word) < 2 or word[0] != '"' or word[-1] != '"':
        raise ChartError(f"{where}: expected a quoted string, got {word!r}")
    value = json.loads(word)
    assert isinstance(value, str)
    return value


def _truthy(value: Any) -> bool:
    """Go template truthiness: false, 0, nil and empty strings and collections are false."""
    return (
        value is not None
        and value is not False
        and value != 0
        and value != ""
        and (not isinstance(value, (list, dict)) or bool(value))
    )


def _go_string(value: Any, where: str) -> str:
    """What ``{{ value }}`` prints, for the scalar kinds a chart may print directly."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ChartError(f"{where}: cannot print {type(value).__name__} directly; use toYaml")


def _to_yaml(value: Any) -> str:
    """Helm's toYaml: block style, keys sorted, no trailing newline."""
    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=True, allow_unicode=True)
    if text.endswith("\n...\n"):  # a bare scalar
        text = text[: -len("\n...\n")]
    return text.rstrip("\n")


def _indent(n: int, text: str) -> str:
    pad = " " * n
    return pad + text.replace("\n", "\n" + pad)


class _Renderer:
    def __init__(self, defines: Mapping[str, list[Any]]) -> None:
        self.defines = defines

    def render(self, nodes: list[Any], dot: Any) -> str:
        out: list[str] = []
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _If):
                branch = (
                    node.then
                    if _truthy(self.pipeline(node.pipeline, dot, node.where))
                    else (node.otherwise)
                )
                out.append(self.render(branch, dot))
            else:
                value = self.pipeline(node.pipeline, dot, node.where)
                out.append(_go_string(value, node.where))
        return "".join(out)

    def pipeline(self, text: str, dot: Any, where: str) -> Any:
        commands = [c.strip() for c in _split_pipes(text)]
        value: Any = None
        for i, command in enumerate(commands):
            words = _WORD.findall(command)
            if not words:
                raise ChartError(f"{where}: empty command in {text!r}")
            args = [self.argument(w, dot, where) for w in words[1:]]
            if i > 0:
                args.append(value)
            head = words[0]
            if head.startswith(".") or head.startswith('"'):
                if i > 0 or args:
                    raise ChartError(f"{where}: {head} is not a function")
                value = self.argument(head, dot, where)
            else:
                value = self.call(head, args, dot, where)
        return value

    def argument(self, word: str, dot: Any, where: str) -> Any:
        if word.startswith('"'):
            return _unquote(word, where)
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if word == ".":
            return dot
        if word.startswith("."):
            value = dot
            for part in word[1:].split("."):
                if not isinstance(value, Mapping) or part not in value:
                    raise ChartError(f"{where}: {word} is not set")
                value = value[part]
            return value
        raise ChartError(f"{where}: {word!r} is outside the renderer's subset")

    def call(self, name: str, args: list[Any], dot: Any, where: str) -> Any:
        def arity(n: int) -> None:
            if len(args) != n:
                raise ChartError(f"{where}: {name} takes {n} argument(s), got {len(args)}")

        if name == "toYaml":
            arity(1)
            return _to_yaml(args[0])
        if name in {"nindent", "indent"}:
            arity(2)
            if not isinstance(args[0], int):
                raise ChartError(f"{where}: {name} needs a number of spaces")
            text = _indent(args[0], _go_string(args[1], where))
            return "\n" + text if name == "nindent" else text
        if name == "quote":
            arity(1)
            return json.dumps(_go_string(args[0], where))
        if name == "include":
            arity(2)
            if args[0] not in self.defines:
                raise ChartError(f"{where}: no template named {args[0]!r}")
            return self.render(self.defines[args[0]], args[1])
        raise ChartError(f"{where}: function {name!r} is outside the renderer's subset")


def _split_pipes(text: str) -> list[str]:
    parts, current, quoted = [], [], False
    for i, ch in enumerate(text):
        if ch == '"' and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        if ch == "|" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_files(
    chart: str | Path = CHART,
    *,
    release: str = "kserve-autoscaler",
    namespace: str = "kserve-autoscaler",
    values: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The rendered text of each template file (``templates/x.yaml``), as ``helm template``
    renders it; partials (``_*.tpl``) and files that render to nothing are left out."""
    chart = Path(chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text(encoding="utf-8"))
    defaults = yaml.safe_load((chart / "values.yaml").read_text(encoding="utf-8")) or {}
    dot = {
        "Values": _merge(defaults, values or {}),
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {k[:1].upper() + k[1:]: v for k, v in meta.items()},
    }
    defines: dict[str, list[Any]] = {}
    trees: dict[str, list[Any]] = {}
    for path in sorted((chart / "templates").iterdir()):
        if path.suffix not in {".yaml", ".yml", ".tpl"}:
            continue
        rel = f"templates/{path.name}"
        tree = _parse(path.read_text(encoding="utf-8"), rel, defines)
        if not path.name.startswith("_"):
            trees[rel] = tree
    renderer = _Renderer(defines)
    out: dict[str, str] = {}
    for rel, tree in trees.items():
        text = renderer.render(tree, dot)
        if text.strip():
            out[rel] = text
    return out


def render(
    chart: str | Path = CHART,
    *,
    release: str = "kserve-autoscaler",
    namespace: str = "kserve-autoscaler",
    values: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The Kubernetes objects the chart renders to, in template-file order."""
    objects: list[dict[str, Any]] = []
    for rel, text in render_files(
        chart, release=release, namespace=namespace, values=values
    ).items():
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise ChartError(f"{rel}: renders to invalid YAML: {exc}") from exc
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ChartError(f"{rel}: renders a {type(doc).__name__}, not an object")
            objects.append(doc)
    return objects


def _set(values: dict[str, Any], assignment: str) -> None:
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise SystemExit(f"--set wants KEY=VALUE, got {assignment!r}")
    *parents, leaf = path.split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(raw)


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (str(obj.get("kind")), str(meta.get("namespace", "")), str(meta.get("name")))


def compare(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[str]:
    """Differences between two sets of objects (e.g. ours and ``helm template``'s), by kind,
    namespace and name; empty when they are the same objects."""
    a = {_key(o): o for o in ours}
    b = {_key(o): o for o in theirs}
    out = [f"only in ours: {k}" for k in sorted(a.keys() - b.keys())]
    out += [f"only in theirs: {k}" for k in sorted(b.keys() - a.keys())]
    out += [f"differs: {k}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the chart's subset without helm.")
    parser.add_argument("chart", nargs="?", default=str(CHART))
    parser.add_argument("--name", default="kserve-autoscaler", help="release name")
    parser.add_argument("--namespace", default="kserve-autoscaler")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--values", "-f", action="append", default=[], metavar="FILE")
    parser.add_argument(
        "--compare",
        metavar="FILE",
        help="compare with another rendering (helm template's output); exit 1 if they differ",
    )
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for file in args.values:
        values = _merge(values, yaml.safe_load(Path(file).read_text(encoding="utf-8")) or {})
    for assignment in args.set:
        _set(values, assignment)
    try:
        files = render_files(args.chart, release=args.name, namespace=args.namespace, values=values)
    except ChartError as exc:
        print(f"render_chart: {exc}", file=sys.stderr)
        return 2
    if args.compare:
        with open(args.compare, encoding="utf-8") as f:
            theirs = [d for d in yaml.safe_load_all(f) if d]
        ours = render(args.chart, release=args.name, namespace=args.namespace, values=values)
        problems = compare(ours, theirs)
        for line in problems:
            print(line)
        print(f"{len(ours)} objects; " + ("differences above" if problems else "identical"))
        return 1 if problems else 0
    chart_name = Path(args.chart).resolve().name
    for rel, text in files.items():
        sys.stdout.write(f"---\n# Source: {chart_name}/{rel}\n{text.strip(chr(10))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
