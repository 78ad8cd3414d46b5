"""DigitsDataModule against scikit-learn's raw digits."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from lico_lightning.data import DIGIT_CLASSES, DigitsDataModule


@pytest.fixture(scope="module")
def raw() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32), torch.tensor(d.target)


def test_attributes_and_default_split_sizes() -> None:
    dm = DigitsDataModule()
    assert dm.class_names == DIGIT_CLASSES == ["zero", "one", "two", "three", "four", "five",
                                               "six", "seven", "eight", "nine"]  # fmt: skip
    assert (dm.num_classes, dm.image_size) == (10, 32)
    assert len(dm.mean) == len(dm.std) == 3
    sizes = [len(dm.train_indices), len(dm.val_indices), len(dm.test_indices)]
    assert sizes == [1079, 359, 359] and sum(sizes) == 1797
    parts = torch.cat([dm.train_indices, dm.val_indices, dm.test_indices])
    assert torch.equal(parts.sort().values, torch.arange(1797))


def test_items_are_the_raw_digits_normalised(raw) -> None:
    images, targets = raw
    dm = DigitsDataModule(image_size=8, channels=1, return_index=True, seed=4)
    dm.setup("fit")
    mean, std = dm.mean[0], dm.std[0]
    for i in [0, 5, len(dm.train_dataset) - 1]:
        x, y, index = dm.train_dataset[i]
        src = int(dm.train_indices[i])
        assert index == i and int(y) == int(targets[src])
        torch.testing.assert_close(x[0] * std + mean, images[src] / 16.0)
    # mean / std are those of the training split.
    train = images[dm.train_indices] / 16.0
    assert mean == pytest.approx(float(train.mean()), abs=1e-5)
    assert std == pytest.approx(float(train.std()), abs=1e-5)


def test_upscaled_batches_are_normalised_and_three_channel() -> None:
    dm = DigitsDataModule(batch_size=2000)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (1079, 3, 32, 32) and y.dtype == torch.long
    assert torch.equal(x[:, 0], x[:, 2])
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1.0) < 1e-2
    assert torch.bincount(y, minlength=10).min() >= 100  # stratified: every class present


def test_augmentation_is_a_background_filled_translation() -> None:
    dm = DigitsDataModule(image_size=16, channels=1, augment=True)
    plain = DigitsDataModule(image_size=16, channels=1, augment=False)
    dm.setup("fit")
    plain.setup("fit")
    bg = (0.0 - dm.mean[0]) / dm.std[0]
    for i in range(8):
        x, _ = dm.train_dataset[i]
        ref, _ = plain.train_dataset[i]
        padded = torch.nn.functional.pad(ref[0], (2, 2, 2, 2), value=bg)
        shifts = [padded[r : r + 16, c : c + 16] for r in range(5) for c in range(5)]
        assert any(torch.allclose(x[0], s) for s in shifts)
    val_x, _ = dm.val_dataset[0]
    ref_val, _ = plain.val_dataset[0]
    assert torch.equal(val_x, ref_val)  # no augmentation outside training


def test_split_is_seeded() -> None:
    a, b, c = DigitsDataModule(seed=1), DigitsDataModule(seed=1), DigitsDataModule(seed=2)
    assert torch.equal(a.val_indices, b.val_indices)
    assert not torch.equal(a.val_indices, c.val_indices)


def test_test_fraction_zero_reuses_validation() -> None:
    dm = DigitsDataModule(test_fraction=0.0)
    assert torch.equal(dm.test_indices, dm.val_indices)
    assert len(dm.train_indices) + len(dm.val_indices) == 1797


def test_class_name_override_and_errors() -> None:
    names = [str(i) for i in range(10)]
    assert DigitsDataModule(class_names=names).class_names == names
    with pytest.raises(ValueError, match="Expected 10 class names"):
        DigitsDataModule(class_names=names[:9])
    with pytest.raises(TypeError, match="list of str"):
        DigitsDataModule(class_names="0123456789")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="val_fraction"):
        DigitsDataModule(val_fraction=0.0)
    with pytest.raises(ValueError, match="test_fraction"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="batch_size"):
        DigitsDataModule(batch_size=0)


def test_loader_before_setup_explains() -> None:
    with pytest.raises(RuntimeError, match=r"setup\('fit'\)"):
        DigitsDataModule().train_dataloader()


def test_state_dict_warns_on_a_different_split() -> None:
    saved = DigitsDataModule(seed=1).state_dict()
    DigitsDataModule(seed=1).load_state_dict(saved)  # same config: silent
    with pytest.warns(UserWarning, match="will not see the same data"):
        DigitsDataModule(seed=2).load_state_dict(saved)
