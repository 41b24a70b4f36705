"""Where things are: the shipped YAML configs (training configs and eval suites, package data addressable by
name), and whether a string names a Hub repo or a local path (:func:`looks_like_hub_id`).

They live in ``gemma4_saelens_ext/configs/{training,evals}/`` inside the package, so an installed wheel has them; the
repository's top-level ``training_configs/`` and ``evals/`` are links to those folders (one copy, for users to read
and copy). A path is tried as given first (a user's own file); a bare name (``demo``, ``demo.yaml``) or the folder
names users see (``evals/demo.yaml``, ``training_configs/NAME.yaml``) then mean the shipped file, so
``gemma4-sae train demo_gemma3_270m_nf4`` and ``load_suite("demo")`` work from any directory, checkout or not. Any
other path that does not exist is an error: ``my_suites/demo.yaml`` never falls back to the shipped ``demo``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gemma4_saelens_ext.errors import MissingFileError, UserError, close_matches, expect_mapping

__all__ = ["CONFIG_DIRS", "resolve_project_file", "shipped_configs", "read_yaml_mapping", "looks_like_hub_id"]

_PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"
#: folder name as users write it (``training_configs/x.yaml``) -> the package folder holding those files
CONFIG_DIRS = {"training_configs": _PACKAGE_CONFIGS / "training", "evals": _PACKAGE_CONFIGS / "evals"}


def shipped_configs(folder: str) -> dict[str, Path]:
    """Name -> path of every config shipped in ``folder`` (``training_configs`` or ``evals``)."""
    return {p.stem: p for p in sorted(CONFIG_DIRS[folder].glob("*.yaml"))}


def resolve_project_file(path: str | Path, folder: str) -> Path:
    """``path`` itself when it is a file; else, for a bare name or ``FOLDER/NAME.yaml``, the shipped config of that
    name. An explicit path that does not exist raises :class:`~gemma4_saelens_ext.errors.MissingFileError`."""
    p = Path(path)
    if p.is_file():
        return p
    shipped = shipped_configs(folder)
    listing = f"shipped {folder}: {', '.join(shipped) or 'none'}"
    parts = str(path).replace("\\", "/").split("/")  # as typed: ./demo.yaml is a path, not a bare name
    bare = len(parts) == 1 or (len(parts) == 2 and parts[0] == folder)
    if p.is_dir() or not bare:
        raise MissingFileError(f"{path} is {'a folder' if p.is_dir() else 'not a file (no such path)'}; {listing}.",
                               "give the path of an existing YAML file, or a shipped name without a folder.")
    stem = p.stem if p.suffix == ".yaml" else p.name
    if stem in shipped:
        return shipped[stem]
    near = close_matches(stem, shipped)
    raise MissingFileError(f"{path} is neither a file nor a shipped config"
                           + (f" (did you mean {', '.join(near)}?)" if near else "") + f"; {listing}.")


def read_yaml_mapping(path: str | Path, where: str | None = None) -> dict[str, Any]:
    """A YAML file that must hold a mapping (a config): a syntax error names the file and line, a list or a scalar
    at the top is refused, an empty file gives ``{}``."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UserError(f"{p}{at}: not valid YAML ({getattr(e, 'problem', None) or e}).",
                        "fix the YAML syntax there (indentation, a missing `:` or quote).") from None
    except UnicodeDecodeError:
        raise UserError(f"{p} is not a text file.", "give a YAML file.") from None
    return expect_mapping(where or str(p), data)


def looks_like_hub_id(s: str | Path) -> bool:
    """True for a Hugging Face Hub repo id (``owner/name``): exactly one slash, not absolute or relative
    (``/``, ``.``, ``~``), no data-file suffix, and no local folder of its first component (``runs/ds`` is local
    when ``runs`` exists here). A local path the caller has already found to exist is not asked about."""
    s = str(s)
    return not (s.startswith((".", "/", "~")) or Path(s).suffix in (".parquet", ".jsonl", ".json", ".yaml", ".txt")
                or s.count("/") != 1 or Path(s.split("/")[0]).exists())
