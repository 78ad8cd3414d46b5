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
