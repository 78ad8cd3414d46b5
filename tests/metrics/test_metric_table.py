"""Every metric class: class (over several batches) == its functional form == a naive loop
written here, and the class under 2-process DDP (gloo) == one process over all samples.

A new metric joins by adding one row to ``CASES`` (the table must cover every class exported
by ``lico_lightning.metrics``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats
from tests._ddp import run_in_gloo_group
from torch import Tensor, nn
from torchmetrics import Metric

from lico_lightning import functional as F
from lico_lightning import metrics as M

N = 7  # samples; split into batches (3, 4) and across 2 ranks (4, 3)


# ------------------------------------------------------------------ data (seeded, local RNG)
def _net() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net.eval()


def _classifier_data() -> dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    sal = torch.rand(N, 6, 6, generator=g).round(decimals=1)  # ties
    xy = (torch.rand(N, 2, generator=g) * 4).floor()
    return {
        "images": torch.randn(N, 3, 6, 6, generator=g),
        "saliency": sal,
        "target": torch.randint(0, 3, (N,), generator=g),
        "boxes": [
            torch.cat([xy[i], xy[i] + 2])[None] if i % 3 else torch.zeros(0, 4) for i in range(N)
        ],
    }


def _score_data() -> dict[str, Any]:
    g = torch.Generator().manual_seed(2)
    ins = torch.rand(N, 5, generator=g, dtype=torch.float64).cumsum(1)
    interactions = torch.randn(N, 3, 4, generator=g, dtype=torch.float64)
    return {
        "curves": torch.rand(N, 5, generator=g, dtype=torch.float64),
        "original": torch.rand(N, generator=g, dtype=torch.float64),
        "distilled": torch.rand(N, generator=g, dtype=torch.float64),
        "max_values": ins,
        "min_values": ins * torch.linspace(1.0, 0.5, 5, dtype=torch.float64) * 0.9
        + 0.1 * ins[:, -1:],
        "interactions": interactions,
        "object_masks": torch.rand(N, 3, 4, generator=g) > 0.5,
        "a": torch.randn(N, 12, generator=g, dtype=torch.float64).round(decimals=0),
        "b": torch.randn(N, 12, generator=g, dtype=torch.float64),
    }


def _recall_data() -> dict[str, Any]:
    """7 queries x 10 items: negative scores, ties, 1-5 relevant items per query."""
    g = torch.Generator().manual_seed(4)
    relevant = torch.eye(N, 10, dtype=torch.bool) | (torch.rand(N, 10, generator=g) > 0.85)
    return {
        "scores": (torch.rand(N, 10, generator=g) * 2 - 1).round(decimals=1),
        "relevant": relevant,
    }


def _naive_hit_at_k(scores: list[float], relevant: list[bool], k: int) -> float:
    """Sort by decreasing score, irrelevant before relevant on ties; any relevant in the top k."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], relevant[j]))
    return float(any(relevant[j] for j in order[:k]))


def _grid_data() -> dict[str, Any]:
    g = torch.Generator().manual_seed(3)
    xy = torch.randint(0, 13, (N, 2), generator=g).float()  # edges often on a patch centre
    return {"saliency": torch.randn(N, 4, 4, generator=g), "boxes": torch.cat([xy, xy + 20], 1)}


# ------------------------------------------------------------------ naive references
def _naive_curve_auc(model, image, sal, t, mode, step_fraction) -> float:
    """Pixels in decreasing-saliency order (first index first on ties), moved onto / off a zero
    image one step at a time; the trapezoid over the moved fraction."""
    h, w = sal.shape
    flat = sal.flatten().tolist()
    order = sorted(range(h * w), key=lambda p: (-flat[p], p))
    step = max(1, round(step_fraction * h * w))
    ks = [*range(0, h * w, step), h * w]
    scores = []
    for k in ks:
        moved = torch.zeros(h * w, dtype=torch.bool)
        moved[order[:k]] = True
        moved = moved.view(1, h, w)
        x = (
            torch.where(moved, image, 0.0)
            if mode == "insertion"
            else torch.where(moved, 0.0, image)
        )
        with torch.no_grad():
            scores.append(float(model(x[None]).softmax(-1)[0, t]))
    fr = [k / (h * w) for k in ks]
    return sum((scores[i] + scores[i + 1]) / 2 * (fr[i + 1] - fr[i]) for i in range(len(ks) - 1))


