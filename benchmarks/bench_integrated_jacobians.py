"""Integrated Jacobians: vectorised gated Jacobians vs the naive dense-matrix reference.

Side by side on CPU, open_clip ViT-B-32 with random weights, one 224×224 image and a caption of
20 BPE tokens (+ SOT/EOT), interpolating the input of the last block of each tower (the
paper's "second-to-last hidden representation"):

* **ours** — ``IntegratedJacobians``: per tower one ``vmap``-over-``jvp`` per chunk of
  (interpolation step, token) pairs gives the per-token gated Jacobian ``U (T, K)``; the
  interaction matrix is ``scale · U_txt U_imgᵀ``.
* **naive** — the public reference algorithm (exCLIP): per tower a Python loop over the K = 512
  embedding dimensions with one backward pass each (over all N interpolation steps at once),
  giving the integrated Jacobians ``J (K, T, D)``; then the dense
  ``(S·D_txt) × (P·D_img)`` matrix ``J_txtᵀ J_img`` is assembled, gated by the input deltas and
  summed over the hidden dims. Text tokens after EOT are cut before the dense product (exCLIP's
  ``cut_txt_padding``), and the gating is done in place, so this reference is already leaner
  than exCLIP's (which also materialises two repeated delta matrices of the same size).

Each variant runs in its own fresh process with one thread; time is the wall-clock and the CPU
time (less sensitive to other processes on a shared machine) of the attribution call, memory
is the peak resident set size during the call minus the resident size just before it
(``VmHWM`` reset through ``/proc/self/clear_refs``; model weights excluded). Attributions are
compared as ``‖A_ours − A_naive‖ / ‖A_naive‖``.

Run: ``PYTHONPATH=src python benchmarks/bench_integrated_jacobians.py`` (``--steps`` sets N for
both variants; the default 10 keeps the naive reference at a few minutes on 2 cores — the
ratio does not depend on N since both variants are linear in it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

CAPTION = (  # 20 BPE tokens between SOT and EOT
    "a brown dog with a red collar runs across the green grass while two little children play "
    "with a ball"
)
MODEL = "ViT-B-32"
# One thread per variant: on a shared 2-core machine two OpenMP threads spin-wait on each other
# and make timings depend on the load of other processes far more than on the algorithm.
THREADS = int(os.environ.get("BENCH_THREADS", "1"))


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _setup():
    import open_clip

    from lico_lightning.explain import OpenCLIPDualEncoder

    torch.manual_seed(0)
    model = open_clip.create_model(MODEL, pretrained=None).eval()
    enc = OpenCLIPDualEncoder(model, open_clip.get_tokenizer(MODEL))
    tokens = enc.tokenize([CAPTION])
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, 224, 224, generator=gen)
    return enc, image, tokens


def run_ours(enc, image, tokens, steps: int, internal_batch_size: int | None) -> torch.Tensor:
    from lico_lightning.explain import IntegratedJacobians

    kwargs = {} if internal_batch_size is None else {"internal_batch_size": internal_batch_size}
    ij = IntegratedJacobians(enc, n_steps=steps, **kwargs)
    res = ij.attribute(images=image, texts=tokens)
    eot = int(enc.eot_positions(tokens)[0])
    return res.matrix[0, : eot + 1]  # (S_eff, 1 + P) with the class token


def _naive_jacobian(enc, modality, inputs, ref, steps):
    run = enc.encode_image if modality == "image" else enc.encode_text
    with enc.capture(modality, -1) as seen:
        run(torch.cat([inputs, ref]))
    x, r = seen[0][:1], seen[0][1:]
    alphas = torch.arange(1, steps + 1, dtype=x.dtype) / steps
    h = (r + alphas[:, None, None] * (x - r)).detach().requires_grad_()
    with enc.intervene(modality, -1, lambda _: h):
        e = F.normalize(run(inputs.expand(steps, *inputs.shape[1:])), dim=-1)
    rows = []
    for k in range(e.shape[1]):  # one backward per embedding dimension
        (g,) = torch.autograd.grad(e[:, k].sum(), h, retain_graph=k < e.shape[1] - 1)
        rows.append(g.sum(0) / steps)
    return torch.stack(rows), (x - r)[0]  # (K, T, D), (T, D)


def run_naive(enc, image, tokens, steps: int) -> torch.Tensor:
    spec = enc.text_spec
    eot = int(enc.eot_positions(tokens)[0])
    ref_tokens = torch.full_like(tokens, spec.pad_id)
    ref_tokens[0, 0], ref_tokens[0, eot] = spec.sot_id, spec.eot_id
    with enc.explaining(), torch.enable_grad():
        j_txt, d_txt = _naive_jacobian(enc, "text", tokens, ref_tokens, steps)
        j_img, d_img = _naive_jacobian(enc, "image", image, torch.zeros_like(image), steps)
        j_txt, d_txt = j_txt[:, : eot + 1], d_txt[: eot + 1]  # cut padding (exCLIP)
        k, s, dt = j_txt.shape
        _, p, di = j_img.shape
        dense = j_txt.reshape(k, s * dt).T @ j_img.reshape(k, p * di)  # (S·Dt, P·Di)
        dense.mul_(d_txt.reshape(-1, 1)).mul_(d_img.reshape(1, -1))
        out = dense.view(s, dt, p, di).sum((1, 3))
        return enc.logit_scale.detach() * out


def child(variant: str, steps: int, internal_batch_size: int | None, out_path: str) -> None:
    torch.set_num_threads(THREADS)
    enc, image, tokens = _setup()
    before = _rss_kib("VmRSS")
    exact_peak = _reset_peak()
    start, cpu_start = time.perf_counter(), time.process_time()
    if variant == "ours":
        matrix = run_ours(enc, image, tokens, steps, internal_batch_size)
    else:
        matrix = run_naive(enc, image, tokens, steps)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = _rss_kib("VmHWM")
    torch.save(matrix.detach().clone(), out_path)
    print(
        json.dumps(
            {
                "variant": variant,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "peak_mib": (peak - before) / 1024,
                "exact_peak": exact_peak,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="interpolation steps N (both)")
    parser.add_argument(
        "--internal-batch-size", type=int, default=None, help="ours: default of the library"
    )
    parser.add_argument("--child", choices=["ours", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.internal_batch_size, args.out)
        return

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("ours", "naive"):
            path = os.path.join(tmp, f"{variant}.pt")
            cmd = [
                sys.executable,
                __file__,
                "--child",
                variant,
                "--steps",
                str(args.steps),
                "--out",
                path,
            ]
            if args.internal_batch_size is not None:
                cmd += ["--internal-batch-size", str(args.internal_batch_size)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                raise SystemExit(f"{variant} failed with exit code {proc.returncode}")
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
            results[variant] = json.loads(line)
            results[variant]["matrix"] = torch.load(path)
            print(
                f"{variant:>6}: {results[variant]['seconds']:8.1f} s wall, "
                f"{results[variant]['cpu_seconds']:8.1f} s CPU, "
                f"peak +{results[variant]['peak_mib']:8.1f} MiB",
                flush=True,
            )

    ours, naive = results["ours"], results["naive"]
    rel = float((ours["matrix"] - naive["matrix"]).norm() / naive["matrix"].norm())
    print()
    print(
        f"{MODEL}, random weights, 1 image x 1 caption (20 tokens), N = {args.steps} steps, "
        f"{THREADS} thread(s) per variant"
    )
    print(f"{'':24}{'ours':>12}{'naive':>12}{'ratio':>10}")
    for key, label in (("seconds", "wall time [s]"), ("cpu_seconds", "CPU time [s]")):
        print(f"{label:24}{ours[key]:12.2f}{naive[key]:12.2f}{naive[key] / ours[key]:9.1f}x")
    print(
        f"{'peak memory [MiB]':24}{ours['peak_mib']:12.1f}{naive['peak_mib']:12.1f}"
        f"{naive['peak_mib'] / max(ours['peak_mib'], 1e-9):9.1f}x"
    )
    print(f"relative difference of the attributions: {rel:.2e} (target <= 1e-4)")
    if not (ours["exact_peak"] and naive["exact_peak"]):
        print("note: /proc/self/clear_refs unavailable; peaks include process start-up")


if __name__ == "__main__":
    main()
