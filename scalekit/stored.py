"""A frozen config read back from its stored dict (JSON, YAML, a checkpoint): the ``arch`` key and the field
names checked, one line naming what is wrong. Every network kind's ``from_dict`` reads through here."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from scalekit.errors import ScalekitError


def config_fields(cls: Any, data: Mapping[str, Any], label: str) -> dict[str, Any]:
    """The fields of ``data`` for dataclass ``cls`` (whose ``arch`` names its kind, ``label`` in messages):
    ``arch`` may be absent (configs stored before it was written), else it must be ``cls.arch``; an unknown
    key is an error that lists the known ones."""
    fields = dict(data)
    arch = fields.pop("arch", cls.arch)
    if arch != cls.arch:
        raise ScalekitError(f"config has arch={arch!r}, not a {label} ({cls.arch!r})")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ScalekitError(f"unknown {label} config field(s) {unknown}; known fields: {sorted(known)}")
    return fields
