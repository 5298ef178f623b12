"""Value objects: immutable to the type checker, plain slotted dataclasses at run time.

``@value`` is a frozen, slotted dataclass as mypy sees it: assigning to a field is an error
there, and ``dataclasses.replace`` makes a changed copy. At run time it is a slotted
dataclass that is not frozen, because a frozen dataclass's ``__init__`` sets every field
through ``object.__setattr__``, a call of its own each: a delivery builds about twenty such
objects, and callgrind counted 6.3 % of a delivery's instructions for those calls. Equality
and hashing are the frozen dataclass's (``unsafe_hash``: the hash of the fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

ValueT = TypeVar("ValueT")


@dataclass_transform(frozen_default=True)
def value(cls: type[ValueT]) -> type[ValueT]:
    return dataclass(slots=True, unsafe_hash=True)(cls)
