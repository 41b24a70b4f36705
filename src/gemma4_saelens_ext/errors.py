"""User errors: the one exception type for bad input (:class:`UserError`, with the fix), and the checks that raise it.

A mistake a user can correct (a value out of range, an unknown key, a missing file, a busy output folder, a missing
optional dependency) raises :class:`UserError` or a subclass, with a message that names the key, file or value and
says what to do. ``gemma4-sae`` prints such an error in one paragraph and exits with status 2 (no traceback unless
``--debug``); anything else is a bug and keeps its traceback. ``UserError`` is a ``ValueError`` (and
:class:`MissingFileError` a ``FileNotFoundError``, :class:`MissingDependencyError` an ``ImportError``), so code that
caught those before still does.

A leaf: imports nothing from the package and nothing heavy at import (numpy and torch only inside the checks that
need them).
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "UserError", "MissingFileError", "MissingDependencyError", "OutputBusyError", "BUG_REPORT",
    "close_matches", "check_keys", "expect_mapping", "check_type", "check_range", "check_finite", "check_device",
]

#: where an unexpected error (a bug) should be reported; printed under its traceback
BUG_REPORT = ("This is a bug in gemma4-saelens-ext or a library it uses, not a mistake in your input: please report "
              "it on the project's issue tracker with the command line, this traceback and `pip freeze | grep -i "
              "-e sae -e torch -e transformers -e bitsandbytes`.")


class UserError(ValueError):
    """Bad input the user can fix. ``message`` names the key, file or value; ``fix`` says what to do."""

    def __init__(self, message: str, fix: str | None = None):
        self.message, self.fix = message, fix
        super().__init__(message if not fix else f"{message.rstrip()} Fix: {fix}")


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class MissingDependencyError(UserError, ImportError):
    """An optional dependency is missing or broken; only the commands that need it fail."""


class OutputBusyError(UserError):
    """Another process is writing the same output folder or file."""


# ------------------------------------------------------------------------------------------------------------- keys
def close_matches(word: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """The valid names closest to ``word`` (difflib), best first; empty when none is close."""
    return difflib.get_close_matches(str(word), [str(v) for v in valid], n=n, cutoff=0.6)


def check_keys(where: str, keys: Iterable[str], valid: Iterable[str], *, prefix: str = "") -> None:
    """Refuse keys not in ``valid``, naming each (``prefix + key``) with its close matches, then every valid key."""
    valid = sorted({str(v) for v in valid})
    unknown = sorted({str(k) for k in keys} - set(valid))
    if not unknown:
        return
    hints, near = [], []
    for k in unknown:
        m = close_matches(k, valid)
        near += [x for x in m if x not in near]
        if m:
            hints.append(f"{prefix}{k}: did you mean {' or '.join(prefix + x for x in m)}?")
    rest = near + [v for v in valid if v not in near]
    raise UserError(f"{where}: unknown keys {[prefix + k for k in unknown]}" + (f" ({'; '.join(hints)})" if hints
                    else "") + f"; valid keys: {', '.join(prefix + v for v in rest)}.",
                    "fix the spelling (the closest valid keys are listed first).")


def _kind(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return f"the text {value!r}"
    return f"{type(value).__name__} {value!r}"


def expect_mapping(where: str, data: Any, *, example: str = "KEY: VALUE") -> dict[str, Any]:
    """``data`` when it is a mapping (``None`` -> ``{}``); a YAML list or scalar where keys are expected is refused."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise UserError(f"{where}: expected a mapping (lines of `{example}`), got {_kind(data)}.",
                        "write the settings as `key: value` lines (no leading `- `).")
    return dict(data)


