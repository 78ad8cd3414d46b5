"""FIxLIP benchmarks (issue 4, item 7), side by side in one run.

1. Weighted least squares of the cross-modal estimator: normal equations from per-modality
   factors (``kron_normal_equations``) vs the reference's dense ``(m_I·m_T) × |basis|`` design
   matrix (``X.T @ (w * X)`` then ``solve``), same samples, same budget, float64. Prints both
   times, the speed-up, the size of the dense matrix and the largest difference of the
   solutions.
2. Game values per second on CPU with open_clip ViT-B-32 (random weights) and a 20-token
   caption: cross-modal (``m_I + m_T`` forwards → ``m_I·m_T`` values, one matrix product) vs
   model-agnostic (one image and one text forward per value).

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_fixlip.py                    # both parts
    PYTHONPATH=src python benchmarks/bench_fixlip.py --wls-config vitb32 # full ViT-B/32 basis

Both sides run with the same number of torch threads (``--threads``, default 1: on a shared
machine more threads mostly add scheduling noise); times are the best of several runs.

``--wls-config clique`` (default) uses the ViT-B/32 player counts (49 patches, 20 tokens) with a
40-player clique (850 basis terms, 0.45 GB dense matrix); ``vitb32`` fits every pair (2416 terms)
at the smallest split that identifies them (m_I=1300, m_T=220: a 5.5 GB dense matrix, needs
~6.5 GB of RAM and a few minutes for the dense side).
"""

from __future__ import annotations

import argparse
import gc
import time

import torch

from lico_lightning.functional import (
    interaction_pairs,
    kron_normal_equations,
    select_clique,
    solve_interactions,
)

WLS_CONFIGS = {
    # name: (n_image, n_text, clique size or None, (m_I, m_T))
    "clique": (49, 20, 40, (624, 105)),  # split_budget(2**16, 49, 20)
    "vitb32": (49, 20, None, (1300, 220)),
}


def dense_solve(masks_i, masks_t, w_i, w_t, values, pairs, n):
    """The reference's path: materialise every joint design row, then X^T W X and solve.

    Same math as the reference (``WX = w * X; solve(X.T @ WX, WX.T @ y)``), written to be kind
    to the dense side: rows scaled by sqrt(w) in place, so one dense matrix exists at a time.
    """
    m_i, m_t = masks_i.shape[0], masks_t.shape[0]
    joint = torch.cat([masks_i.repeat_interleave(m_t, 0), masks_t.repeat(m_i, 1)], 1)
    x = torch.empty(joint.shape[0], 1 + n + pairs.shape[0], dtype=torch.float64)
    x[:, 0] = 1.0
    x[:, 1 : 1 + n] = joint
    for start in range(0, pairs.shape[0], 256):  # bounded bool temporaries
        pr = pairs[start : start + 256]
        x[:, 1 + n + start : 1 + n + start + pr.shape[0]] = joint[:, pr[:, 0]] & joint[:, pr[:, 1]]
    del joint
    sw = (w_i[:, None] * w_t[None, :]).flatten().sqrt()
    x.mul_(sw[:, None])
    gram = x.T @ x
    rhs = x.T @ (sw * values.flatten())
    del x
    return torch.linalg.solve(gram, rhs)


