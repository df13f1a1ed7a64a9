"""A lock-free ``cached_property`` for the immutable wire types.

Python 3.11's :class:`functools.cached_property` takes a lock on every first
access (dropped in 3.12 as useless), which costs more than hashing a small AUM.
The wire types are immutable, so two threads computing the same value at once
merely compute it twice and store equal results; no lock is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

__all__ = ["cached"]

T = TypeVar("T")


class cached(Generic[T]):
    """Compute a property once per instance and keep it in the instance dictionary.

    A non-data descriptor: after the first access the instance dictionary
    entry shadows it, so later reads are plain attribute lookups.
    """

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> cached[T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> T | cached[T]:
        if obj is None:
            return self
        value = self.func(obj)
        obj.__dict__[self.name] = value
        return value
