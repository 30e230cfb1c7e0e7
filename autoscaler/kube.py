"""kubernetes-asyncio, without paying for every model and API class it generates.

Import the Kubernetes client from here, never from ``kubernetes_asyncio.client``::

    from autoscaler.kube import ApiClient, AppsV1Api, ApiException

Why: ``kubernetes_asyncio/__init__.py`` imports ``kubernetes_asyncio.client``, whose
``__init__`` imports all 65 generated API classes and all ~770 model classes (and
``client.models``' own ``__init__`` imports them again). That is ~37 MB of RSS in every process
that touches the client, a quarter of the service's memory target, for classes the service never
uses: it reads and writes plain dicts (``_preload_content=False``, dict bodies), and the few
typed calls it makes (a Deployment's scale) need a handful of models.

How: before anything imports kubernetes-asyncio, :func:`install` puts *lazy* stand-ins for the
four import-everything packages into ``sys.modules``: ``kubernetes_asyncio``,
``kubernetes_asyncio.client``, ``kubernetes_asyncio.client.api`` and
``kubernetes_asyncio.client.models``. Each is a module with the real package's ``__path__``,
``__spec__``, ``__all__`` and ``__version__`` and a PEP 562 ``__getattr__`` that imports the
submodule defining a name the first time the name is asked for. The name-to-submodule map is read
from the real ``__init__.py`` (parsed with :mod:`ast`, never executed), so every name the real
package exports still resolves, to the very same object: ``ApiClient.deserialize`` looking up
``kubernetes_asyncio.client.models.V1Scale`` imports ``v1_scale`` (and, through it, only the
models it refers to); ``from kubernetes_asyncio.client import V1Pod`` in a test still works;
``import kubernetes_asyncio.config`` / ``.watch`` load the real subpackages as usual. Everything
else is the real kubernetes-asyncio: its ``ApiClient``, ``Configuration``, REST layer,
config loaders and typed API classes.

Robustness:

- If kubernetes-asyncio is already imported (a test imported it first), nothing is installed and
  the real modules are used: the classes are the same either way.
- If a real ``__init__`` holds anything but docstrings, imports, ``__all__`` and ``__version__``
  (a future release that does more at import time), that package is imported for real, whole:
  slower and bigger, never wrong.
- ``tests/arch/test_kube_imports.py`` fails if importing the service (in a fresh interpreter)
  loads the models wholesale, and checks the lazy names resolve and deserialize.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

_ROOT = "kubernetes_asyncio"
# The packages whose __init__ imports everything, parents first.
_LAZY = (_ROOT, f"{_ROOT}.client", f"{_ROOT}.client.api", f"{_ROOT}.client.models")


class _LazyPackage(types.ModuleType):
    """A package whose exported names are imported on first access (PEP 562)."""

    _exports: dict[str, tuple[str, str | None]]  # name -> (module, attribute or None: the module)

    def __getattr__(self, name: str) -> Any:
        exports = self.__dict__.get("_exports", {})
        where = exports.get(name)
        if where is None:
            if name.startswith("__") or not _is_submodule(self, name):
                raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
            value: Any = importlib.import_module(f"{self.__name__}.{name}")
        else:
            module_name, attr = where
            module = importlib.import_module(module_name)
            value = module if attr is None else getattr(module, attr)
        setattr(self, name, value)  # once: later lookups are plain attribute reads
        return value

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__dict__.get("_exports", {})))


def _is_submodule(package: types.ModuleType, name: str) -> bool:
    return any(
        (Path(p) / name / "__init__.py").is_file() or (Path(p) / f"{name}.py").is_file()
        for p in getattr(package, "__path__", ())
    )


def _exports(init: Path) -> tuple[dict[str, tuple[str, str | None]], dict[str, Any]]:
    """What ``init`` binds: names imported (name -> (module, attribute)) and literal constants.

    Raises ValueError on any statement other than a docstring, an import or a literal
    assignment: such an ``__init__`` must run for real.
    """
    tree = ast.parse(init.read_text(encoding="utf-8"), filename=str(init))
    names: dict[str, tuple[str, str | None]] = {}
    constants: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        if isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            if node.level or node.module is None or any(a.name == "*" for a in node.names):
                raise ValueError(f"{init}:{node.lineno}: relative or star import")
            for alias in node.names:
                names[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname is None:
                    raise ValueError(f"{init}:{node.lineno}: import without 'as'")
                names[alias.asname] = (alias.name, None)
        elif (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            constants[node.targets[0].id] = ast.literal_eval(node.value)
        else:
            raise ValueError(f"{init}:{node.lineno}: {type(node).__name__} runs at import")
    return names, constants


def install() -> bool:
    """Put the lazy packages in ``sys.modules`` (idempotent). True if they are in use."""
    if _ROOT in sys.modules:
        return isinstance(sys.modules[_ROOT], _LazyPackage)
    root_spec = importlib.util.find_spec(_ROOT)  # a top-level name: imports nothing
    if root_spec is None or not root_spec.submodule_search_locations:
        return False  # not installed: the import below raises the usual error
    base = Path(next(iter(root_spec.submodule_search_locations)))
    built: dict[str, _LazyPackage] = {}
    try:
        for name in _LAZY:
            directory = base.joinpath(*name.split(".")[1:])
            init = directory / "__init__.py"
            exports, constants = _exports(init)
            spec = importlib.util.spec_from_file_location(
                name, init, submodule_search_locations=[str(directory)]
            )
            assert spec is not None
            module = _LazyPackage(name)
            module.__spec__ = spec
            module.__file__ = str(init)
            module.__path__ = [str(directory)]
            module.__package__ = name
            module.__loader__ = spec.loader
            module.__dict__.update(constants)
            module._exports = exports
            built[name] = module
    except (OSError, SyntaxError, ValueError):
        return False  # the real packages will be imported, whole
    for name, module in built.items():
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(built[parent], child, module)
    return True


LAZY = install()

# The pieces the service uses, imported from their own modules (through the lazy packages).
from kubernetes_asyncio.client.api.apps_v1_api import AppsV1Api  # noqa: E402
from kubernetes_asyncio.client.api.coordination_v1_api import CoordinationV1Api  # noqa: E402
from kubernetes_asyncio.client.api.core_v1_api import CoreV1Api  # noqa: E402
from kubernetes_asyncio.client.api.custom_objects_api import CustomObjectsApi  # noqa: E402
from kubernetes_asyncio.client.api_client import ApiClient  # noqa: E402
from kubernetes_asyncio.client.configuration import Configuration  # noqa: E402
from kubernetes_asyncio.client.exceptions import ApiException  # noqa: E402
from kubernetes_asyncio.config.incluster_config import load_incluster_config  # noqa: E402
from kubernetes_asyncio.config.kube_config import load_kube_config  # noqa: E402

__all__ = [
    "LAZY",
    "ApiClient",
    "ApiException",
    "AppsV1Api",
    "Configuration",
    "CoordinationV1Api",
    "CoreV1Api",
    "CustomObjectsApi",
    "install",
    "load_incluster_config",
    "load_kube_config",
]
