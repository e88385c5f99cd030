"""Dagster run config as a thin overlay on the domain configs of :mod:`fish_platform.ml.config`.

:func:`overlay` makes a ``dg.Config`` with the domain dataclass' fields, every one optional with
``None`` meaning "the default" (the profile's or the dataclass'), and the field's description from the
dataclass. The domain config stays the one home of each default; nothing is copied field by field.
"""

import dataclasses
import typing
from typing import Any

import dagster as dg
import pydantic


def overlay(domain: type, name: str, description: str, exclude: tuple[str, ...] = ()) -> type[dg.Config]:
    """A ``dg.Config`` class whose fields are ``domain``'s, all optional (``None``: the default)."""
    hints = typing.get_type_hints(domain)
    spec: dict[str, Any] = {}
    for item in dataclasses.fields(domain):
        if item.name in exclude:
            continue
        if item.default is not dataclasses.MISSING and item.default is not None:
            default_text = f" (default {item.default!r})"
        elif item.default is dataclasses.MISSING:
            default_text = " (default: the profile's)"
        else:
            default_text = ""
        spec[item.name] = (
            hints[item.name] | None,
            pydantic.Field(default=None, description=item.metadata.get("doc", "") + default_text),
        )
    config = pydantic.create_model(name, __base__=dg.Config, __doc__=description, **spec)
    config.__module__ = "fish_platform.assets.config"
    return config


def overrides(config: dg.Config) -> dict[str, Any]:
    """The fields a run set (not None): apply them with ``dataclasses.replace`` or ``from_profile``."""
    return {name: value for name in type(config).model_fields if (value := getattr(config, name)) is not None}