def _naive_confidence(model, image, sal, t) -> tuple[float, float]:
    s = (sal - sal.min()) / (sal.max() - sal.min())
    with torch.no_grad():
        y = float(model(image[None]).softmax(-1)[0, t])
        o = float(model((image * s)[None]).softmax(-1)[0, t])
    return max(0.0, y - o) / y, float(y < o)


def _naive_peak(sal) -> tuple[int, int]:
    h, w = sal.shape
    flat = sal.flatten().tolist()
    peak = max(range(h * w), key=lambda p: (flat[p], -p))
    return divmod(peak, w)


def _naive_pointing(sal, boxes, tol, image_size) -> float:
    (r, c), (h, w) = _naive_peak(sal), sal.shape
    cy, cx = (r + 0.5) * image_size[0] / h, (c + 0.5) * image_size[1] / w
    for x1, y1, x2, y2 in boxes.reshape(-1, 4).tolist():
        dx, dy = max(x1 - cx, 0.0, cx - x2), max(y1 - cy, 0.0, cy - y2)
        if math.hypot(dx, dy) <= tol:
            return 1.0
    return 0.0


def _naive_energy(sal, boxes, image_size) -> float:
    h, w = sal.shape
    inside = total = 0.0
    for r in range(h):
        for c in range(w):
            v = max(float(sal[r, c]), 0.0)
            cy, cx = (r + 0.5) * image_size[0] / h, (c + 0.5) * image_size[1] / w
            total += v
            if any(
                x1 <= cx <= x2 and y1 <= cy <= y2
                for x1, y1, x2, y2 in boxes.reshape(-1, 4).tolist()
            ):
                inside += v
    return inside / total if total > 0 else 0.0


def _per_box_image(data, fn) -> list[float]:
    return [fn(data["saliency"][i], data["boxes"][i]) for i in range(N) if data["boxes"][i].numel()]


def _naive_aid(ins, dele) -> float:
    n = len(ins) - 1
    span = ins[-1] - ins[0]
    return sum((ins[k] - dele[k]) / span for k in range(1, n + 1)) / n


def _naive_pgr(e, obj) -> float:
    correct = total = 0.0
    for k in range(len(e)):
        for j in range(len(e[k])):
            v = e[k][j]
            correct += max(v, 0.0) if obj[k][j] else max(-v, 0.0)
            total += abs(v)
    return correct / total


def _ground_truth_data() -> dict[str, Any]:
    """Maps with ties, target masks (image 4 empty), 3 object regions, effects (row 2 equal:
    undefined correlation), logits with counterfactuals, groups (group 3 of 4 empty)."""
    g = torch.Generator().manual_seed(5)
    mask = torch.rand(N, 6, 6, generator=g) > 0.6
    mask[4] = False
    effects = torch.randn(N, 3, generator=g, dtype=torch.float64)
    effects[2] = 1.0
    return {
        "saliency": torch.rand(N, 6, 6, generator=g).round(decimals=1),
        "mask": mask,
        "regions": torch.rand(N, 3, 6, 6, generator=g) > 0.6,
        "effects": effects,
        "logits": torch.randn(N, 3, generator=g),
        "cf_logits": torch.randn(N, 3, generator=g),
        "target": torch.randint(0, 3, (N,), generator=g),
        "group": torch.tensor([0, 1, 2, 0, 1, 2, 0]),
    }


def _naive_rank_accuracy(sal, mask) -> float:
    """Top-K cells (K = mask size); the cells tied with the K-th value share its free slots."""
    values, inside = sal.flatten().tolist(), mask.flatten().tolist()
    k = sum(inside)
    t = sorted(values, reverse=True)[k - 1]
    above = [p for p, v in enumerate(values) if v > t]
    tied = [p for p, v in enumerate(values) if v == t]
    shared = (k - len(above)) * sum(inside[p] for p in tied) / len(tied)
    hits = sum(inside[p] for p in above) + shared
    return hits / k


def _naive_correctness(d) -> list[float]:
    out = []
    for b in range(N):
        masses = [float(d["saliency"][b][d["regions"][b, o]].mean()) for o in range(3)]
        effects = d["effects"][b].tolist()
        if len(set(masses)) > 1 and len(set(effects)) > 1:
            out.append(stats.spearmanr(effects, masses).statistic)
    return out


