"""The one key/type validator for config mappings (export YAML, matrix YAML, benchmark settings).

A fields table maps each key to its accepted Python types and a help text, optionally with more
rules: a set of choices, a minimum, the valid items of a list, a nested section (its own table,
keys named ``section.key`` in errors) or a custom check. A table entry may be a plain
``(types, help)`` tuple (no further rules) or a ``Field``. Every refusal is one ``UserError``
naming the source and the key::

    F: unknown key 'X': did you mean 'Y'? remove or rename it
    F: key 'opset' must be integer: got 'seventeen'. fix the value
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

from coatnet_deploy.errors import UserError


@dataclass(frozen=True)
class Field:
    """One key of a fields table.

    ``check(value, source, key)`` runs after the generic rules and raises UserError itself;
    ``section`` validates a mapping value against its own table; ``items`` are the valid entries
    of a list value (``nonempty`` refuses an empty list).
    """

    types: tuple[type, ...]
    help: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    items: tuple[Any, ...] | None = None
    nonempty: bool = False
    section: Mapping[str, Any] | None = None
    check: Callable[[Any, str, str], None] | None = None


Table = Mapping[str, Union[Field, tuple]]

_TYPE_NAMES = {"str": "string", "int": "integer", "float": "number", "bool": "true/false", "dict": "a mapping", "list": "a list"}


def as_field(entry: Field | tuple) -> Field:
    """A table entry -> Field (a ``(types, help)`` tuple is a field without further rules)."""
    return entry if isinstance(entry, Field) else Field(tuple(entry[0]), entry[1] if len(entry) > 1 else "")


def type_name(types: tuple[type, ...]) -> str:
    """(int, NoneType) -> 'integer or null': the words error messages use for types."""
    names = ["null" if t is type(None) else _TYPE_NAMES[t.__name__] for t in types]
    return " or ".join(dict.fromkeys(names))


def _unknown_key(key: Any, table: Table, source: str, prefix: str) -> UserError:
    import difflib

    close = [k for k in table if k.replace("_", "") == str(key).replace("_", "").replace("-", "")]
    close = close or difflib.get_close_matches(str(key), list(table), n=1, cutoff=0.8)
    hint = f"did you mean '{prefix}{close[0]}'?" if close else f"valid keys: {', '.join(table)}"
    return UserError(f"{source}: unknown key {prefix + str(key)!r}", hint, "remove or rename it")


def check_fields(values: Mapping[Any, Any], table: Table, source: str, prefix: str = "") -> Mapping[Any, Any]:
    """Check every key of ``values`` against ``table`` -> ``values`` unchanged; UserError on the first bad key.

    ``source`` names where the values came from (a file, "command line"); ``prefix`` is the
    section path of nested tables ("tensorrt.") so errors name the full key.
    """
    for key, value in values.items():
        if key not in table:
            raise _unknown_key(key, table, source, prefix)
        f = as_field(table[key])
        name = prefix + str(key)
        # bool is an int subclass: 'opset: true' must not pass as an integer.
        if not isinstance(value, f.types) or (isinstance(value, bool) and bool not in f.types):
            raise UserError(f"{source}: key '{name}' must be {type_name(f.types)}", f"got {value!r}", "fix the value")
        if value is None:
            continue
        if f.choices is not None and value not in f.choices:
            raise UserError(f"{source}: key '{name}' is '{value}'", f"valid values: {', '.join(map(str, f.choices))}", "fix the value")
        if f.minimum is not None and value < f.minimum:
            why = "it cannot be negative" if f.minimum == 0 else f"it must be at least {f.minimum:g}"
            raise UserError(f"{source}: key '{name}' is {value}", why, "fix the value")
        if f.items is not None:
            singular = name[:-1] if name.endswith("s") else name
            for v in value:
                if v not in f.items:
                    raise UserError(f"{source}: unknown {singular} {v!r}", f"valid {name}: {', '.join(map(str, f.items))}", "fix the list")
        if f.nonempty and not value:
            raise UserError(f"{source}: '{name}' is empty", None, f"list at least one of {', '.join(map(str, f.items or ()))}")
        if f.section is not None:
            check_fields(value, f.section, source, f"{name}.")
        if f.check is not None:
            f.check(value, source, name)
    return values
