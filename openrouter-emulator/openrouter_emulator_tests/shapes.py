"""JSON bodies compared by shape: which keys each object has, and which JSON type each value is.

The real bodies in `shared/openrouter/real-payloads/` are few and some are partial, so a `Reference` keeps
what they show: every key seen at each object path (the emulator may send no other), the keys every
*complete* body has there (the emulator must send them), and the JSON types seen at each value path.
Paths read `$.data.provider_responses[]`; `[]` stands for every item of an array.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openrouter_emulator_tests.support import SHARED_PATH

REAL_PAYLOADS = SHARED_PATH / "openrouter" / "real-payloads"


def real_payload(relative: str) -> Any:
    """One real body, parsed; a missing file fails the test (the references are part of the contract)."""
    path = REAL_PAYLOADS / relative
    assert path.is_file(), f"real payload {path} is missing: shared/ must sit beside the repository"
    return json.loads(path.read_text(encoding="utf-8"))


def real_payload_files(folder: str) -> list[Path]:
    directory = REAL_PAYLOADS / folder
    assert directory.is_dir(), f"{directory} is missing: shared/ must sit beside the repository"
    return sorted(directory.glob("*.json"))


def json_type(value: Any) -> str:
    """int and float apart (as a JSON text writes them), bool apart from int."""
    if value is None:
        return "null"
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (dict, "object"),
                       (list, "array")):
        if isinstance(value, kind):
            return name
    raise TypeError(f"not a JSON value: {value!r}")


def walk(value: Any, on_object: Callable[[str, dict[str, Any]], None], on_value: Callable[[str, Any], None],
         path: str = "$") -> None:
    """Call `on_value` for every value (objects and arrays too) and `on_object` for every object, with paths."""
    on_value(path, value)
    if isinstance(value, dict):
        on_object(path, value)
        for key, item in value.items():
            walk(item, on_object, on_value, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            walk(item, on_object, on_value, f"{path}[]")


@dataclass
class Reference:
    """The shape the real bodies of one kind show."""

    keys: dict[str, set[str]] = field(default_factory=dict)  # object path -> every key seen there
    required: dict[str, set[str]] = field(default_factory=dict)  # object path -> keys of every complete one
    types: dict[str, set[str]] = field(default_factory=dict)  # value path -> JSON types seen
    numbers: dict[str, set[float]] = field(default_factory=dict)  # value path -> the numbers seen

    @classmethod
    def of(cls, bodies: Iterable[Any], complete: Iterable[Any]) -> Reference:
        reference = cls()

        def seen_object(path: str, value: dict[str, Any]) -> None:
            reference.keys.setdefault(path, set()).update(value)

        def seen_value(path: str, value: Any) -> None:
            reference.types.setdefault(path, set()).add(json_type(value))
            if json_type(value) in ("int", "float"):
                reference.numbers.setdefault(path, set()).add(value)

        def required_object(path: str, value: dict[str, Any]) -> None:
            reference.required[path] = reference.required.get(path, set(value)) & set(value)

        for body in bodies:
            walk(body, seen_object, seen_value)
        for body in complete:
            walk(body, required_object, lambda path, value: None)
        return reference

    def problems(self, body: Any, *, extra: Mapping[str, set[str]] | None = None,
                 excused: Mapping[str, set[str]] | None = None) -> set[str]:
        """What in `body` no real body shows: keys (beyond `extra`), missing keys (beyond `excused`), types.

        A type is only checked where a real body shows a non-null value; a number the real bodies only ever
        show as `0` may be a float too (JavaScript writes every integral number without a fraction)."""
        extra, excused = extra or {}, excused or {}
        found: set[str] = set()

        def check_object(path: str, value: dict[str, Any]) -> None:
            if path not in self.keys:
                found.add(f"{path}: an object where no real body has one")
                return
            for key in sorted(set(value) - self.keys[path] - extra.get(path, set())):
                found.add(f"{path}.{key}: a key no real body has")
            for key in sorted(self.required.get(path, set()) - set(value) - excused.get(path, set())):
                found.add(f"{path}.{key}: missing, though every complete real body has it")

        def check_value(path: str, value: Any) -> None:
            real = self.types.get(path)
            kind = json_type(value)
            if real is None or real <= {"null"} or kind in real:
                return
            if kind == "float" and "int" in real and self.numbers.get(path, set()) <= {0}:
                return
            found.add(f"{path}: {kind}, where the real bodies have {sorted(real)}")

        walk(body, check_object, check_value)
        return found