def _naive_worst_group(d) -> float:
    pred = d["logits"].argmax(1).tolist()
    acc = {}
    for k in set(d["group"].tolist()):
        rows = [i for i in range(N) if int(d["group"][i]) == k]
        acc[k] = sum(pred[i] == int(d["target"][i]) for i in rows) / len(rows)
    return min(acc.values())


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _naive_road(model, image, sal, t, fractions) -> tuple[float, float]:
    """ROAD by hand: MoRF / LeRF orders by sorting (first index first on ties), each imputation
    a dense solve written pixel by pixel (no noise), the mean-colour image at fraction 1, the
    trapezoid over the fractions; returns (MoRF, LeRF) areas."""
    from tests.functional.test_road import _dense_imputation

    c, h, w = image.shape
    flat = sal.flatten().tolist()
    orders = {
        "morf": sorted(range(h * w), key=lambda p: (-flat[p], p)),
        "lerf": sorted(range(h * w), key=lambda p: (flat[p], p)),
    }

    def prob(x) -> float:
        with torch.no_grad():
            return float(model(torch.as_tensor(x, dtype=torch.float32)[None]).softmax(-1)[0, t])

    clean = prob(image)
    base = prob(image.mean((1, 2), keepdim=True).expand(c, h, w))
    xs = [0.0, *fractions, 1.0]
    areas = []
    for order in orders.values():
        ys = [clean]
        for f in fractions:
            removed = np.zeros(h * w, dtype=bool)
            removed[order[: int(f * h * w + 1e-6)]] = True
            ys.append(prob(_dense_imputation(image.double().numpy(), removed.reshape(h, w))))
        ys.append(base)
        areas.append(sum((ys[i] + ys[i + 1]) / 2 * (xs[i + 1] - xs[i]) for i in range(len(xs) - 1)))
    return areas[0], areas[1]


ROAD_FRACTIONS = (0.25, 0.5, 0.75)
ROAD_KW = {"noise": 0.0, "tol": 1e-6}


def _road(d):
    return F.road_auc(NET, d["images"], d["saliency"], d["target"], ROAD_FRACTIONS,
                      reduction="none", **ROAD_KW)  # fmt: skip


def _naive_srg(d):
    return _mean([
        (lambda a: a[1] - a[0])(
            _naive_road(NET, d["images"][i], d["saliency"][i], int(d["target"][i]), ROAD_FRACTIONS)
        )
        for i in range(N)
    ])  # fmt: skip


# ------------------------------------------------------------------ the table
@dataclass
class Case:
    name: str
    make: Callable[[], Any]  # the metric class
    data: Callable[[], dict[str, Any]]
    args: tuple[str, ...]  # the update arguments (keys of data), "model" for the classifier
    functional: Callable[[dict[str, Any]], Tensor]  # per-sample values (B,), NaN = skipped
    naive: Callable[[dict[str, Any]], float]
    key: str | tuple[int, ...] | None = None  # for a metric whose compute() returns a dict / matrix


MODEL = ("model", "images", "saliency", "target")
NET = _net()
SF = 0.25


def _ins(d):
    return F.insertion_auc(
        NET,
        d["images"],
        d["saliency"],
        d["target"],
        step_fraction=SF,
        substrate="zero",
        reduction="none",
    )


def _del(d):
    return F.deletion_auc(
        NET,
        d["images"],
        d["saliency"],
        d["target"],
        step_fraction=SF,
        substrate="zero",
        reduction="none",
    )


def _both(d):
    return F.insertion_deletion_auc(
        NET, d["images"], d["saliency"], d["target"], step_fraction=SF,
        insertion_substrate="zero", deletion_substrate="zero", reduction="none",
    )  # fmt: skip


def _naive_modes(d, mode):
    return [
        _naive_curve_auc(NET, d["images"][i], d["saliency"][i], int(d["target"][i]), mode, SF)
        for i in range(N)
    ]


def _naive_conf(d, which):
    return _mean(
        [
            _naive_confidence(NET, d["images"][i], d["saliency"][i], int(d["target"][i]))[which]
            for i in range(N)
        ]
    )


def _both_metric():
    return M.InsertionDeletionAUC(
        step_fraction=SF, insertion_substrate="zero", deletion_substrate="zero"
    )


def _retrieval_data() -> dict[str, Any]:
    g = torch.Generator().manual_seed(4)
    image = torch.randn(N, 4, generator=g)
    text = torch.randn(N, 4, generator=g)
    text[2] = text[1]  # equal captions: ties in both score matrices
    return {
        "surrogate": image + torch.randn(N, 4, generator=g),
        "image": image,
        "text": text,
        "index": torch.arange(N),
    }


