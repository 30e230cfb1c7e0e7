"""Policy YAML: strict models and a loader whose errors name the file, line, column and field."""

from autoscaler.config.loader import load_policy, parse_policy, validate_files
from autoscaler.config.models import Actuation, PolicyFile, PolicyRef, Target

__all__ = [
    "Actuation",
    "PolicyFile",
    "PolicyRef",
    "Target",
    "load_policy",
    "parse_policy",
    "validate_files",
]
