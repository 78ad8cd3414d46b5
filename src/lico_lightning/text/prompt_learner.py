"""CoOp-style learnable prompts through a frozen text encoder: the per-token features G_i."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lico_lightning._validation import check_choice, check_positive, check_tensor
from lico_lightning.text._base import TextEncoder

__all__ = ["PromptLearner"]

TOKEN_CHOICES = ("context+class", "context+class+eot", "context+eot")
CLASS_POOL_CHOICES = ("mean", "last")
_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


class PromptLearner(nn.Module):
    """Learnable class prompts encoded by a frozen text encoder into a fixed number of tokens.

    Every class ``c`` gets the prompt (CoOp's layout, class name at the end)::

        [BOS] X_1 ... X_{n_ctx} w_1 ... w_{T_c} . [EOT]

    where ``X_m`` are learnable context vectors (shared by all classes, or one set per class)
    and ``w_j`` the class name's token embeddings (underscores read as spaces). The frozen
    encoder returns per-token features ``g_s`` (K wide) and the prompt's token matrix is

    .. math::

        \\mathbf{G}_c = \\big[\\, g_{X_1}, \\dots, g_{X_{n_{ctx}}},\\ g_t
            \\ (,\\ g_{\\mathrm{EOT}}) \\,\\big] \\in \\mathbb{R}^{M \\times K},
        \\qquad g_t = \\frac{1}{T_c} \\sum_{j=1}^{T_c} g_{w_j}

    Class names tokenize to different lengths, but the manifold-matching loss flattens G_i
    per sample and the OT loss batches them, so every class must give the same M rows: the
    ``T_c`` class-name features are pooled into **one** class row ``g_t`` (mean, or the last
    name token with ``class_pool="last"``). ``tokens`` picks the rows:

    * ``"context+class"`` (default, M = n_ctx + 1): the paper's
      :math:`\\mathbf{G}_i = [g_1, \\dots, g_{M-1}, g_t]` with M − 1 = n_ctx context tokens
      and one class token (§3.1, §3.3);
    * ``"context+class+eot"`` (M = n_ctx + 2): also CLIP's sentence feature (EOT), the one
      CLIP aligns with images;
    * ``"context+eot"`` (M = n_ctx + 1): the EOT feature stands in for the class row.

    Note that with CLIP's causal attention the context features come *before* the class
    name, so with shared context they are the same for every class; class information is
    in ``g_t`` (and ``g_EOT``).

    **Dynamic context** (Algorithm 1 line 3, Appendix E): in training mode every forward
    permutes the n_ctx context vectors with one random permutation (shared by the batch);
    in eval mode the order is fixed. The permutation comes from a ``torch.Generator`` owned by
    this module whose state is part of ``state_dict()`` (``_extra_state``), so a resumed run
    draws the same permutations; eval forwards draw nothing.

    **Cost**: the encoder runs once per *distinct* label in the batch (features are gathered
    back per sample), on sequences cut to the longest prompt among those classes (exact: the
    causal mask, or the attention mask for BERT-like encoders, makes padding irrelevant).
    Labels are copied to the CPU once (one host sync, which finding distinct labels needs
    anyway); the rest of the bookkeeping happens there. With shared context and a causal
    encoder that offers it (:attr:`TextEncoder.supports_shared_prefix`, e.g. open_clip
    towers), the common prefix ``[BOS] X_1 ... X_{n_ctx}`` is encoded **once** and only the
    class-name suffixes run per class against its cached keys/values
    (:meth:`TextEncoder.forward_shared_prefix`): the same features, about
    ``(1 + n_ctx + T) / T`` times fewer token passes (``shared_prefix=False`` turns it off).

    Args:
        class_names: the C class names, index = label.
        text_encoder: a frozen :class:`TextEncoder`; becomes a submodule.
        n_ctx: number of learnable context tokens (paper: 12; 0 = class tokens only,
            Table 6 row 0).
        ctx_init: initialise context vectors from the token embeddings of these words
            (e.g. ``"a type of aircraft"``, §4.4). They fill the *last* context slots (right
            before the class name); remaining slots are random. Must tokenize to at most
            ``n_ctx`` tokens.
        class_specific: one set of context vectors per class instead of a shared set.
        dynamic_context: shuffle the context vectors at every training forward.
        tokens: which rows form G (see above).
        class_pool: ``"mean"`` or ``"last"`` class-name token feature for ``g_t``.
        learnable_ctx: ``False`` freezes the context (a buffer, not a parameter): Appendix G's
            "Random" (no ``ctx_init``) and "Fixed" (``ctx_init="a photo of a"``) ablations.
        init_std: std of the normal init of random context vectors (CoOp: 0.02).
        seed: seed of the dynamic-context generator; ``None`` draws one from torch's global
            RNG (so ``seed_everything`` makes it reproducible).
        shared_prefix: encode the shared ``[BOS] + context`` prefix once when the encoder
            supports it (see **Cost**); exact up to float rounding.

    Attributes:
        num_tokens: M, rows of G per sample.
        output_dim: K, feature width (the text encoder's ``output_dim``).

    Raises:
        TypeError: ``class_names`` not a list of strings; ``text_encoder`` not a TextEncoder.
        ValueError: empty or duplicate class names (also names that tokenize identically),
            a name with no tokens, ``n_ctx < 0``, ``ctx_init`` empty or longer than ``n_ctx``,
            prompts longer than the encoder's context, unknown ``tokens`` / ``class_pool``.

    Example:
        >>> from lico_lightning.text import OpenCLIPTextEncoder, tiny_openclip_config
        >>> enc = OpenCLIPTextEncoder(model_cfg=tiny_openclip_config())
        >>> prompts = PromptLearner(["cat", "dog", "sea_turtle"], enc, n_ctx=4)
        >>> prompts.prompt_texts[2]
        'X X X X sea turtle.'
        >>> g = prompts(torch.tensor([2, 0, 2, 1]))
        >>> g.shape  # (B, M, K) with M = n_ctx + 1
        torch.Size([4, 5, 32])
        >>> [n for n, p in prompts.named_parameters() if p.requires_grad]
        ['ctx']
    """

    # buffers registered in __init__ (nn.Module.__getattr__ types them as Tensor | Module)
    token_ids: Tensor
    attention_mask: Tensor
    eot_index: Tensor
    class_weights: Tensor

    def __init__(
        self,
        class_names: list[str],
        text_encoder: TextEncoder,
        n_ctx: int = 12,
        ctx_init: str | None = None,
        class_specific: bool = False,
        dynamic_context: bool = True,
        tokens: Literal["context+class", "context+class+eot", "context+eot"] = "context+class",
        class_pool: Literal["mean", "last"] = "mean",
        learnable_ctx: bool = True,
        init_std: float = 0.02,
        seed: int | None = None,
        shared_prefix: bool = True,
    ) -> None:
        super().__init__()
        names = _check_class_names(class_names)
        if not isinstance(text_encoder, TextEncoder):
            raise TypeError(
                f"Expected `text_encoder` to be a lico_lightning.text.TextEncoder, but got "
                f"{type(text_encoder).__name__}."
            )
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 0:
            raise ValueError(f"Expected `n_ctx` to be an integer >= 0, but got {n_ctx!r}.")
        check_choice("tokens", tokens, TOKEN_CHOICES)
        check_choice("class_pool", class_pool, CLASS_POOL_CHOICES)
        check_positive("init_std", init_std)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"Expected `seed` to be an int or None, but got {seed!r}.")

        enc = text_encoder
        init_ids: list[int] = []
        if ctx_init is not None:
            if not isinstance(ctx_init, str):
                raise TypeError(
                    f"Expected `ctx_init` to be a string, but got {type(ctx_init).__name__}."
                )
            init_ids = enc.token_ids(ctx_init.replace("_", " "))
            if not init_ids:
                raise ValueError(
                    f"Expected `ctx_init` to tokenize to at least one token, but got {ctx_init!r}."
                )
            if len(init_ids) > n_ctx:
                raise ValueError(
                    f"Expected `ctx_init` to tokenize to at most n_ctx={n_ctx} tokens, but "
                    f"{ctx_init!r} gives {len(init_ids)}; raise n_ctx or shorten ctx_init."
                )

        # ---- tokenized prompts: [BOS] ctx-slots name-tokens "." [EOT]
        dot = enc.token_ids(".")
        rows: list[list[int]] = []
        name_lens: list[int] = []
        seen: dict[tuple[int, ...], str] = {}
        for name in names:
            ids = enc.token_ids(name)
            if not ids:
                raise ValueError(
                    f"Expected every class name to tokenize to at least one token, but got "
                    f"{name!r}."
                )
            if tuple(ids) in seen:
                raise ValueError(
                    f"Expected class names that tokenize differently, but got {seen[tuple(ids)]!r} "
                    f"and {name!r} (the tokenizer reads them the same)."
                )
            seen[tuple(ids)] = name
            rows.append([enc.bos_id, *([enc.pad_id] * n_ctx), *ids, *dot, enc.eot_id])
            name_lens.append(len(ids))
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        longest = int(lengths.max())
        if longest > enc.context_length:
            worst = names[int(lengths.argmax())]
            raise ValueError(
                f"Expected every prompt to fit in the encoder's {enc.context_length} tokens, but "
                f"got {longest} for class {worst!r} with n_ctx={n_ctx}."
            )

        n_cls = len(names)
        token_ids = torch.full((n_cls, longest), enc.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((n_cls, longest), dtype=torch.bool)
        class_weights = torch.zeros((n_cls, longest))
        for c, (row, t) in enumerate(zip(rows, name_lens)):
            token_ids[c, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[c, : len(row)] = True
            if class_pool == "mean":
                class_weights[c, 1 + n_ctx : 1 + n_ctx + t] = 1.0 / t
            else:
                class_weights[c, n_ctx + t] = 1.0
        device = enc._device()

        self.class_names = names
        self.text_encoder = enc
        self.n_classes = n_cls
        self.n_ctx = n_ctx
        self.ctx_init = ctx_init
        self.class_specific = class_specific
        self.dynamic_context = dynamic_context
        self.shared_prefix = bool(shared_prefix)
        self.tokens = tokens
        self.class_pool = class_pool
        self.num_tokens = n_ctx * ("context" in tokens) + ("class" in tokens) + ("eot" in tokens)
        self.output_dim = enc.output_dim
        self.register_buffer("token_ids", token_ids.to(device), persistent=False)
        self.register_buffer("attention_mask", attention_mask.to(device), persistent=False)
        self.register_buffer("eot_index", (lengths - 1).to(device), persistent=False)
        self.register_buffer("class_weights", class_weights.to(device), persistent=False)
        self._lengths_cpu = lengths  # stays on the CPU: per-batch cut without a device sync

        # ---- context vectors
        shape = (n_cls, n_ctx, enc.width) if class_specific else (n_ctx, enc.width)
        ctx = torch.empty(shape, device=device).normal_(0.0, init_std)
        if init_ids:
            with torch.no_grad():
                words = enc.embed_tokens(torch.tensor([init_ids], device=device))[0]
            ctx[..., n_ctx - len(init_ids) :, :] = words.detach().float()
        if learnable_ctx and n_ctx > 0:
            self.ctx = nn.Parameter(ctx)
        else:
            self.register_buffer("ctx", ctx)

        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self._generator = torch.Generator().manual_seed(seed)

    # ------------------------------------------------------------------ API
    @property
    def prompt_texts(self) -> list[str]:
        """The prompts in CoOp's notation (``X`` = a context slot), for logging."""
        prefix = " ".join(["X"] * self.n_ctx)
        return [f"{prefix} {n}.".strip() for n in self.class_names]

    def forward(self, labels: Tensor) -> Tensor:
        """Per-token prompt features for the labels of a batch.

        Args:
            labels: ``(B,)`` integer class indices in ``[0, C)``.

        Returns:
            ``(B, M, K)`` rows of G for each sample's class, on the encoder's device.

        Raises:
            TypeError: ``labels`` not an integer tensor.
            ValueError: ``labels`` not 1-D, empty, or out of ``[0, C)``.
        """
        labels_cpu = self._check_labels(labels)
        uniq_cpu, inverse_cpu = torch.unique(labels_cpu, sorted=True, return_inverse=True)
        length = int(self._lengths_cpu[uniq_cpu].max())
        device = self.token_ids.device
        uniq = uniq_cpu.to(device, non_blocking=True)
        inverse = inverse_cpu.to(device, non_blocking=True)

        n = self.n_ctx
        if self._uses_shared_prefix(uniq.shape[0]):
            feats = self._encode_shared_prefix(uniq, length)
        else:
            embeds = self.text_encoder.embed_tokens(self.token_ids[uniq, :length])  # (S, L, W)
            if n > 0:
                ctx = self._context(uniq).to(embeds.dtype)
                embeds = torch.cat([embeds[:, :1], ctx, embeds[:, 1 + n :]], dim=1)
            feats = self.text_encoder(embeds, self.attention_mask[uniq, :length])  # (S, L, K)

        parts = []
        if "context" in self.tokens:
            parts.append(feats[:, 1 : 1 + n])
        if "class" in self.tokens:
            weights = self.class_weights[uniq, :length].to(feats.dtype)
            parts.append(torch.einsum("sl,slk->sk", weights, feats).unsqueeze(1))
        if "eot" in self.tokens:
            rows = torch.arange(feats.shape[0], device=device)
            parts.append(feats[rows, self.eot_index[uniq]].unsqueeze(1))
        g = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return g[inverse]

    # ------------------------------------------------------------------ internals
    def _uses_shared_prefix(self, n_distinct: int) -> bool:
        return (
            self.shared_prefix
            and n_distinct > 1
            and self.n_ctx > 0
            and not self.class_specific
            and self.text_encoder.supports_shared_prefix
        )

    def _encode_shared_prefix(self, uniq: Tensor, length: int) -> Tensor:
        """``(S, L, K)`` features: ``[BOS] + context`` once, class-name suffixes per class."""
        n = self.n_ctx
        ids = self.token_ids[uniq, :length]
        bos = self.text_encoder.embed_tokens(ids[:1, :1])[0]  # (1, W), the same for all rows
        prefix = torch.cat([bos, self._context(uniq[:1])[0].to(bos.dtype)], dim=0)  # (1+n, W)
        suffix = self.text_encoder.embed_tokens(ids[:, 1 + n :])  # (S, L - 1 - n, W)
        feats_pre, feats_suf = self.text_encoder.forward_shared_prefix(prefix, suffix)
        return torch.cat([feats_pre.expand(ids.shape[0], -1, -1), feats_suf], dim=1)

    def _context(self, uniq: Tensor) -> Tensor:
        """Context vectors ``(S, n_ctx, W)`` for the distinct labels, shuffled in training."""
        if self.class_specific:
            ctx = self.ctx[uniq]
        else:
            ctx = self.ctx.unsqueeze(0).expand(uniq.shape[0], -1, -1)
        if self.training and self.dynamic_context and self.n_ctx > 1:
            perm = torch.randperm(self.n_ctx, generator=self._generator)
            ctx = ctx[:, perm.to(ctx.device, non_blocking=True)]
        return ctx

    def _check_labels(self, labels: Tensor) -> Tensor:
        check_tensor("labels", labels, ndim=1)
        if labels.dtype not in _INTEGER_DTYPES:
            raise TypeError(f"Expected `labels` of an integer dtype, but got {labels.dtype}.")
        labels_cpu = labels.detach().to("cpu", torch.long)
        low, high = int(labels_cpu.min()), int(labels_cpu.max())
        if low < 0 or high >= self.n_classes:
            raise ValueError(
                f"Expected `labels` in [0, {self.n_classes}) (the number of class names), but "
                f"got values in [{low}, {high}]."
            )
        return labels_cpu

    # A torch.Generator pickles its state as a uint8 tensor, which torch.multiprocessing sends
    # through a shared-memory file descriptor; rebuilding that tensor fails in the child
    # ("unable to resize file <filename not specified> to the right size", every rank of
    # `ddp_spawn` dies unpickling its arguments). Pickle the state as plain bytes instead.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_generator"] = bytes(self._generator.get_state().numpy().tobytes())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        raw = state["_generator"]
        if isinstance(raw, (bytes, bytearray)):
            generator = torch.Generator()
            generator.set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone())
            state = {**state, "_generator": generator}
        super().__setstate__(state)

    def get_extra_state(self) -> dict[str, Any]:
        """The dynamic-context generator's state, saved in ``state_dict()``."""
        return {"generator_state": self._generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the dynamic-context generator (``load_state_dict``)."""
        if not isinstance(state, dict) or "generator_state" not in state:
            raise ValueError(
                f"Expected a PromptLearner extra state with 'generator_state', but got {state!r}."
            )
        self._generator.set_state(state["generator_state"].cpu())

    def extra_repr(self) -> str:
        return (
            f"n_classes={self.n_classes}, n_ctx={self.n_ctx}, tokens={self.tokens!r}, "
            f"class_specific={self.class_specific}, dynamic_context={self.dynamic_context}"
        )


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(
            f"Expected `class_names` to be a list of strings, but got {type(class_names).__name__}."
        )
    if len(class_names) == 0:
        raise ValueError("Expected `class_names` to be non-empty, but got an empty list.")
    bad = [n for n in class_names if not isinstance(n, str)]
    if bad:
        raise TypeError(f"Expected every class name to be a string, but got {bad[0]!r}.")
    names = [" ".join(n.replace("_", " ").split()) for n in class_names]
    empty = [orig for orig, n in zip(class_names, names) if not n]
    if empty:
        raise ValueError(f"Expected non-blank class names, but got {empty[0]!r}.")
    first: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in first:
            raise ValueError(
                f"Expected distinct class names, but got {class_names[first[n]]!r} at index "
                f"{first[n]} and {class_names[i]!r} at index {i}."
            )
        first[n] = i
    return names
