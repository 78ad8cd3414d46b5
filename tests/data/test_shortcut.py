"""The shortcut benchmark: scenes a pure function of (seed, split, index), the cue's agreement
rate per split, counterfactual re-renders that change only the removed object, consistent
boxes and masks, and clear errors before any work."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from lico_lightning.data import CUE_COLOURS, ShortcutDataModule, ShortcutDataset
from lico_lightning.data._shapes import SHAPE_COLOURS


def _raw(ds: ShortcutDataset, i: int, remove: tuple[str, ...] = ()) -> torch.Tensor:
    return ds.render(i, remove=remove, normalize=False)


def test_items_are_a_pure_function_of_seed_split_index() -> None:
    a = ShortcutDataset("train", 50, seed=3)
    b = ShortcutDataset("train", 50, seed=3)
    for i in (0, 7, 49):
        xa, ya, ga = a[i]
        xb, yb, gb = b[i]
        assert torch.equal(xa, xb) and int(ya) == int(yb)
        assert all(torch.equal(ga[k], gb[k]) for k in ga)
    # reading in another order (or only one item) gives the same item: no hidden RNG stream
    assert torch.equal(ShortcutDataset("train", 50, seed=3)[49][0], a[49][0])
    # different index, split or seed -> different scene
    assert not torch.equal(a[0][0], a[1][0])
    assert not torch.equal(a[0][0], ShortcutDataset("val", 50, seed=3)[0][0])
    assert not torch.equal(a[0][0], ShortcutDataset("train", 50, seed=4)[0][0])


def _agreement(split: str, n: int, rho: float, k: int = 3) -> float:
    ds = ShortcutDataset(split, n, num_classes=k, cue_correlation=rho, num_distractors=0)
    return sum(bool(ds.ground_truth(i)["cue_agrees"]) for i in range(n)) / n


def test_the_cue_agrees_at_the_stated_rate_per_split() -> None:
    n, rho, k = 600, 0.8, 3
    for split in ("train", "test"):
        rate = _agreement(split, n, rho, k)
        assert abs(rate - rho) <= 4 * math.sqrt(rho * (1 - rho) / n)  # binomial, 4 sigma
    rate = _agreement("shifted", n, rho, k)  # independent: agrees 1/k of the time
    assert abs(rate - 1 / k) <= 4 * math.sqrt((1 / k) * (1 - 1 / k) / n)
    assert _agreement("anti", 200, rho, k) == 0.0
    assert _agreement("train", 100, 1.0, k) == 1.0
    assert _agreement("train", 100, 0.0, k) == 0.0


def test_cue_colour_labels_and_groups_agree() -> None:
    ds = ShortcutDataset("shifted", 60, num_classes=4)
    labels = []
    for i in range(len(ds)):
        _, label, gt = ds[i]
        raw = _raw(ds, i)
        cue_pixels = raw[:, gt["cue_mask"]]
        colour = torch.tensor(CUE_COLOURS[int(gt["cue_label"])])[:, None]
        assert torch.allclose(cue_pixels, colour.expand_as(cue_pixels))
        assert bool(gt["cue_agrees"]) == (int(gt["cue_label"]) == int(label))
        assert int(gt["group"]) == 2 * int(label) + int(gt["cue_agrees"])
        labels.append(int(label))
    assert set(labels) == {0, 1, 2, 3}
    # no shape is ever drawn in a cue colour: the cue colours appear only in the cue's pixels
    cue = torch.tensor(CUE_COLOURS)
    shape = torch.tensor(list(SHAPE_COLOURS.values()))
    assert float(torch.cdist(cue, shape).min()) > 0.35


def test_boxes_and_masks_are_consistent() -> None:
    ds = ShortcutDataset("train", 40, num_distractors=3, image_size=40)
    for i in range(len(ds)):
        _, _, gt = ds[i]
        masks = gt["object_masks"]
        assert masks.shape == (5, 40, 40) and ds.object_names[1] == "cue"
        assert torch.equal(masks[0], gt["target_mask"]) and torch.equal(masks[1], gt["cue_mask"])
        assert torch.equal(masks[2:].any(0), gt["distractor_mask"])
        assert int(masks.sum(0).max()) == 1  # objects never overlap
        for m, box in zip(masks, gt["object_boxes"]):
            rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
            assert box.tolist() == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
        assert torch.equal(gt["target_box"], gt["object_boxes"][0])
        assert torch.equal(gt["cue_box"], gt["object_boxes"][1])
        assert torch.equal(gt["distractor_boxes"], gt["object_boxes"][2:])
        x1, y1, x2, y2 = (int(v) for v in gt["cue_box"])  # the cue is a full rectangle
        assert int(gt["cue_mask"].sum()) == (x2 - x1) * (y2 - y1)


def test_counterfactuals_change_only_the_removed_object() -> None:
    ds = ShortcutDataset("train", 20, num_distractors=2)
    for i in range(len(ds)):
        gt = ds.ground_truth(i)
        full = _raw(ds, i)
        for j, name in enumerate(ds.object_names):
            without = _raw(ds, i, (name,))
            changed = (without != full).any(0)
            region = gt["object_masks"][j]
            assert not bool(changed[~region].any())  # nothing outside the object changed
            assert bool(changed[region].all())  # every one of its pixels did
            # the background shows where it was: the same noise as a scene without any object
            nothing = _raw(ds, i, ds.object_names)
            assert torch.equal(without[:, region], nothing[:, region])
        cf = ds.counterfactuals(i)
        assert cf.shape == (4, 3, 32, 32)
        for j, name in enumerate(ds.object_names):
            assert torch.equal(cf[j], ds.render(i, remove=(name,)))
    assert torch.equal(ds.render(0, remove="cue"), ds.render(0, remove=("cue",)))
    some = ds.counterfactuals(3, objects=("cue", "target"))  # in the order asked for
    assert torch.equal(some, ds.counterfactuals(3)[[1, 0]])
    assert torch.equal(ds.counterfactuals(3, objects="cue")[0], ds.render(3, remove="cue"))


def test_items_collate_with_the_default_collate() -> None:
    dm = ShortcutDataModule(num_train=10, num_val=6, num_test=6, batch_size=4, return_index=True)
    dm.setup("fit")
    images, labels, index, gt = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.long
    assert index.tolist() == [0, 1, 2, 3]
    assert gt["object_boxes"].shape == (4, 4, 4) and gt["distractor_boxes"].shape == (4, 2, 4)
    assert gt["object_masks"].dtype == torch.bool and gt["group"].shape == (4,)
    plain = ShortcutDataModule(num_train=10, num_val=6, num_test=6, batch_size=4,
                               with_ground_truth=False)  # fmt: skip
    plain.setup("fit")
    batch = next(iter(plain.train_dataloader()))
    assert len(batch) == 2
    anti = DataLoader(dm.make_dataset("anti"), batch_size=6)
    assert not bool(next(iter(anti))[3]["cue_agrees"].any())
    assert len(dm.split_dataloader("shifted").dataset) == 6


def test_data_module_attributes_and_normalisation() -> None:
    dm = ShortcutDataModule(num_classes=4, num_train=64, num_val=4, num_test=4)
    assert dm.class_names == ["circle", "square", "triangle", "diamond"]
    assert dm.num_classes == 4 and dm.num_groups == 8 and dm.image_size == 32
    dm.setup()
    x = torch.stack([dm.train_dataset[i][0] for i in range(64)])
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std((0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)
    named = ShortcutDataModule(num_classes=2, class_names=["round", "boxy"], num_train=4)
    assert named.class_names == ["round", "boxy"]
    assert dm.state_dict()["split"]["cue_correlation"] == 0.9


def test_a_classifier_trains_on_the_batches(tmp_path) -> None:
    """Models read ``batch[0]``, ``batch[1]``: the ground-truth dict rides along untouched."""
    import pytorch_lightning as pl

    from lico_lightning.modules import LICOClassifier

    dm = ShortcutDataModule(num_train=8, num_val=4, num_test=4, batch_size=4)
    model = LICOClassifier(dm.class_names, backbone="wrn28_2", alpha=0.0, beta=0.0)
    trainer = pl.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    assert trainer.state.finished


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"cue_correlation": 1.5}, ValueError, "cue_correlation"),
        ({"cue_correlation": -0.1}, ValueError, "cue_correlation"),
        ({"cue_correlation": float("nan")}, ValueError, "cue_correlation"),
        ({"num_classes": 6}, ValueError, "num_classes.*circle, square"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"num_distractors": 7}, ValueError, "num_distractors"),
        ({"image_size": 16}, ValueError, "image_size"),
        ({"num_train": 0}, ValueError, "num_train"),
        ({"with_ground_truth": 1}, TypeError, "with_ground_truth"),
    ],
)
def test_bad_arguments_fail_before_any_work(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        ShortcutDataModule(**kwargs)


def test_bad_counterfactual_requests_fail_clearly() -> None:
    ds = ShortcutDataset("train", 5, num_distractors=2)
    with pytest.raises(
        ValueError, match=r"among \('target', 'cue', 'distractor_0', 'distractor_1'\)"
    ):
        ds.render(0, remove=("distractor_2",))
    with pytest.raises(ValueError, match="'shadow'"):
        ds.render(0, remove="shadow")
    with pytest.raises(IndexError, match=r"Expected `index` in \[0, 5\)"):
        ds.counterfactuals(5)
    with pytest.raises(ValueError, match="distractor_9"):
        ds.counterfactuals(0, objects=("cue", "distractor_9"))
    with pytest.raises(ValueError, match="at least one object"):
        ds.counterfactuals(0, objects=())
    with pytest.raises(ValueError, match="split"):
        ShortcutDataset("holdout", 5)
    with pytest.raises(ValueError, match="split"):
        ShortcutDataModule(num_train=4).make_dataset("holdout")
