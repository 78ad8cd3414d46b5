"""Backbones, text encoders and explainers share one registry shape and one error message."""

from __future__ import annotations

import pytest

from lico_lightning._registry import Registry
from lico_lightning.explain import EXPLAINERS, create_explainer, list_explainers
from lico_lightning.models import create_backbone, list_backbones
from lico_lightning.models._registry import _REGISTRY as BACKBONES
from lico_lightning.text import create_text_encoder, list_text_encoders
from lico_lightning.text._registry import _TEXT_ENCODERS


@pytest.mark.parametrize(
    ("registry", "listing", "create", "kind"),
    [
        (BACKBONES, list_backbones, lambda n: create_backbone(n, num_classes=3), "backbone"),
        (_TEXT_ENCODERS, list_text_encoders, create_text_encoder, "text encoder"),
        (EXPLAINERS, list_explainers, lambda n: create_explainer(n, None), "explainer"),
    ],
    ids=["backbones", "text_encoders", "explainers"],
)
def test_registries_are_the_shared_registry(registry, listing, create, kind) -> None:
    assert isinstance(registry, Registry) and registry.kind == kind
    assert listing() == registry.names() and listing() == sorted(listing())
    available = ", ".join(registry.names())
    with pytest.raises(ValueError) as err:
        create("no_such_thing")
    article = "an" if kind[0] in "aeiou" else "a"
    assert (
        str(err.value)
        == f"Expected {article} {kind} name, but got 'no_such_thing'. Available: {available}."
    )