def _best_of(fn, repeats: int):
    """Smallest wall time over ``repeats`` runs (the machine is shared) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        gc.collect()
    return best, out


def bench_wls(config: str, p: float = 0.5, dense_repeats: int = 2) -> None:
    n_i, n_t, clique_size, (m_i, m_t) = WLS_CONFIGS[config]
    n = n_i + n_t
    gen = torch.Generator().manual_seed(0)
    masks_i = torch.rand(m_i, n_i, generator=gen) < p
    masks_t = torch.rand(m_t, n_t, generator=gen) < p
    w_i = torch.full((m_i,), 1.0 / m_i, dtype=torch.float64)
    w_t = torch.full((m_t,), 1.0 / m_t, dtype=torch.float64)
    # a smooth synthetic game with pairwise and higher-order structure
    a = torch.randn(n_i, generator=gen, dtype=torch.float64)
    b = torch.randn(n_t, generator=gen, dtype=torch.float64)
    c = torch.randn(n_i, n_t, generator=gen, dtype=torch.float64) / 10
    xi, xt = masks_i.double(), masks_t.double()
    values = (xi @ a)[:, None] + (xt @ b)[None, :] + xi @ c @ xt.T + torch.tanh(xi @ c @ xt.T)
    clique = None
    if clique_size is not None:
        clique = select_clique(torch.cat([a, b]), n_i, n_t, clique_size)
    pairs = interaction_pairs(n_i, n_t, kind="all", clique=clique)
    size = 1 + n + pairs.shape[0]
    rows = m_i * m_t
    print(
        f"[WLS] config={config}: n_I={n_i}, n_T={n_t}, basis={size} terms, "
        f"m_I={m_i} x m_T={m_t} = {rows} joint coalitions"
    )
    n_img_pairs = int((pairs[:, 1] < n_i).sum())
    n_txt_pairs = int((pairs[:, 0] >= n_i).sum())
    f_i, f_t = 1 + n_i + n_img_pairs, 1 + n_t + n_txt_pairs
    print(
        f"      dense design matrix: {rows} x {size} float64 = {rows * size * 8 / 2**30:.2f} GiB; "
        f"factors: {m_i} x {f_i} and {m_t} x {f_t} feature matrices, "
        f"{size} x {size} normal matrix ({size * size * 8 / 2**20:.1f} MiB)"
    )

    def factor() -> torch.Tensor:
        g, r = kron_normal_equations(masks_i, w_i, masks_t, w_t, values, pairs)
        e = solve_interactions(g, r, n, pairs)
        return torch.cat(
            [e.constant[None], e.first_order, e.second_order[pairs[:, 0], pairs[:, 1]]]
        )

    factor()  # warm-up
    t_factor, sol_f = _best_of(factor, repeats=5)
    gc.collect()
    t_dense, sol_d = _best_of(
        lambda: dense_solve(masks_i, masks_t, w_i, w_t, values, pairs, n), repeats=dense_repeats
    )
    diff = (sol_f - sol_d).abs().max().item()
    rel = diff / sol_d.abs().max().item()
    print(f"      factors: {t_factor:8.3f} s (best of 5)")
    print(f"      dense:   {t_dense:8.3f} s (best of {dense_repeats})")
    print(f"      speed-up: {t_dense / t_factor:.1f}x   max |Δ| = {diff:.2e} (relative {rel:.2e})")


def bench_game_values(m_image: int, m_text: int, m_joint: int, chunk_size: int) -> None:
    import open_clip

    from lico_lightning.explain import FIxLIPGame, OpenCLIPDualEncoder

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    enc = OpenCLIPDualEncoder(model, open_clip.get_tokenizer("ViT-B-32"))
    caption = (
        "a brown dog with a red collar runs across the green grass towards a small child "
        "holding a yellow ball"
    )
    tokens = enc.tokenize([caption])[0]
    image = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(0))
    game = FIxLIPGame(enc, image, tokens, chunk_size=chunk_size)
    print(
        f"[game] ViT-B-32 (random weights), {game.n_image} patches, {game.n_text}-token caption, "
        f"{torch.get_num_threads()} CPU threads, chunk {chunk_size}"
    )
    gen = torch.Generator().manual_seed(1)
    mi = torch.rand(m_image, game.n_image, generator=gen) < 0.5
    mt = torch.rand(m_text, game.n_text, generator=gen) < 0.5
    mj = torch.rand(m_joint, game.n_players, generator=gen) < 0.5
    t_cross, cross = _best_of(lambda: game.cross_values(mi, mt), repeats=2)
    t_joint, joint = _best_of(lambda: game(mj), repeats=2)
    v_cross = cross.numel() / t_cross
    v_joint = joint.numel() / t_joint
    print(
        f"      cross-modal:    {m_image}+{m_text} forwards -> {cross.numel():6d} values in "
        f"{t_cross:7.2f} s = {v_cross:8.1f} values/s (best of 2)"
    )
    print(
        f"      model-agnostic: {m_joint}+{m_joint} forwards -> {joint.numel():6d} values in "
        f"{t_joint:7.2f} s = {v_joint:8.1f} values/s (best of 2)"
    )
    print(f"      values/s ratio (cross-modal / model-agnostic): {v_cross / v_joint:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wls-config", choices=sorted(WLS_CONFIGS), default="clique")
    parser.add_argument("--skip-wls", action="store_true")
    parser.add_argument("--skip-game", action="store_true")
    parser.add_argument("--m-image", type=int, default=32)
    parser.add_argument("--m-text", type=int, default=32)
    parser.add_argument("--m-joint", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--dense-repeats", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads for both sides (default 1)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_wls:
        bench_wls(args.wls_config, dense_repeats=args.dense_repeats)
    if not args.skip_game:
        bench_game_values(args.m_image, args.m_text, args.m_joint, args.chunk_size)


if __name__ == "__main__":
    main()
