"""A small base for the immutable value types on the start-up path of the CLI.

The wire types (:class:`~tka.key.Key`, :class:`~tka.state.State`,
:class:`~tka.aum.AUM`, ...) were frozen dataclasses. Importing
:mod:`dataclasses` loads :mod:`inspect` (and with it ``ast``, ``dis``,
``tokenize``), and creating each dataclass generates and compiles code:
together several milliseconds of every ``tka lock status``, a command that
should start about as fast as the interpreter. :class:`FrozenRecord` gives
those types what the dataclasses gave them (equality, hash, repr,
immutability, pickling) with no import cost, while each type writes its own
``__init__`` out by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, ClassVar, Final, NoReturn, dataclass_transform

__all__ = ["KEEP", "FrozenInstanceError", "FrozenRecord", "Keep", "slot_setters"]


class Keep:
    """Type of :data:`KEEP`: "leave this field as it is" in a ``replace`` method.

    ``None`` cannot say that, since it is a value many fields may take.
    Tested with ``isinstance``, which narrows the type for checkers (an enum
    would too, but creating one costs more than this whole module).
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = Keep()


class FrozenInstanceError(AttributeError):
    """Raised on an attempt to set or delete a field of a :class:`FrozenRecord`.

    An :class:`AttributeError`, as :class:`dataclasses.FrozenInstanceError` is,
    so code written against the dataclasses keeps working.
    """


# dataclass_transform tells type checkers these classes behave as frozen
# dataclasses (read-only fields, field-wise equality); at run time it only
# marks the class. Each subclass defines its own __init__, which type
# checkers then use instead of one synthesized from the annotations.
@dataclass_transform(eq_default=True, frozen_default=True)
class FrozenRecord:
    """Base of an immutable value type whose fields are listed in ``_fields``.

    A subclass lists its fields in ``_fields`` in the order of its
    ``__init__`` parameters, and its ``__init__`` sets each with
    ``object.__setattr__``. In return it gets what a frozen dataclass has:
    equality between instances of exactly the same class with equal fields,
    a hash of the field values (so a value holding a dict cannot be hashed),
    a repr naming every field, :class:`FrozenInstanceError` on assignment,
    and pickling and copying through ``__init__``.
    """

    __slots__ = ()

    _fields: ClassVar[tuple[str, ...]] = ()
    # All field values as a tuple: one C call, built once per class.
    _values: ClassVar[attrgetter[tuple[Any, ...]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if len(cls._fields) < 2:
            # attrgetter of a single name returns the value, not a 1-tuple.
            raise TypeError(f"{cls.__name__}: a record needs at least two fields")
        cls._values = attrgetter(*cls._fields)

    def __eq__(self, other: object) -> bool:
        # As a dataclass: only the very same class compares, field by field.
        if other.__class__ is self.__class__:
            return self._values(self) == self._values(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values(self))

    def __repr__(self) -> str:
        inner = ", ".join([f"{name}={getattr(self, name)!r}" for name in self._fields])
        return f"{type(self).__qualname__}({inner})"

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise FrozenInstanceError(f"cannot assign to field {name!r} of {type(self).__name__}")

    def __delattr__(self, name: str) -> NoReturn:
        raise FrozenInstanceError(f"cannot delete field {name!r} of {type(self).__name__}")

    def __reduce__(self) -> tuple[type[FrozenRecord], tuple[Any, ...]]:
        # Rebuilt through __init__: the default would restore slots with
        # setattr, which a frozen record refuses. Cached values are not
        # carried over; they are recomputed on first use.
        return (self.__class__, self._values(self))


def slot_setters(cls: type, names: Sequence[str]) -> tuple[Callable[[Any, Any], None], ...]:
    """The ``__set__`` of each named slot of *cls*, in the order given.

    How a record's ``__init__`` sets its fields: its ``__setattr__``
    refuses, and calling a slot's own descriptor costs a third less than
    ``object.__setattr__`` (no lookup of the name), which counts for the
    types made for every AUM read or applied when a chain is opened.
    """
    return tuple(cls.__dict__[name].__set__ for name in names)
