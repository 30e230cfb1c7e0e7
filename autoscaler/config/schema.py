"""The JSON Schema of the policy YAML, for editors and CI.

Policy params are plugin-defined; the schema lists each registered policy's params as a
``oneOf`` keyed by ``policy.name`` so editors can complete them.
"""

from __future__ import annotations

from typing import Any

from autoscaler.config.models import PolicyFile
from autoscaler.policy.registry import get_policy_class, policy_names


def policy_schema() -> dict[str, Any]:
    schema = PolicyFile.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "AutoscalingPolicy"
    defs = schema.setdefault("$defs", {})
    variants = []
    for name in policy_names():
        params = get_policy_class(name).params_model.model_json_schema(
            by_alias=True, ref_template="#/$defs/{model}"
        )
        defs.update(params.pop("$defs", {}))
        key = f"params_{name}"
        defs[key] = params
        variants.append(
            {
                "properties": {"name": {"const": name}, "params": {"$ref": f"#/$defs/{key}"}},
            }
        )
    if "PolicyRef" in defs:
        defs["PolicyRef"]["oneOf"] = variants
        defs["PolicyRef"]["properties"]["name"]["enum"] = policy_names()
    return schema
