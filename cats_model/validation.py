"""Check config values against the type hints of what they configure: a typo in a value fails in one line."""

import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from cats_model.errors import UserError


def check_arguments(target: Any, settings: dict, group: str) -> None:
    """Raise a UserError naming `group.key` for the first value that does not fit `target`'s __init__ hints."""
    hints = {}
    for cls in reversed(getattr(target, "__mro__", [target])):  # subclasses pass **kwargs on to their bases
        try:
            hints.update(typing.get_type_hints(cls.__init__))
        except Exception:  # unresolvable forward references: nothing to check against
            continue
    for key, value in settings.items():
        if key in hints and not fits(value, hints[key]):
            raise UserError(f"{group}.{key}={value!r} is not a valid value: expected {describe(hints[key])}")


def fits(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(fits(value, arg) for arg in get_args(hint))
    if origin is Literal:
        return value in get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # classes, callables, protocols: not judged here


def describe(hint: Any) -> str:
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(describe(arg) for arg in get_args(hint))
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))
