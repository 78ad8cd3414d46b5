import pytest

from lico_lightning._registry import Registry


def test_register_get_create_and_listing_are_sorted():
    reg: Registry = Registry("widget")
    reg.register("zeta", dict)

    @reg.register("alpha")
    def make(x=1):
        return {"x": x}

    assert reg.names() == ["alpha", "zeta"]
    assert list(reg) == ["alpha", "zeta"] and len(reg) == 2 and "alpha" in reg
    assert reg.get("alpha") is make
    assert reg.create("alpha", x=3) == {"x": 3}


def test_unknown_name_lists_the_available_ones():
    reg: Registry = Registry("gadget")
    reg.register("b", dict)
    reg.register("a", dict)
    with pytest.raises(
        ValueError, match=r"Expected a gadget name, but got 'c'\. Available: a, b\."
    ):
        reg.get("c")
    with pytest.raises(ValueError, match="Available: a, b"):
        reg.create("c")


def test_duplicate_name_needs_overwrite_and_bad_entries_are_type_errors():
    reg: Registry = Registry("widget")
    reg.register("a", dict)
    with pytest.raises(ValueError, match="registered already"):
        reg.register("a", list)
    reg.register("a", list, overwrite=True)
    assert reg.get("a") is list
    with pytest.raises(TypeError, match="non-empty str"):
        reg.register("", dict)
    with pytest.raises(TypeError, match="callable"):
        reg.register("b", 3)
    reg.unregister("a")
    assert reg.names() == []


def test_the_same_definition_registered_again_keeps_the_first_and_base_is_checked():
    class Base:
        def __init__(self, model, size=1):
            self.size = size

    reg: Registry = Registry("widget", base=Base)

    def define():  # the same class defined twice (a module executed a second time)
        class Widget(Base):
            def __init__(self, model, colour="red", **kwargs):
                super().__init__(model, **kwargs)

        return Widget

    first, again = define(), define()
    assert first is not again
    reg.register("w", first)
    assert reg.register("w", again) is again and reg.get("w") is first
    with pytest.raises(TypeError, match="Expected a Base subclass, but got <class 'dict'>"):
        reg.register("d", dict)


def test_check_names_and_check_options():
    class Widget:
        def __init__(self, model, colour="red", *, size=1):
            pass

    reg: Registry = Registry("widget")
    reg.register("w", Widget)
    assert reg.check_names(["w", "w"]) == ["w"] and reg.check_names("w") == ["w"]
    with pytest.raises(ValueError, match="Expected a widget name, but got 'x'"):
        reg.check_names(["w", "x"])
    reg.check_options("w", {"colour": "blue", "size": 2})
    with pytest.raises(
        ValueError,
        match=r"Expected options of the 'w' widget among \['colour', 'size'\], but got 'sise'.",
    ):
        reg.check_options("w", {"sise": 2})
