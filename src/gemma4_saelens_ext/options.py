"""The flags every command spells the same way, as ``simple_parsing`` field builders for the config dataclasses
of every room (a leaf: the config modules of behavior, training, evals, pipeline and the CLI import it).

``--out`` (output folder or file), ``--model`` (embedded name, local folder or Hub id), ``--precision`` (one of
:data:`gemma4_saelens_ext.models.precision.PRECISIONS`), ``--layer`` (an int or a hook name such as
``blocks.12.hook_resid_post``; :func:`gemma4_saelens_ext.models.layers.parse_layer` reads it) and ``--seed`` mean the same
thing in every command. Booleans that default to on are turned off with ``--no-NAME``; list fields take
space- or comma-separated values (``--families werewolf,slug_snail`` or ``--families werewolf slug_snail``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from simple_parsing.helpers import choice, flag
from simple_parsing.helpers import field as sfield

__all__ = ["precision_field", "layer_field", "layer_value", "switch", "split_csv", "positional", "config_from_dict"]


def layer_value(value: Any) -> int | str | None:
    """``"12"`` -> 12; a hook or module name stays a string (checked against the model by ``models.parse_layer``)."""
    if value is None or isinstance(value, int):
        return value
    s = str(value).strip()
    return int(s) if s.lstrip("-").isdigit() else s


def precision_field(default: str | None = "nf4") -> Any:
    from gemma4_saelens_ext.models.precision import PRECISIONS

    return choice(*PRECISIONS, default=default)


def layer_field(default: int | str | None = None) -> Any:
    return sfield(default=default, type=layer_value, metavar="LAYER")


def switch(default: bool, **kwargs: Any) -> Any:
    """A boolean with ``--NAME`` / ``--no-NAME``."""
    return flag(default, negative_prefix="--no-", **kwargs)


def positional(metavar: str, **kwargs: Any) -> Any:
    return sfield(positional=True, metavar=metavar, **kwargs)


def split_csv(values: Iterable[str] | str | None) -> list[str]:
    """``["a,b", "c"]`` or ``"a,b,c"`` -> ``["a", "b", "c"]`` (what a list flag or YAML key may hold)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [part.strip() for v in values for part in str(v).split(",") if part.strip()]


def config_from_dict(cls: type, data: Any, where: str) -> Any:
    """A config dataclass from a mapping (a YAML file's content), nested config dataclasses included. Checked before
    the dataclass is built: the shape (a mapping, not a YAML list or scalar), every key (an unknown one is named with
    its close matches and the valid keys) and every value's type against the field's annotation (``n_splits: '5'``
    is refused, naming ``where.n_splits``); ranges are the dataclass's own ``__post_init__``. ``None`` gives the
    defaults. Errors are :class:`~gemma4_saelens_ext.errors.UserError` (a ValueError)."""
    import typing

    from gemma4_saelens_ext.errors import check_keys, check_type, expect_mapping

    data = expect_mapping(where, data)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(where, data, fields)
    hints = typing.get_type_hints(cls)
    kw = {}
    for k, v in data.items():
        sub = fields[k].default_factory
        if dataclasses.is_dataclass(sub):
            kw[k] = config_from_dict(sub, v, f"{where}.{k}")
        else:
            kw[k] = check_type(f"{where}.{k}", v, hints.get(k, Any))
    return cls(**kw)
