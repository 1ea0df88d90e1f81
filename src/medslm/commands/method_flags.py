"""CLI flags generated from the method configs: one flag per config field of every algorithm of a
method (``--group-size`` for ``group_size``), its help the field's ``description`` and its default
read from the field, so no flag table restates a default. A field may name its own flag in
``json_schema_extra={"flag": "--asymmetric"}`` (a boolean whose flag sets it to the opposite of its
default). Built only for the subcommand being run: the configs' modules import torch, and
``medslm --help`` must not."""

from __future__ import annotations

import argparse
import typing
from typing import Any

SKIP = {"method"}


def flag_of(name: str, info) -> str:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if extra.get("flag"):
        return extra["flag"]
    if info.annotation is bool and info.default is True:
        return "--no-" + name.replace("_", "-")
    return "--" + name.replace("_", "-")


def _kind(ann) -> tuple[str, Any]:
    """('bool'|'list'|'choice'|'scalar', python type or choices) of a field's annotation."""
    if ann is bool:
        return "bool", bool
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return "choice", args
    if origin is tuple:
        return "list", str
    if args and type(None) in args:  # X | None
        return _kind(next(a for a in args if a is not type(None)))
    return "scalar", ann if ann in (int, float, str) else str


def add_flags(p: argparse.ArgumentParser, method: str) -> None:
    from medslm.methods.base import family_fields

    for name, (cls, info) in family_fields(method).items():
        if name in SKIP:
            continue
        kind, t = _kind(info.annotation)
        desc = (info.description or name.replace("_", " ")).replace("%", "%%")
        default = info.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        algo = cls.model_fields.get("algorithm")
        only = f"[{algo.default}] " if algo is not None and name not in _common(method) else ""
        flag = flag_of(name, info)
        if kind == "bool":  # the flag sets the field to the opposite of its default: say if it is set
            shown = "off"
        h = f"{only}{desc} (default: {shown if shown not in ('', None, ()) else 'none'})"
        if kind == "bool":
            p.add_argument(flag, dest=name, action="store_const", const=not default, default=None, help=h)
        elif kind == "choice":
            p.add_argument(flag, dest=name, type=type(t[0]), choices=t if name != "algorithm" else
                           sorted(_algorithms(method)), default=None, help=h)
        else:
            p.add_argument(flag, dest=name, type=t, default=None, help=h)


def _algorithms(method: str) -> list[str]:
    from medslm.methods.base import METHODS

    return list(METHODS.algorithms(method))


def _common(method: str) -> set[str]:
    from medslm.methods.base import METHODS

    sets = [set(c.model_fields) for c in METHODS.algorithms(method).values()]
    return set.intersection(*sets)


def config_from_args(args: argparse.Namespace, method: str, base: dict) -> dict:
    """``base`` (from --config) updated with every flag given on the command line."""
    from medslm.methods.base import family_fields

    cfg = dict(base)
    cfg["method"] = method
    for name, (_, info) in family_fields(method).items():
        v = getattr(args, name, None)
        if name in SKIP or v is None:
            continue
        cfg[name] = tuple(s.strip() for s in v.split(",") if s.strip()) if _kind(info.annotation)[0] == "list" else v
    return cfg