def _faithfulness(d, reference):
    out = F.blockwise_retrieval_faithfulness(
        d["surrogate"], d["image"], d["text"], k=(1, 2), block_size=3, reference=reference
    )
    return out.reshape(1, -1)  # one "sample": the class value is the functional value


def _naive_faithfulness(d, reference, direction, k):
    """Blocks of 3 consecutive pairs, cosine by hand, CLIP's first argmax (or the pairing) as
    the answer, ties counted against the surrogate; the mean over blocks."""

    def cos(a, b):
        return float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))

    values = []
    for start in range(0, N, 3):
        rows = list(range(start, min(start + 3, N)))
        sur = [[cos(d["surrogate"][i], d["text"][j]) for j in rows] for i in rows]
        clip = [[cos(d["image"][i], d["text"][j]) for j in rows] for i in rows]
        if direction == "t2i":
            sur, clip = [list(r) for r in zip(*sur)], [list(r) for r in zip(*clip)]
        hits = 0
        for q in range(len(rows)):
            if reference == "pairing":
                answer = q
            else:
                answer = max(range(len(rows)), key=lambda j: (clip[q][j], -j))
            rank = 1 + sum(
                1 for j in range(len(rows)) if j != answer and sur[q][j] >= sur[q][answer]
            )
            hits += rank <= k
        values.append(hits / len(rows))
    return _mean(values)


