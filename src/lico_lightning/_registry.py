"""One small registry shape for every family of named things (backbones, text encoders,
explainers, metrics, ...): ``register`` / ``names`` / ``get`` / ``create``, one error message.

Each subpackage holds one :class:`Registry` instance and exposes the thin public functions
(``list_backbones()``, ``create_backbone(...)``, ...) that call it, so every unknown name is
answered the same way: ``Expected a <kind> name, but got 'x'. Available: a, b, c.``
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar, overload

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (classes or factories), kept sorted for listing.

    Args:
        kind: what an entry is, used in error messages (``"backbone"``, ``"explainer"``).
        base: entries must be subclasses of this class (``None``: any callable).

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

    def __init__(self, kind: str, base: type | None = None) -> None:
        if not isinstance(kind, str) or not kind:
            raise TypeError(f"Expected `kind` to be a non-empty str, but got {kind!r}.")
        self.kind = kind
        self.base = base
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

        The re-registration rule, for every registry of the package: a taken ``name`` raises
        unless ``overwrite``; the same definition registered again (its module executed a
        second time, e.g. by pytest's importlib doctest collection) keeps the first entry.

        Raises:
            TypeError: ``name`` is not a non-empty str, ``obj`` is not callable, or not a
                subclass of ``base``.
            ValueError: ``name`` is taken (by another definition) and ``overwrite`` is False.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"Expected `name` to be a non-empty str, but got {name!r}.")

        def add(entry: T) -> T:
            if not callable(entry):
                raise TypeError(
                    f"Expected a callable {self.kind} (class or factory), but got "
                    f"{type(entry).__name__}."
                )
            if self.base is not None and not (
                isinstance(entry, type) and issubclass(entry, self.base)
            ):
                article = "an" if self.base.__name__[0].lower() in "aeiou" else "a"
                raise TypeError(
                    f"Expected {article} {self.base.__name__} subclass, but got {entry!r}."
                )
            if name in self._entries and not overwrite:
                if _same_definition(self._entries[name], entry):
                    return entry  # the first registration stays
                raise ValueError(
                    f"Expected a new {self.kind} name, but got {name!r}, which is registered "
                    "already (pass overwrite=True to replace it)."
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

    def check_names(self, names: str | Sequence[str]) -> list[str]:
        """``names`` (one name or several) checked and de-duplicated in order.

        Raises:
            ValueError: an unknown name, as :meth:`get`.
        """
        if isinstance(names, str):
            names = [names]
        for name in names:
            self.get(name)
        return list(dict.fromkeys(names))

    def check_options(self, name: str, options: Mapping[str, Any]) -> None:
        """Raise unless every key of ``options`` is a keyword option of the class registered as
        ``name`` (its ``__init__`` parameters after the first argument, e.g. the model,
        following ``**kwargs`` up to the base class that takes them).

        Raises:
            ValueError: unknown ``name``, or an option it does not take (the message lists the
                options it has).
        """
        accepted = constructor_options(self.get(name))
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(
                f"Expected options of the {name!r} {self.kind} among {accepted}, but got "
                f"{', '.join(repr(k) for k in unknown)}."
            )

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


def _same_definition(old: object, new: object) -> bool:
    """Whether ``new`` is ``old`` or the same class / function defined again (same qualified
    name: a module run twice may be imported under another module name)."""
    return old is new or getattr(old, "__qualname__", None) == getattr(new, "__qualname__", "")


def constructor_options(cls: Any) -> list[str]:
    """Keyword options of ``cls``: its ``__init__`` parameters after ``self`` and the first
    argument, with those of each base class its ``**kwargs`` are passed on to."""
    names: list[str] = []
    for klass in getattr(cls, "__mro__", ()):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        params = list(inspect.signature(init).parameters.values())[2:]  # self, the model
        names += [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return sorted(set(names))
