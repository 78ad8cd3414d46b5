"""One small registry shape for every family of named things (backbones, text encoders,
explainers, metrics, ...): ``register`` / ``names`` / ``get`` / ``create``, one error message.

Each subpackage holds one :class:`Registry` instance and exposes the thin public functions
(``list_backbones()``, ``create_backbone(...)``, ...) that call it, so every unknown name is
answered the same way: ``Expected a <kind> name, but got 'x'. Available: a, b, c.``
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (classes or factories), kept sorted for listing.

    Args:
        kind: what an entry is, used in error messages (``"backbone"``, ``"explainer"``).

    Example:
        >>> reg: Registry[type] = Registry("widget")
        >>> @reg.register("box")
        ... class Box:
        ...     def __init__(self, size=1):
        ...         self.size = size
        >>> reg.names(), reg.create("box", size=3).size
        (['box'], 3)
        >>> reg.get("bux")
        Traceback (most recent call last):
        ...
        ValueError: Expected a widget name, but got 'bux'. Available: box.
    """

    def __init__(self, kind: str) -> None:
        if not isinstance(kind, str) or not kind:
            raise TypeError(f"Expected `kind` to be a non-empty str, but got {kind!r}.")
        self.kind = kind
        self._entries: dict[str, T] = {}

    @overload
    def register(
        self, name: str, obj: None = None, *, overwrite: bool = False
    ) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, overwrite: bool = False) -> T: ...

    def register(
        self, name: str, obj: T | None = None, *, overwrite: bool = False
    ) -> T | Callable[[T], T]:
        """Add ``obj`` under ``name`` (used as a decorator when ``obj`` is omitted).

        Raises:
            TypeError: ``name`` is not a non-empty str, or ``obj`` is not callable.
            ValueError: ``name`` is taken and ``overwrite`` is False.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"Expected `name` to be a non-empty str, but got {name!r}.")
        if name in self._entries and not overwrite:
            raise ValueError(
                f"Expected a new {self.kind} name, but got {name!r}, which is registered already "
                "(pass overwrite=True to replace it)."
            )

        def add(entry: T) -> T:
            if not callable(entry):
                raise TypeError(
                    f"Expected a callable {self.kind} (class or factory), but got "
                    f"{type(entry).__name__}."
                )
            self._entries[name] = entry
            return entry

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (unknown names raise like :meth:`get`)."""
        self.get(name)
        del self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """The entry registered under ``name``.

        Raises:
            ValueError: unknown ``name``; the message lists the available ones.
        """
        if not isinstance(name, str) or name not in self._entries:
            article = "an" if self.kind[0].lower() in "aeiou" else "a"
            raise ValueError(
                f"Expected {article} {self.kind} name, but got {name!r}. "
                f"Available: {', '.join(self.names())}."
            )
        return self._entries[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the entry registered under ``name`` with ``args`` / ``kwargs``."""
        factory: Any = self.get(name)
        return factory(*args, **kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