CASES = [
    Case("InsertionAUC", lambda: M.InsertionAUC(step_fraction=SF, substrate="zero"), _classifier_data, MODEL,
         _ins, lambda d: _mean(_naive_modes(d, "insertion"))),
    Case("DeletionAUC", lambda: M.DeletionAUC(step_fraction=SF, substrate="zero"), _classifier_data, MODEL,
         _del, lambda d: _mean(_naive_modes(d, "deletion"))),
    Case("InsertionDeletionAUC/insertion", _both_metric, _classifier_data, MODEL,
         lambda d: _both(d)[0], lambda d: _mean(_naive_modes(d, "insertion")), key="insertion"),
    Case("InsertionDeletionAUC/overall", _both_metric, _classifier_data, MODEL,
         lambda d: _both(d)[0] - _both(d)[1],
         lambda d: _mean(_naive_modes(d, "insertion")) - _mean(_naive_modes(d, "deletion")), key="overall"),
    Case("AverageDrop", M.AverageDrop, _classifier_data, MODEL,
         lambda d: F.average_drop(NET, d["images"], d["saliency"], d["target"], "none"), lambda d: _naive_conf(d, 0)),
    Case("IncreaseInConfidence", M.IncreaseInConfidence, _classifier_data, MODEL,
         lambda d: F.increase_in_confidence(NET, d["images"], d["saliency"], d["target"], "none"),
         lambda d: _naive_conf(d, 1)),
    Case("PointingGame/box lists", lambda: M.PointingGame(tolerance=1.5), _classifier_data, ("saliency", "boxes"),
         lambda d: F.pointing_game(d["saliency"], d["boxes"], tolerance=1.5, reduction="none"),
         lambda d: _mean(_per_box_image(d, lambda s, b: _naive_pointing(s, b, 1.5, (6, 6))))),
    Case("PointingGame/PGA on patches", lambda: M.PointingGame(tolerance=0.0, image_size=(32, 32)), _grid_data,
         ("saliency", "boxes"),
         lambda d: F.pointing_game(d["saliency"], d["boxes"], tolerance=0.0, image_size=(32, 32), reduction="none"),
         lambda d: _mean([_naive_pointing(d["saliency"][i], d["boxes"][i], 0.0, (32, 32)) for i in range(N)])),
    Case("EnergyPointingGame/box lists", M.EnergyPointingGame, _classifier_data, ("saliency", "boxes"),
         lambda d: F.energy_pointing_game(d["saliency"], d["boxes"], reduction="none"),
         lambda d: _mean(_per_box_image(d, lambda s, b: _naive_energy(s, b, (6, 6))))),
    Case("EnergyPointingGame/mPGE", lambda: M.EnergyPointingGame(image_size=(32, 32), reduction="median"),
         _grid_data, ("saliency", "boxes"),
         lambda d: F.energy_pointing_game(d["saliency"], d["boxes"], image_size=(32, 32), reduction="none"),
         lambda d: sorted(_naive_energy(d["saliency"][i], d["boxes"][i], (32, 32)) for i in range(N))[(N - 1) // 2]),
    Case("ConditionalInsertionAUC", M.ConditionalInsertionAUC, _score_data, ("curves",),
         lambda d: F.curve_auc(d["curves"]),
         lambda d: _mean([sum((c[j] + c[j + 1]) / 8 for j in range(4)) for c in d["curves"].tolist()])),
    Case("ConditionalDeletionAUC", M.ConditionalDeletionAUC, _score_data, ("curves",),
         lambda d: F.curve_auc(d["curves"]),
         lambda d: _mean([sum((c[j] + c[j + 1]) / 8 for j in range(4)) for c in d["curves"].tolist()])),
    Case("PairConfidenceDrop", M.PairConfidenceDrop, _score_data, ("original", "distilled"),
         lambda d: F.pair_confidence_drop(d["original"], d["distilled"], "none"),
         lambda d: _mean([max(0.0, o - s) for o, s in zip(d["original"].tolist(), d["distilled"].tolist())])),
    Case("PairConfidenceIncrease", M.PairConfidenceIncrease, _score_data, ("original", "distilled"),
         lambda d: F.pair_confidence_increase(d["original"], d["distilled"], "none"),
         lambda d: _mean([float(o < s) for o, s in zip(d["original"].tolist(), d["distilled"].tolist())])),
    Case("AreaBetweenInsertionDeletion", M.AreaBetweenInsertionDeletion, _score_data, ("max_values", "min_values"),
         lambda d: F.area_between_insertion_deletion(d["max_values"], d["min_values"]),
         lambda d: _mean([_naive_aid(a, b) for a, b in zip(d["max_values"].tolist(), d["min_values"].tolist())])),
    Case("PointingGameRecognition", M.PointingGameRecognition, _score_data, ("interactions", "object_masks"),
         lambda d: F.pointing_game_recognition(d["interactions"], d["object_masks"]),
         lambda d: _mean([_naive_pgr(e, o) for e, o in zip(d["interactions"].tolist(), d["object_masks"].tolist())])),
    Case("SpearmanCorrelation", M.SpearmanCorrelation, _score_data, ("a", "b"),
         lambda d: F.spearman_correlation(d["a"], d["b"]),
         lambda d: _mean([stats.spearmanr(a, b).statistic for a, b in zip(d["a"].numpy(), d["b"].numpy())])),
    # k=1: hits and misses both occur on this data (at k=3 every query hits: 1.0 == 1.0)
    Case("RetrievalRecallAtK", lambda: M.RetrievalRecallAtK(k=(1,)), _recall_data, ("scores", "relevant"),
         lambda d: (F.retrieval_ranks(d["scores"], d["relevant"]) <= 1).float(),
         lambda d: _mean([_naive_hit_at_k(s, r, 1) for s, r in zip(d["scores"].tolist(), d["relevant"].tolist())])),
    Case("RetrievalFaithfulness/i2t R@1", lambda: M.RetrievalFaithfulness(k=(1, 2), block_size=3),
         _retrieval_data, ("surrogate", "image", "text", "index"), lambda d: _faithfulness(d, "clip")[:, 0],
         lambda d: _naive_faithfulness(d, "clip", "i2t", 1), key=(0, 0)),
    Case("RetrievalFaithfulness/t2i R@2 pairing",
         lambda: M.RetrievalFaithfulness(k=(1, 2), block_size=3, reference="pairing"),
         _retrieval_data, ("surrogate", "image", "text", "index"), lambda d: _faithfulness(d, "pairing")[:, 3],
         lambda d: _naive_faithfulness(d, "pairing", "t2i", 2), key=(1, 1)),
    Case("RelevanceRankAccuracy", M.RelevanceRankAccuracy, _ground_truth_data, ("saliency", "mask"),
         lambda d: F.relevance_rank_accuracy(d["saliency"], d["mask"], reduction="none"),
         lambda d: _mean([_naive_rank_accuracy(d["saliency"][i], d["mask"][i]) for i in range(N) if d["mask"][i].any()])),
    Case("InterventionCorrectness", M.InterventionCorrectness, _ground_truth_data,
         ("saliency", "regions", "effects"),
         lambda d: F.intervention_correctness(d["saliency"], d["regions"], d["effects"], reduction="none"),
         lambda d: _mean(_naive_correctness(d))),
    Case("InterventionEffect", M.InterventionEffect, _ground_truth_data, ("logits", "cf_logits", "target"),
         lambda d: F.intervention_effect(d["logits"], d["cf_logits"], d["target"], reduction="none"),
         lambda d: _mean([float(d["logits"][i, d["target"][i]] - d["cf_logits"][i, d["target"][i]]) for i in range(N)])),
    Case("ClassConfidence", M.ClassConfidence, _ground_truth_data, ("logits", "target"),
         lambda d: F.target_probability(d["logits"], d["target"]),
         lambda d: _mean([math.exp(float(d["logits"][i, d["target"][i]]))
                          / sum(math.exp(float(v)) for v in d["logits"][i]) for i in range(N)])),
    Case("GroupAccuracy/worst", lambda: M.GroupAccuracy(num_groups=4), _ground_truth_data,
         ("logits", "target", "group"),
         lambda d: F.group_accuracy(d["logits"], d["target"], d["group"], 4).reshape(1),
         _naive_worst_group, key="worst"),
    Case("ROADAUC/morf", lambda: M.ROADAUC(fractions=ROAD_FRACTIONS, **ROAD_KW), _classifier_data, MODEL,
         lambda d: _road(d)[0],
         lambda d: _mean([_naive_road(NET, d["images"][i], d["saliency"][i], int(d["target"][i]),
                                      ROAD_FRACTIONS)[0] for i in range(N)]), key="morf"),
    Case("SymmetricRelevanceGain", lambda: M.SymmetricRelevanceGain(fractions=ROAD_FRACTIONS, **ROAD_KW),
         _classifier_data, MODEL, lambda d: _road(d)[1] - _road(d)[0], _naive_srg),
]  # fmt: skip


def _rows(data: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    return {k: [v[i] for i in rows] if isinstance(v, list) else v[rows] for k, v in data.items()}


def _update(metric: Any, case: Case, data: dict[str, Any]) -> None:
    metric.update(*(NET if a == "model" else data[a] for a in case.args))


def _value(metric: Any, case: Case) -> float:
    out = metric.compute()
    return float(out[case.key] if case.key else out)


def test_the_table_covers_every_metric_class() -> None:
    exported = {
        name
        for name in M.__all__
        if isinstance(getattr(M, name), type)
        and issubclass(getattr(M, name), Metric)
        and name != "SaliencyMetric"  # the base of the registered classifier metrics
    }
    covered = {case.name.split("/")[0] for case in CASES}
    assert covered == exported


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_class_equals_functional_equals_naive_loop(case: Case) -> None:
    data = case.data()
    metric = case.make()
    for rows in ([0, 1, 2], [3, 4, 5, 6]):
        _update(metric, case, _rows(data, rows))
    values = case.functional(data)
    kept = values[~values.isnan()]
    functional = float(kept.median() if "mPGE" in case.name else kept.mean())
    naive = case.naive(data)
    assert _value(metric, case) == pytest.approx(functional, abs=1e-6)
    assert functional == pytest.approx(naive, abs=1e-6)


def _ddp_rank(rank: int, world: int) -> tuple[list[float], Any]:
    out = []
    for case in CASES:
        data = case.data()
        metric = case.make()
        _update(metric, case, _rows(data, list(range(rank, N, world))))  # 4 and 3 samples
        out.append(_value(metric, case))
    # the same spawn checks SaliencyEvaluation's failure-count guarantee (one method failing on
    # one rank): see tests/evaluation/test_saliency_api.py
    from tests.evaluation.test_saliency_api import _ddp_rank as evaluation_rank

    return out, evaluation_rank(rank, world)


@pytest.mark.distributed
def test_every_class_and_the_evaluation_under_two_process_ddp_equal_one_process() -> None:
    (r0, e0), (r1, e1) = run_in_gloo_group(_ddp_rank)
    from tests.evaluation.test_saliency_api import check_ddp_results

    check_ddp_results(e0, e1)
    for i, case in enumerate(CASES):
        data = case.data()
        metric = case.make()
        _update(metric, case, data)
        want = _value(metric, case)
        assert r0[i] == pytest.approx(want, abs=1e-6), case.name
        assert r1[i] == pytest.approx(want, abs=1e-6), case.name
