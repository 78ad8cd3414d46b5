"""Feed malformed inputs to the public API of modules/, losses/, text/, models/, data/, the
classifier explainers and functional/cam; classify each outcome.

* clear   — ValueError / TypeError (or FileNotFoundError / ImportError) raised before any work,
            whose message says what was expected ("Expected ...");
* unclear — an exception, but from deep inside torch / HF or without "Expected";
* silent  — no exception (a NaN, all-zero or otherwise meaningless result);
* crash   — anything else (RuntimeError, AttributeError, IndexError, ...).

Run: ``python benchmarks/sweep_bad_inputs.py`` (CPU, offline, ~1 min). Prints one line per case
and the counts.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable

import torch
from torch import nn

from lico_lightning.data import DigitsDataModule
from lico_lightning.explain import (
    RISE,
    GradCAM,
    GradCAMPlusPlus,
    ScoreCAM,
    build_explainers,
    check_explainer_options,
    create_explainer,
)
from lico_lightning.functional.cam import (
    draw_rise_parameters,
    grad_cam_weights,
    upsample_saliency,
    weighted_activation_map,
)
from lico_lightning.losses import ManifoldMatchingLoss, SinkhornOTLoss
from lico_lightning.models import create_backbone, register_backbone
from lico_lightning.modules import LICOClassifier, lico_cosine_lambda
from lico_lightning.text import (
    MappingNet,
    OpenCLIPTextEncoder,
    PromptLearner,
    create_text_encoder,
    tiny_openclip_config,
)

NAN = float("nan")


def nan_images(shape=(2, 3, 16, 16)) -> torch.Tensor:
    x = torch.randn(shape)
    x[0, 0, 0, 0] = NAN
    return x


def classify(fn: Callable[[], object]) -> tuple[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn()
        except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
            msg = " ".join(str(err).split())
            return (
                "clear" if "Expected" in msg else "unclear"
            ), f"{type(err).__name__}: {msg[:110]}"
        except Exception as err:
            return "crash", f"{type(err).__name__}: {' '.join(str(err).split())[:110]}"
    return "silent", "no error"


def main() -> None:
    torch.manual_seed(0)
    enc = OpenCLIPTextEncoder(model_cfg=tiny_openclip_config())
    tiny = dict(
        backbone="wrn28_2",
        backbone_kwargs={"depth": 10},
        image_size=16,
        n_ctx=4,
        text_encoder="openclip",
        text_encoder_kwargs={"model_cfg": tiny_openclip_config()},
        mapping_hidden_dim=16,
    )
    classes = ["a", "b", "c", "d"]
    model = LICOClassifier(classes, **tiny)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([0, 1])
    mm, ot = ManifoldMatchingLoss(), SinkhornOTLoss()
    f, g = torch.randn(4, 8, 6), torch.randn(4, 3, 6)

    cases: dict[str, Callable[[], object]] = {
        # LICOClassifier
        "lico: list targets": lambda: model.lico_losses(torch.randn(3, 3, 16, 16), [0, 1, 2]),
        "lico: 1-channel images": lambda: model.lico_losses(torch.randn(2, 1, 16, 16), y),
        "lico: int images": lambda: model.lico_losses(
            torch.zeros(2, 3, 16, 16, dtype=torch.long), y
        ),
        "lico: 3-d images": lambda: model.lico_losses(torch.randn(3, 16, 16), y),
        "lico: float targets": lambda: model.lico_losses(x, y.float()),
        "lico: target out of range": lambda: model.lico_losses(x, torch.tensor([0, 9])),
        "lico: wrong image size": lambda: model.lico_losses(torch.randn(2, 3, 32, 32), y),
        "lico: NaN images (training_step)": lambda: model.training_step((nan_images(), y), 0),
        "lico: empty class names": lambda: LICOClassifier([], **tiny),
        "lico: duplicate class names": lambda: LICOClassifier(["a", "a"], **tiny),
        "lico: class names not str": lambda: LICOClassifier([1, 2], **tiny),
        "lico: unknown backbone": lambda: LICOClassifier(
            classes, **{**tiny, "backbone": "resnet19"}
        ),
        "lico: unknown text encoder": lambda: LICOClassifier(
            classes, **{**tiny, "text_encoder": "w2v"}
        ),
        "lico: negative alpha": lambda: LICOClassifier(classes, **tiny, alpha=-1.0),
        "lico: zero lr": lambda: LICOClassifier(classes, **tiny, lr=0.0),
        "lico: bad schedule": lambda: LICOClassifier(classes, **tiny, lr_schedule="step"),
        "lico: image_size 0": lambda: LICOClassifier(classes, **{**tiny, "image_size": 0}),
        "lico: bad mm_kwargs key": lambda: LICOClassifier(
            classes, **tiny, mm_kwargs={"temprature": 0.1}
        ),
        "lico: mm temperature out of range": lambda: LICOClassifier(
            classes, **tiny, mm_kwargs={"temperature": 5.0}
        ),
        "schedule: total_steps 0": lambda: lico_cosine_lambda(0),
        # losses
        "mm: NaN features": lambda: mm(f * NAN, g),
        "mm: batch mismatch": lambda: mm(f, g[:3]),
        "mm: batch of 1": lambda: mm(f[:1], g[:1]),
        "mm: list input": lambda: mm([1, 2], g),
        "mm: temperature 0": lambda: ManifoldMatchingLoss(temperature=0.0),
        "mm: bad distance": lambda: ManifoldMatchingLoss(distance="manhattan"),
        "mm: min > max": lambda: ManifoldMatchingLoss(min_temperature=1.0, max_temperature=0.5),
        "ot: NaN features": lambda: ot(f, g * NAN),
        "ot: feature dim mismatch": lambda: ot(f, torch.randn(4, 3, 5)),
        "ot: epsilon 0": lambda: SinkhornOTLoss(epsilon=0.0),
        "ot: max_iter 0": lambda: SinkhornOTLoss(max_iter=0),
        "ot: 2-d input": lambda: ot(torch.randn(4, 6), torch.randn(4, 6)),
        # text
        "text: unknown encoder": lambda: create_text_encoder("w2v"),
        "text: hf nonexistent local path": lambda: create_text_encoder(
            "hf", model_name_or_path="/nonexistent/model"
        ),
        "text: minilm with path": lambda: create_text_encoder("minilm", model_name_or_path="x"),
        "text: openclip unknown model": lambda: create_text_encoder(
            "openclip", model_name="ViT-Q-99", pretrained=None
        ),
        "text: model_cfg not dict": lambda: OpenCLIPTextEncoder(model_cfg=[1]),
        "text: tokenize a str": lambda: enc.tokenize("a cat"),
        "text: tokenize empty": lambda: enc.tokenize([]),
        "text: too long text": lambda: enc.tokenize(["word " * 100]),
        "text: forward wrong width": lambda: enc(torch.randn(1, 4, 7)),
        "text: forward 2-d": lambda: enc(torch.randn(4, 32)),
        "text: embed float ids": lambda: enc.embed_tokens(torch.zeros(1, 3)),
        "prompt: empty class names": lambda: PromptLearner([], enc),
        "prompt: labels out of range": lambda: PromptLearner(["a", "b"], enc, n_ctx=2)(
            torch.tensor([3])
        ),
        "prompt: list labels": lambda: PromptLearner(["a", "b"], enc, n_ctx=2)([0, 1]),
        "prompt: negative n_ctx": lambda: PromptLearner(["a", "b"], enc, n_ctx=-1),
        "mapping: wrong in dim": lambda: MappingNet(32, 16)(torch.randn(2, 3, 31)),
        "mapping: zero out dim": lambda: MappingNet(32, 0),
        # models
        "models: unknown backbone": lambda: create_backbone("wrn99", num_classes=3),
        "models: num_classes 0": lambda: create_backbone("wrn28_2", num_classes=0),
        "models: name not str": lambda: create_backbone(3, num_classes=3),
        "models: register non-callable": lambda: register_backbone("x", 3),
        "models: unknown torchvision weights": lambda: create_backbone(
            "resnet18", num_classes=3, weights="NOPE"
        ),
        "models: 1-channel into wrn forward": lambda: create_backbone(
            "wrn28_2", num_classes=3, depth=10
        )(torch.randn(1, 1, 16, 16)),
        # data
        "data: batch_size 0": lambda: DigitsDataModule(batch_size=0),
        "data: val_fraction 1.5": lambda: DigitsDataModule(val_fraction=1.5),
        "data: channels 0": lambda: DigitsDataModule(channels=0),
        "data: 3 class names": lambda: DigitsDataModule(class_names=["a", "b", "c"]),
        "data: loader before setup": lambda: DigitsDataModule().train_dataloader(),
        # explainers
        "explain: NaN image gradcam": lambda: GradCAM(net, "0").attribute(nan_images(), y),
        "explain: NaN image gradcampp": lambda: GradCAMPlusPlus(net, "0").attribute(
            nan_images(), y
        ),
        "explain: NaN image scorecam": lambda: ScoreCAM(net, "0").attribute(nan_images(), y),
        "explain: NaN image rise": lambda: RISE(net, num_masks=4, grid_size=2).attribute(
            nan_images(), y
        ),
        "explain: Inf image gradcam": lambda: GradCAM(net, "0").attribute(
            nan_images().nan_to_num(posinf=math.inf, nan=math.inf), y
        ),
        "explain: misspelt option": lambda: create_explainer("rise", net, num_maskz=5),
        "explain: misspelt option (build)": lambda: build_explainers(
            net, ["rise"], explainer_kwargs={"rise": {"num_maskz": 5}}
        ),
        "explain: check options unknown method": lambda: check_explainer_options(["gradcm"]),
        "explain: unknown explainer": lambda: create_explainer("nope", net),
        "explain: rise grid > image": lambda: RISE(net, num_masks=4, grid_size=32).attribute(x, y),
        "explain: target out of range": lambda: GradCAM(net, "0").attribute(
            x, torch.tensor([0, 7])
        ),
        "explain: float target": lambda: GradCAM(net, "0").attribute(x, y.float()),
        "explain: 3-d images": lambda: GradCAM(net, "0").attribute(x[0], y[:1]),
        "explain: int images": lambda: GradCAM(net, "0").attribute(x.long(), y),
        "explain: model not a module": lambda: GradCAM("net"),
        "explain: unknown layer": lambda: GradCAM(net, "layer9"),
        "explain: scorecam batch_size 0": lambda: ScoreCAM(net, "0", batch_size=0),
        "explain: rise probability 1": lambda: RISE(net, probability=1.0),
        # functional/cam
        "cam: upsample (0, 0)": lambda: upsample_saliency(torch.rand(1, 4, 4), (0, 0)),
        "cam: upsample 2-d map": lambda: upsample_saliency(torch.rand(4, 4), (8, 8)),
        "cam: weights shape mismatch": lambda: weighted_activation_map(
            torch.rand(1, 2, 3, 3), torch.rand(1, 3)
        ),
        "cam: gradcam weights 3-d": lambda: grad_cam_weights(torch.rand(2, 3, 3)),
        "cam: rise grid 0": lambda: draw_rise_parameters(4, 0, 0.5, (8, 8), torch.Generator()),
    }
    counts: Counter[str] = Counter()
    for name, fn in cases.items():
        kind, detail = classify(fn)
        counts[kind] += 1
        print(f"{kind:8s} {name:40s} {detail}")
    print(
        f"\n{len(cases)} cases: "
        + ", ".join(f"{k} {counts[k]}" for k in ("clear", "unclear", "silent", "crash"))
    )


if __name__ == "__main__":
    main()
