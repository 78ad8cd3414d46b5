"""ROAD (MoRF curve, noisy linear imputation): ours (batched torch) vs Quantus 0.6, per image.

Side by side in one process: torchvision ResNet-18 (random weights, 1000 classes, no download),
``--images`` random images of ``--size`` px, Grad-CAM-like saliency maps (a random 7x7 map upsampled bilinearly, no ties), Quantus's default
noise 0.01 and ``--percentages`` removal percentages. Both sides impute the same pixels and
score the same model in eval mode:

* **Quantus**: with ``--channels 1`` its ``quantus.ROAD`` metric as it ships; with 3 channels
  (the default) ``quantus.ROAD`` raises ``IndexError`` (0.6 broadcasts a ``(B, 1, H, W)`` map
  over channels and indexes the ``C·H·W`` order into ``H·W`` pixels), so the script runs that
  metric's ``evaluate_batch`` loop itself: for each percentage, Quantus's
  ``noisy_linear_imputation`` image by image (scipy SuperLU, float64), then one batched
  forward.
* **Ours**: :func:`lico_lightning.functional.road_curves` with ``orders=("morf",)`` and
  ``score="correct"`` (Quantus's accuracy), all imputations of a chunk solved at once by
  multigrid-preconditioned conjugate gradients (float32, ``tol=1e-5``); it also scores the
  two curve endpoints (clean and fully removed image), which Quantus does not.

Printed: seconds per image of each, the ratio, the forward-pass share (the floor both share),
the imputations alone (the same masks through each side's imputation function, side by side),
and the agreement of the two accuracy curves (identical up to argmax flips from the noise draws,
which differ: NumPy's global generator vs a ``torch.Generator``). One intra-op thread by
default (scipy's SuperLU is single-threaded) and CPU time (``time.process_time``), which the
load of other processes on a shared machine does not inflate as it does wall time.

Run: ``PYTHONPATH=src python benchmarks/bench_road.py --images 2``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torchvision

from lico_lightning.functional import noisy_linear_imputation, road_curves, road_removal_masks


def _quantus_rgb(model, images, saliency, labels, percentages, noise) -> np.ndarray:
    """Quantus 0.6 ``ROAD.evaluate_batch``'s loop with its own imputation, per pixel map."""
    from quantus.functions.perturb_func import noisy_linear_imputation

    x_batch = images.numpy()
    order = np.argsort(-saliency.reshape(len(saliency), -1).numpy(), axis=1)
    hw = saliency.shape[-2] * saliency.shape[-1]
    results = []
    for p in percentages:
        top_k = order[:, : int(hw * p / 100)]
        perturbed = np.stack(
            [
                noisy_linear_imputation(arr=x, indices=k, noise=noise)
                for x, k in zip(x_batch, top_k, strict=True)
            ]
        )
        with torch.no_grad():
            pred = model(torch.from_numpy(perturbed).float()).softmax(-1).argmax(-1)
        results.append((pred == labels).numpy())
    return np.stack(results, 1).mean(0)


def _quantus_gray(model, images, saliency, labels, percentages, noise) -> np.ndarray:
    import quantus

    metric = quantus.ROAD(
        percentages=list(percentages), noise=noise, disable_warnings=True,
        display_progressbar=False,
    )  # fmt: skip
    scores = metric(
        model=model,
        x_batch=images.numpy(),
        y_batch=labels.numpy(),
        a_batch=saliency[:, None].numpy(),
        device="cpu",
        channel_first=True,
    )
    return np.array([scores[p] for p in percentages])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--channels", type=int, default=3, choices=[1, 3])
    parser.add_argument("--percentages", type=int, nargs="+", default=list(range(5, 100, 10)))
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - Quantus draws its noise from NumPy's global generator
    net = torchvision.models.resnet18()
    if args.channels == 1:
        net.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    net.eval()
    images = torch.randn(args.images, args.channels, args.size, args.size)
    # Grad-CAM-like maps: a random 7x7 map upsampled bilinearly (ResNet-18's last feature grid)
    saliency = torch.nn.functional.interpolate(
        torch.rand(args.images, 1, 7, 7), size=(args.size, args.size), mode="bilinear"
    )[:, 0]
    saliency = saliency + 1e-6 * torch.rand_like(saliency)  # no ties
    with torch.no_grad():
        labels = net(images).argmax(1)
    fractions = [p / 100 for p in args.percentages]

    with torch.no_grad():
        net(images[:1])  # warm-up
        start = time.process_time()
        for _ in args.percentages:
            net(images)
        t_forward = (time.process_time() - start) / args.images

    import quantus.functions.perturb_func  # noqa: F401 - import outside the timed region

    quantus_fn = _quantus_gray if args.channels == 1 else _quantus_rgb
    start = time.process_time()
    theirs = quantus_fn(net, images, saliency, labels, args.percentages, args.noise)
    t_quantus = (time.process_time() - start) / args.images

    start = time.process_time()
    _, curves = road_curves(
        net, images, saliency, labels, fractions, orders=("morf",), noise=args.noise,
        generator=torch.Generator().manual_seed(0), score="correct", chunk_size=args.chunk_size,
    )  # fmt: skip
    t_ours = (time.process_time() - start) / args.images
    ours = curves["morf"][:, 1:-1].mean(0).numpy()

    # the imputations alone: the same (image, percentage) masks, Quantus's one by one vs ours
    from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation

    masks = road_removal_masks(saliency, fractions)  # (B, P, H, W)
    start = time.process_time()
    for b in range(args.images):
        for p in range(len(fractions)):
            index = masks[b, p].flatten().nonzero()[:, 0].numpy()
            quantus_imputation(arr=images[b].numpy(), indices=index, noise=args.noise)
    t_quantus_imp = (time.process_time() - start) / args.images
    flat_masks = masks.flatten(0, 1)
    flat_images = images.repeat_interleave(len(fractions), 0)
    start = time.process_time()
    for lo in range(0, len(flat_masks), args.chunk_size):
        noisy_linear_imputation(
            flat_images[lo : lo + args.chunk_size], flat_masks[lo : lo + args.chunk_size],
            args.noise, generator=torch.Generator().manual_seed(lo),
        )  # fmt: skip
    t_ours_imp = (time.process_time() - start) / args.images

    print(
        f"ROAD MoRF, {args.images} image(s) {args.channels}x{args.size}x{args.size}, ResNet-18, "
        f"{len(args.percentages)} percentages, noise {args.noise}, {args.threads} thread(s)"
    )
    print(f"  Quantus 0.6       {t_quantus:8.2f} s CPU / image")
    print(f"  ours (torch)      {t_ours:8.2f} s CPU / image   ratio {t_quantus / t_ours:6.1f}x")
    print(f"  forwards alone    {t_forward:8.2f} s CPU / image   (shared by both)")
    print(
        f"  imputations alone: Quantus {t_quantus_imp:.2f}, ours {t_ours_imp:.2f} s CPU / image"
        f"   ratio {t_quantus_imp / t_ours_imp:6.1f}x"
    )
    print(f"  accuracy curves: max |ours - Quantus| = {np.abs(ours - theirs).max():.3f}")


if __name__ == "__main__":
    main()