# ------------------------------------------------------------------------------------------------------------ types
def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a text", type(None): "null"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, Sequence):
        return "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` fits the annotation ``tp``; annotations this does not know accept anything."""
    if tp is Any or tp is object:
        return True
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is type(None):
        return value is None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        inner = args[0] if args and (origin is not tuple or len(args) == 2 and args[1] is Ellipsis) else None
        return inner is None or all(_matches(v, inner) for v in value)
    if origin in (dict, Mapping) or tp is dict:
        return isinstance(value, Mapping)
    return True


def check_type(where: str, value: Any, annotation: Any) -> Any:
    """``value`` when it fits ``annotation`` (int, float, bool, str, None, unions, Literal, list, dict); otherwise a
    UserError naming ``where``, the value and the expected type."""
    if _matches(value, annotation):
        return value
    hint = ""
    if isinstance(value, str) and _matches(_yaml_scalar(value), annotation):
        hint = f" (write {value} without quotes)"
    raise UserError(f"{where}={value!r} should be {_type_name(annotation)}{hint}.",
                    f"set {where} to {_type_name(annotation)}.")


def _yaml_scalar(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


# ----------------------------------------------------------------------------------------------------------- ranges
def check_range(
    where: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    fix: str | None = None,
) -> Any:
    """``value`` when it is a (finite) number in the interval; otherwise a UserError naming ``where`` and the interval.
    ``None`` passes (an optional setting left unset)."""
    if value is None:
        return None
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise UserError(f"{where}={value!r} should be {kind}.", fix or f"set {where} to {kind}.")
    if not math.isfinite(value):
        raise UserError(f"{where}={value!r} is not a finite number.", fix or f"set {where} to a finite number.")
    lo_bad = low is not None and (value <= low if low_open else value < low)
    hi_bad = high is not None and (value >= high if high_open else value > high)
    if lo_bad or hi_bad:
        if low is not None and high is not None:
            want = f"in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
        elif low is not None:
            want = f"{'>' if low_open else '>='} {_num(low)}"
        else:
            want = f"{'<' if high_open else '<='} {_num(high)}"
        raise UserError(f"{where}={value!r} is out of range: it must be {want}.", fix or f"set {where} {want}.")
    return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def check_finite(x: Any, what: str, *, fix: str | None = None) -> Any:
    """``x`` (an array or tensor) when every value is finite; otherwise a UserError with the NaN and inf counts and
    the first rows holding them (a statistic over them would silently skip or propagate them)."""
    import numpy as np

    a = x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if a.dtype.kind not in "fc" or np.isfinite(a).all():
        return x
    n_nan, n_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    bad_rows = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1)) if a.ndim else np.zeros(0, int)
    rows = ", ".join(str(int(i)) for i in bad_rows[:10]) + (", ..." if len(bad_rows) > 10 else "")
    raise UserError(
        f"{what}: {n_nan} NaN and {n_inf} inf values in {len(bad_rows)} of {len(a)} rows (rows {rows}); no statistic "
        "is computed over non-finite activations.",
        fix or "load the model at a precision that does not overflow (nf4, bf16 or fp32 instead of fp16), or drop "
        "those rows.",
    )


# ----------------------------------------------------------------------------------------------------------- device
def check_device(device: Any, where: str = "device") -> str:
    """``device`` when this machine has it (cpu; cuda / cuda:N with CUDA and that many GPUs; mps); otherwise a
    UserError naming ``where`` and what the machine has. Imports torch."""
    import torch

    name = str(device)
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"{where}={name!r} is not a device ({e}).",
                        f"set {where} to cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{where}={name!r}, but this machine has no CUDA device (torch {torch.__version__}, "
                            f"CUDA build {torch.version.cuda or 'none'}).",
                            f"set {where}=cpu, or install a CUDA build of torch on a machine with an NVIDIA GPU.")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise UserError(f"{where}={name!r}, but this machine has {n} CUDA device(s) (0..{n - 1}).",
                            f"set {where}=cuda:0..cuda:{n - 1}.")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"{where}={name!r}, but MPS is not available on this machine.", f"set {where}=cpu.")
    return name
