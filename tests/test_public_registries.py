"""Every registry a user may extend is public and shares one registry shape and one error
message: backbones, text encoders, explainers, pair explainers, saliency and grounding metrics."""

from __future__ import annotations

import pytest

from lico_lightning._registry import Registry
from lico_lightning.explain import (
    EXPLAINERS,
    PAIR_EXPLAINERS,
    create_explainer,
    create_pair_explainer,
    list_explainers,
    list_pair_explainers,
)
from lico_lightning.losses import (
    EXPLANATION_LOSSES,
    create_explanation_loss,
    list_explanation_losses,
)
from lico_lightning.metrics import (
    GROUNDING_METRICS,
    SALIENCY_METRICS,
    create_grounding_metric,
    create_saliency_metric,
    list_grounding_metrics,
    list_saliency_metrics,
)
from lico_lightning.models import BACKBONES, create_backbone, list_backbones
from lico_lightning.text import TEXT_ENCODERS, create_text_encoder, list_text_encoders


@pytest.mark.parametrize(
    ("registry", "listing", "create", "kind"),
    [
        (BACKBONES, list_backbones, lambda n: create_backbone(n, num_classes=3), "backbone"),
        (TEXT_ENCODERS, list_text_encoders, create_text_encoder, "text encoder"),
        (EXPLAINERS, list_explainers, lambda n: create_explainer(n, None), "explainer"),
        (
            PAIR_EXPLAINERS,
            list_pair_explainers,
            lambda n: create_pair_explainer(n, None),
            "pair explainer",
        ),
        (SALIENCY_METRICS, list_saliency_metrics, create_saliency_metric, "saliency metric"),
        (GROUNDING_METRICS, list_grounding_metrics, create_grounding_metric, "grounding metric"),
        (EXPLANATION_LOSSES, list_explanation_losses, create_explanation_loss, "explanation loss"),
    ],
    ids=[
        "backbones",
        "text_encoders",
        "explainers",
        "pair_explainers",
        "saliency_metrics",
        "grounding_metrics",
        "explanation_losses",
    ],
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
