"""Reading a recipe file: YAML parsed and validated into :class:`medslm.recipe.Recipe`, every
problem one :class:`~medslm.errors.ConfigError` naming the file, line and key."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from medslm.errors import ConfigError, MedslmError
from medslm.recipe import Recipe


def _lines(node, path=()) -> dict[tuple, int]:
    """Map every key path of a YAML document to its 1-based line."""
    out = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out[path + (k.value,)] = k.start_mark.line + 1
            out.update(_lines(v, path + (k.value,)))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_lines(v, path + (i,)))
    return out


def _line_of(lines: dict[tuple, int], loc: tuple) -> int:
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Parse and validate a recipe; any problem is one ConfigError naming file, line and key."""
    from medslm.methods.base import format_validation_error, parse_config

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"recipe {p}: cannot read ({e.strerror})") from e
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"{p}:{mark.line + 1 if mark else '?'}: not valid YAML ({getattr(e, 'problem', e)})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}:1: a recipe is a mapping with version, name, model, eval, variants")
    lines = _lines(node)
    try:
        recipe = Recipe(**data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        one = ValidationError.from_exception_data(e.title, [err])
        raise ConfigError(f"{p}:{_line_of(lines, loc)}: {format_validation_error(one)}") from None
    seen = set()
    for i, v in enumerate(recipe.variants):
        if v.name in seen:
            raise ConfigError(f"{p}:{_line_of(lines, ('variants', i, 'name'))}: variants.{i}.name: "
                              f"duplicate variant name {v.name!r}")
        seen.add(v.name)
        for j, s in enumerate(v.steps):
            try:
                parse_config(s)
            except MedslmError as e:
                raise ConfigError(f"{p}:{_line_of(lines, ('variants', i, 'steps', j))}: "
                                  f"variants.{i}.steps.{j}: {e}") from None
    from medslm.models.loading import resolve

    try:
        resolve(recipe.model, pull=False)
    except MedslmError as e:
        raise ConfigError(f"{p}:{_line_of(lines, ('model',))}: model: {e}") from None
    return recipe
