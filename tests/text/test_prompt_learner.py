"""PromptLearner against a naive per-sample reference built from whole-string tokenization."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lico_lightning.text import (
    OpenCLIPTextEncoder,
    PromptLearner,
    TextEncoder,
    tiny_openclip_config,
)

NAMES = ["cat", "sea_turtle", "boeing 727-200", "dog"]
TOKEN_OPTIONS = ["context+class", "context+class+eot", "context+eot"]


def naive_reference(
    enc: TextEncoder,
    prompts: PromptLearner,
    labels: Tensor,
    perm: Tensor | None = None,
) -> Tensor:
    """One sample at a time, full context length, the CoOp way: tokenize "X X .. name."."""
    ctx_all = prompts.ctx.detach()
    out = []
    for y in labels.tolist():
        name = prompts.class_names[y]
        text = " ".join(["X"] * prompts.n_ctx + [name]) + "."
        tok = enc.tokenize([text], context_length=min(enc.context_length, 48))  # padded
        emb = enc.embed_tokens(tok.ids)[0].clone()
        ctx = ctx_all[y] if prompts.class_specific else ctx_all
        if perm is not None:
            ctx = ctx[perm]
        n = prompts.n_ctx
        emb[1 : 1 + n] = ctx
        mask = tok.attention_mask
        feats = enc(emb[None], mask)[0]
        t = len(enc.token_ids(name))
        name_feats = feats[1 + n : 1 + n + t]
        eot = int(tok.eot_index[0])
        assert int(tok.ids[0, eot]) == enc.eot_id
        rows = []
        if "context" in prompts.tokens:
            rows += [feats[1 + m] for m in range(n)]
        if "class" in prompts.tokens:
            rows.append(name_feats.mean(0) if prompts.class_pool == "mean" else name_feats[-1])
        if "eot" in prompts.tokens:
            rows.append(feats[eot])
        out.append(torch.stack(rows))
    return torch.stack(out)


LABELS = torch.tensor([1, 0, 1, 3, 2, 1])


@pytest.mark.parametrize("tokens", TOKEN_OPTIONS)
@pytest.mark.parametrize("n_ctx", [0, 1, 4])
@pytest.mark.parametrize("encoder", ["clip_encoder", "minilm_encoder"])
def test_matches_naive_reference(
    tokens: str, n_ctx: int, encoder: str, request: pytest.FixtureRequest
) -> None:
    enc: TextEncoder = request.getfixturevalue(encoder)
    prompts = PromptLearner(NAMES, enc, n_ctx=n_ctx, tokens=tokens).eval()
    with torch.no_grad():
        g = prompts(LABELS)
        ref = naive_reference(enc, prompts, LABELS)
    expected_m = n_ctx * ("context" in tokens) + ("class" in tokens) + ("eot" in tokens)
    assert prompts.num_tokens == expected_m
    assert g.shape == (len(LABELS), expected_m, enc.output_dim)
    torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-5)


def test_class_pool_last_and_class_specific(clip_encoder: OpenCLIPTextEncoder) -> None:
    prompts = PromptLearner(
        NAMES, clip_encoder, n_ctx=3, class_specific=True, class_pool="last",
        tokens="context+class+eot",
    ).eval()  # fmt: skip
    assert prompts.ctx.shape == (len(NAMES), 3, clip_encoder.width)
    with torch.no_grad():
        torch.testing.assert_close(
            prompts(LABELS), naive_reference(clip_encoder, prompts, LABELS), rtol=1e-4, atol=1e-5
        )


def test_class_specific_vs_shared_context(clip_encoder: OpenCLIPTextEncoder) -> None:
    labels = torch.tensor([0, 1])
    specific = PromptLearner(NAMES, clip_encoder, n_ctx=3, class_specific=True).eval()
    shared = PromptLearner(NAMES, clip_encoder, n_ctx=3, class_specific=False).eval()
    with torch.no_grad():
        before_s, before_h = specific(labels), shared(labels)
        specific.ctx[0] += 1.0  # only class 0's context
        shared.ctx += 1.0  # every class's context
        after_s, after_h = specific(labels), shared(labels)
    assert not torch.allclose(after_s[0], before_s[0])
    torch.testing.assert_close(after_s[1], before_s[1], rtol=0, atol=0)
    assert not torch.allclose(after_h[0], before_h[0])
    assert not torch.allclose(after_h[1], before_h[1])


def test_encodes_each_distinct_label_once_on_cut_sequences(
    clip_encoder: OpenCLIPTextEncoder,
) -> None:
    prompts = PromptLearner(NAMES, clip_encoder, n_ctx=2, shared_prefix=False).eval()
    shapes: list[tuple[int, ...]] = []
    handle = clip_encoder.register_forward_hook(lambda m, args, out: shapes.append(out.shape))
    try:
        with torch.no_grad():
            prompts(torch.tensor([1, 0, 1, 1, 0, 0, 1]))  # "cat", "sea turtle"
            prompts(torch.tensor([0, 3, 0]))  # "cat", "dog": one-token names
    finally:
        handle.remove()
    full = prompts.token_ids.shape[1]
    lengths = [2 + 2 + len(clip_encoder.token_ids(n.replace("_", " "))) + 1 for n in NAMES]
    assert shapes[0][:2] == (2, max(lengths[0], lengths[1]))
    assert shapes[1][:2] == (2, max(lengths[0], lengths[3]))
    assert shapes[1][1] < full == max(lengths)


def _rows_through_first_mlp(enc: OpenCLIPTextEncoder, fn) -> int:
    rows: list[int] = []
    mlp = enc.transformer.resblocks[0].mlp
    handle = mlp.register_forward_hook(lambda m, args, out: rows.append(out[..., 0].numel()))
    try:
        fn()
    finally:
        handle.remove()
    return sum(rows)


@pytest.mark.parametrize("ctx_init", [None, "a photo of"])
def test_shared_prefix_equals_full_sequences_in_training(
    ctx_init: str | None, clip_encoder: OpenCLIPTextEncoder
) -> None:
    """Same G, same context gradient, same dynamic-context draws; far fewer token passes.
    (Rows are picked after encoding, so "context+class+eot" compares every row kind.)"""
    labels = torch.tensor([1, 0, 1, 3, 2, 1, 2])
    kwargs = {"n_ctx": 5, "ctx_init": ctx_init, "tokens": "context+class+eot", "seed": 3}
    fast = PromptLearner(NAMES, clip_encoder, shared_prefix=True, **kwargs)
    full = PromptLearner(NAMES, clip_encoder, shared_prefix=False, **kwargs)
    with torch.no_grad():
        full.ctx.copy_(fast.ctx.normal_())
    for _ in range(3):  # three training steps: three permutations drawn by each
        outs, grads, rows = [], [], []
        for prompts in (fast, full):
            prompts.ctx.grad = None

            def run(prompts: PromptLearner = prompts, outs: list = outs) -> None:
                g = prompts(labels)
                (g * torch.linspace(-1, 1, g.numel()).view_as(g)).sum().backward()
                outs.append(g.detach())

            rows.append(_rows_through_first_mlp(clip_encoder, run))
            grads.append(prompts.ctx.grad.clone())
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
        length = full.token_ids.shape[1]  # all 4 classes present
        assert rows[1] == 4 * length
        assert rows[0] == (1 + 5) + 4 * (length - 1 - 5)
    assert torch.equal(fast._generator.get_state(), full._generator.get_state())


def test_shared_prefix_falls_back_where_it_does_not_apply(
    clip_encoder: OpenCLIPTextEncoder, minilm_encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("shared-prefix path used where it must not be")

    monkeypatch.setattr(OpenCLIPTextEncoder, "forward_shared_prefix", boom)
    labels = torch.tensor([0, 1, 2])
    PromptLearner(NAMES, clip_encoder, n_ctx=3, class_specific=True)(labels)  # own context
    PromptLearner(NAMES, clip_encoder, n_ctx=0)(labels)  # no shared prefix beyond BOS
    PromptLearner(NAMES, clip_encoder, n_ctx=3)(torch.tensor([2, 2]))  # one class: no saving
    PromptLearner(NAMES, clip_encoder, n_ctx=3, shared_prefix=False)(labels)
    assert not minilm_encoder.supports_shared_prefix  # bidirectional: prefix sees the suffix
    PromptLearner(NAMES, minilm_encoder, n_ctx=3)(labels)
    with pytest.raises(AssertionError, match="must not be"):  # the guard itself works
        PromptLearner(NAMES, clip_encoder, n_ctx=3)(labels)


def test_dynamic_context_permutes_in_train_only(clip_encoder: OpenCLIPTextEncoder) -> None:
    seed, n_ctx = 7, 5
    prompts = PromptLearner(NAMES, clip_encoder, n_ctx=n_ctx, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    perms = []
    with torch.no_grad():
        prompts.train()
        for _ in range(3):
            perm = torch.randperm(n_ctx, generator=gen)
            perms.append(perm)
            ref = naive_reference(clip_encoder, prompts, LABELS, perm=perm)
            torch.testing.assert_close(prompts(LABELS), ref, rtol=1e-4, atol=1e-5)
        state = prompts._generator.get_state()
        prompts.eval()
        torch.testing.assert_close(
            prompts(LABELS), naive_reference(clip_encoder, prompts, LABELS), rtol=1e-4, atol=1e-5
        )
        assert torch.equal(prompts._generator.get_state(), state)  # eval draws nothing
    assert any(not torch.equal(p, torch.arange(n_ctx)) for p in perms)  # really shuffled


def test_dynamic_context_off(clip_encoder: OpenCLIPTextEncoder) -> None:
    prompts = PromptLearner(NAMES, clip_encoder, n_ctx=5, dynamic_context=False).train()
    with torch.no_grad():
        torch.testing.assert_close(
            prompts(LABELS), naive_reference(clip_encoder, prompts, LABELS), rtol=1e-4, atol=1e-5
        )


def test_generator_state_resumes_from_state_dict(clip_encoder: OpenCLIPTextEncoder) -> None:
    first = PromptLearner(NAMES, clip_encoder, n_ctx=6, seed=1).train()
    with torch.no_grad():
        first(LABELS)  # one step consumed
        state = first.state_dict()
        expected = first(LABELS)  # the next step
    assert "ctx" in state and "_extra_state" in state
    assert not any(k.startswith(("token_ids", "attention_mask", "class_weights")) for k in state)

    resumed = PromptLearner(NAMES, clip_encoder, n_ctx=6, seed=999).train()
    resumed.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(resumed(LABELS), expected, rtol=0, atol=0)


def test_ctx_init_uses_word_embeddings(clip_encoder: OpenCLIPTextEncoder) -> None:
    words = clip_encoder.token_ids("a type of aircraft")
    assert len(words) == 4
    expected = clip_encoder.embed_tokens(torch.tensor([words]))[0]
    exact = PromptLearner(NAMES, clip_encoder, n_ctx=4, ctx_init="a type of aircraft")
    torch.testing.assert_close(exact.ctx.detach(), expected, rtol=0, atol=0)
    longer = PromptLearner(NAMES, clip_encoder, n_ctx=6, ctx_init="a type of aircraft")
    torch.testing.assert_close(longer.ctx.detach()[2:], expected, rtol=0, atol=0)
    assert not torch.allclose(longer.ctx.detach()[:2], expected[:2])
    specific = PromptLearner(
        NAMES, clip_encoder, n_ctx=4, ctx_init="a type of aircraft", class_specific=True
    )
    torch.testing.assert_close(specific.ctx.detach(), expected.expand(len(NAMES), -1, -1))


def test_gradient_reaches_context_only(clip_encoder: OpenCLIPTextEncoder) -> None:
    prompts = PromptLearner(NAMES, clip_encoder, n_ctx=3, tokens="context+class+eot").train()
    prompts(LABELS).square().sum().backward()
    assert prompts.ctx.grad is not None and prompts.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip_encoder.parameters())
    trainable = [n for n, p in prompts.named_parameters() if p.requires_grad]
    assert trainable == ["ctx"]


def test_frozen_context_and_n_ctx_zero_have_no_parameters(
    clip_encoder: OpenCLIPTextEncoder,
) -> None:
    fixed = PromptLearner(
        NAMES, clip_encoder, n_ctx=4, ctx_init="a photo of a", learnable_ctx=False
    )
    none = PromptLearner(NAMES, clip_encoder, n_ctx=0)
    for prompts in (fixed, none):
        assert not [p for p in prompts.parameters() if p.requires_grad]
        assert "ctx" in prompts.state_dict()
    assert none(LABELS).shape == (len(LABELS), 1, clip_encoder.output_dim)


def test_parent_train_keeps_encoder_eval_and_runs_in_inference_mode(
    clip_encoder: OpenCLIPTextEncoder,
) -> None:
    prompts = PromptLearner(NAMES, clip_encoder, n_ctx=2)
    prompts.train()
    assert prompts.training and not clip_encoder.training
    prompts.eval()
    with torch.inference_mode():
        assert prompts(LABELS).shape == (len(LABELS), 3, clip_encoder.output_dim)


def test_prompt_texts(clip_encoder: OpenCLIPTextEncoder) -> None:
    prompts = PromptLearner(NAMES, clip_encoder, n_ctx=2)
    assert prompts.prompt_texts == [
        "X X cat.",
        "X X sea turtle.",
        "X X boeing 727-200.",
        "X X dog.",
    ]
    assert PromptLearner(["cat"], clip_encoder, n_ctx=0).prompt_texts == ["cat."]


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"class_names": []}, ValueError, "non-empty"),
        ({"class_names": "cat"}, TypeError, "list of strings"),
        ({"class_names": ["cat", 3]}, TypeError, "string, but got 3"),
        ({"class_names": ["cat", "  "]}, ValueError, "non-blank"),
        ({"class_names": ["sea_turtle", "sea turtle"]}, ValueError, "distinct"),
        ({"class_names": ["Cat", "cat"]}, ValueError, "tokenize differently"),
        ({"n_ctx": -1}, ValueError, "n_ctx"),
        ({"n_ctx": 2, "ctx_init": "a type of aircraft"}, ValueError, "at most n_ctx=2"),
        ({"ctx_init": "  "}, ValueError, "at least one token"),
        ({"tokens": "context+class+cls"}, ValueError, "context\\+class"),
        ({"class_pool": "max"}, ValueError, "class_pool"),
        ({"init_std": 0.0}, ValueError, "init_std"),
        ({"text_encoder": torch.nn.Linear(2, 2)}, TypeError, "TextEncoder"),
    ],
)
def test_constructor_errors(
    kwargs: dict, error: type, match: str, clip_encoder: OpenCLIPTextEncoder
) -> None:
    args = {"class_names": NAMES, "text_encoder": clip_encoder, **kwargs}
    with pytest.raises(error, match=match):
        PromptLearner(**args)


def test_prompt_longer_than_context_is_rejected() -> None:
    enc = OpenCLIPTextEncoder(model_cfg=tiny_openclip_config(context_length=16))
    with pytest.raises(ValueError, match=r"16 tokens.*'boeing 727-200'"):
        PromptLearner(NAMES, enc, n_ctx=12)


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (torch.tensor([0.0, 1.0]), TypeError, "integer dtype"),
        (torch.tensor([True, False]), TypeError, "integer dtype"),
        (torch.tensor([[0, 1]]), ValueError, "1 dims"),
        (torch.tensor([], dtype=torch.long), ValueError, "non-empty"),
        (torch.tensor([0, 4]), ValueError, r"\[0, 4\).*\[0, 4\]"),
        (torch.tensor([-1, 2]), ValueError, r"\[-1, 2\]"),
        ([0, 1], TypeError, "torch.Tensor"),
    ],
)
def test_label_errors(labels, error: type, match: str, clip_encoder: OpenCLIPTextEncoder) -> None:
    prompts = PromptLearner(NAMES, clip_encoder, n_ctx=2)
    with pytest.raises(error, match=match):
        prompts(labels)


def test_accepts_other_integer_dtypes(clip_encoder: OpenCLIPTextEncoder) -> None:
    prompts = PromptLearner(NAMES, clip_encoder, n_ctx=2).eval()
    with torch.no_grad():
        torch.testing.assert_close(prompts(LABELS.int()), prompts(LABELS))


def test_bf16_autocast_gives_finite_context_gradients(clip_encoder: OpenCLIPTextEncoder) -> None:
    prompts = PromptLearner(NAMES, clip_encoder, n_ctx=3, tokens="context+class+eot").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = prompts(LABELS)
    g.float().square().sum().backward()
    assert torch.isfinite(prompts.ctx.grad).all() and prompts.ctx.grad.abs().sum() > 0


def test_deepcopy_keeps_generator_state(clip_encoder: OpenCLIPTextEncoder) -> None:
    """EMA / SWA wrappers deep-copy the module: the copy must draw the same permutations."""
    import copy

    prompts = PromptLearner(NAMES, clip_encoder, n_ctx=5, seed=3).train()
    clone = copy.deepcopy(prompts)
    with torch.no_grad():
        torch.testing.assert_close(clone(LABELS), prompts(LABELS), rtol=0, atol=0)


def test_pickled_prompt_learner_keeps_its_generator_state_without_a_tensor() -> None:
    """Spawned processes (``ddp_spawn``) receive the learner by pickle; a torch.Generator's
    state tensor cannot go through torch.multiprocessing's file-descriptor sharing."""
    import pickle

    from lico_lightning.text import OpenCLIPTextEncoder, PromptLearner, tiny_openclip_config

    learner = PromptLearner(
        ["cat", "dog", "bird"],
        OpenCLIPTextEncoder(model_cfg=tiny_openclip_config()),
        n_ctx=3,
        seed=4,
    )
    learner._generator.manual_seed(9)
    torch.randperm(5, generator=learner._generator)
    state = learner.__getstate__()
    assert not isinstance(state["_generator"], (torch.Tensor, torch.Generator))
    clone = pickle.loads(pickle.dumps(learner))
    assert torch.equal(clone._generator.get_state(), learner._generator.get_state())
    assert torch.equal(
        torch.randperm(5, generator=clone._generator),
        torch.randperm(5, generator=learner._generator),
    )
