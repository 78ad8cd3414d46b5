"""The open_clip text tower behind the :class:`TextEncoder` interface."""

from __future__ import annotations

from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lico_lightning import _open_clip as open_clip_helpers
from lico_lightning._validation import check_tensor
from lico_lightning.text._base import TextEncoder

__all__ = ["OpenCLIPTextEncoder", "tiny_openclip_config"]

_SUPPORTED_POOL_TYPES = ("argmax", "eos")

_T = TypeVar("_T")


def tiny_openclip_config(
    width: int = 32,
    layers: int = 2,
    heads: int = 2,
    embed_dim: int = 32,
    context_length: int = 77,
) -> dict[str, Any]:
    """An open_clip model config (as in its JSON files) for a tiny, fast, random CLIP.

    It keeps CLIP's BPE vocabulary (49408) and context length, so the standard tokenizer
    works; only the widths and depths are small. Meant for tests, doctests and benchmarks.

    Example:
        >>> cfg = tiny_openclip_config()
        >>> cfg["text_cfg"]["width"], cfg["embed_dim"]
        (32, 32)
    """
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": 32,
            "patch_size": 16,
            "width": 32,
            "layers": 1,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": 49408,
            "width": width,
            "heads": heads,
            "layers": layers,
        },
    }


class OpenCLIPTextEncoder(TextEncoder):
    """The frozen text tower of an open_clip CLIP model; per-token features in the joint space.

    Only the text tower is kept (token embedding, positional embedding, transformer,
    ``ln_final``, ``text_projection`` and the causal mask); the image tower is dropped
    after loading. :meth:`forward` follows open_clip's ``TextTransformer`` but starts from
    token *embeddings* and projects **every** token, not only the pooled one:

    .. math::

        X^{(0)} = E + P_{1:L}, \\qquad
        X^{(\\ell)} = \\mathrm{Block}_\\ell\\big(X^{(\\ell-1)}; \\text{causal mask}\\big), \\qquad
        g_s = \\mathrm{LN}\\big(X^{(n)}_s\\big)\\, W_{\\text{proj}}

    With the natural token embeddings, :math:`g_{\\text{EOT}}` is exactly
    ``model.encode_text(ids)``. Because attention is causal, features up to a position do not
    depend on anything after it: cutting sequences to the longest prompt gives the same
    features as CLIP's 77 tokens, so ``attention_mask`` is accepted but not needed.

    Args:
        model_name: open_clip architecture name (``open_clip.list_models()``), e.g.
            ``"ViT-B-32"`` (the paper's text encoder). Also picks the tokenizer. Ignored
            (with ``pretrained``) when ``model_cfg`` or ``model`` is given.
        pretrained: open_clip pretrained tag (``"openai"``, ``"laion2b_s34b_b79k"``, ...) or
            a checkpoint path; ``None`` keeps random weights (tests, timing). Tags trained
            with QuickGELU (e.g. ``"openai"``) switch QuickGELU on automatically.
        model_cfg: build the model from this open_clip config dict instead (keys
            ``embed_dim``, ``vision_cfg``, ``text_cfg``, optional ``quick_gelu`` /
            ``custom_text``), with random weights; see :func:`tiny_openclip_config`.
        cache_dir: where open_clip caches downloaded weights.
        model: use this already built open_clip ``CLIP`` / ``CustomTextCLIP`` (its text
            tower modules are shared, not copied, and get frozen).
        tokenizer: an open_clip ``SimpleTokenizer``-like object (``encode``,
            ``sot_token_id``, ``eot_token_id``). Default: ``open_clip.get_tokenizer(model_name)``
            when the model is built by name, else a ``SimpleTokenizer``.

    Raises:
        ValueError: unknown ``model_name``; a text tower that is not a causal open_clip
            ``TextTransformer`` (Hugging Face towers: use :class:`HFTextEncoder`; SigLIP-style
            bidirectional towers and CoCa's appended class token are not supported).

    Example:
        >>> enc = OpenCLIPTextEncoder(model_cfg=tiny_openclip_config())
        >>> tok = enc.tokenize(["a photo of a cat", "a dog"])
        >>> tok.ids.shape, enc.width, enc.output_dim
        (torch.Size([2, 7]), 32, 32)
        >>> enc(enc.embed_tokens(tok.ids), tok.attention_mask).shape
        torch.Size([2, 7, 32])
        >>> any(p.requires_grad for p in enc.parameters()), enc.train().training
        (False, False)
    """

    attn_mask: Tensor  # buffer registered in __init__

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "openai",
        *,
        model_cfg: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        model: nn.Module | None = None,
        tokenizer: Any = None,
    ) -> None:
        super().__init__()
        if model is None:
            # a config dict builds the architecture only (random weights; no `pretrained`)
            model = open_clip_helpers.build_model(
                model_name,
                None if model_cfg is not None else pretrained,
                model_cfg,
                cache_dir=cache_dir,
            )
            if tokenizer is None and model_cfg is None:
                tokenizer = open_clip_helpers.tokenizer_for(model_name, None, 0)
        elif not isinstance(model, nn.Module):
            raise TypeError(f"Expected `model` to be an nn.Module, but got {type(model).__name__}.")

        tower = model.text if hasattr(model, "text") else model
        if not isinstance(tower, nn.Module):
            raise TypeError(
                f"Expected the model's text tower to be an nn.Module, but got "
                f"{type(tower).__name__}."
            )
        tower_name = type(tower).__name__
        missing = [
            a
            for a in ("token_embedding", "positional_embedding", "transformer", "ln_final")
            if not hasattr(tower, a)
        ]
        if missing:
            raise ValueError(
                f"Expected an open_clip CLIP with a TextTransformer text tower (for Hugging Face "
                f"towers use HFTextEncoder), but got a {tower_name} without {missing}."
            )
        if getattr(tower, "cls_emb", None) is not None:
            raise ValueError(
                "Expected a text tower without an appended class token, but got a CoCa-style "
                "tower (embed_cls=True), which is not supported."
            )
        attn_mask = getattr(tower, "attn_mask", None)
        if attn_mask is None:
            raise ValueError(
                "Expected a causal open_clip text tower, but got a bidirectional one "
                "(no_causal_mask=True, e.g. SigLIP), which is not supported."
            )
        pool_type = getattr(tower, "pool_type", getattr(model, "text_pool_type", "argmax"))
        if pool_type not in _SUPPORTED_POOL_TYPES:
            raise ValueError(
                f"Expected a text tower pooled at the end-of-text token (pool_type in "
                f"{list(_SUPPORTED_POOL_TYPES)}), but got pool_type={pool_type!r}."
            )

        self.token_embedding = _tower_part(tower, "token_embedding", nn.Embedding)
        self.positional_embedding = _tower_part(tower, "positional_embedding", Tensor)
        self.transformer = _tower_part(tower, "transformer", nn.Module)
        self.ln_final = _tower_part(tower, "ln_final", nn.Module)
        projection = tower.text_projection  # Parameter (W, K), nn.Linear or None
        if projection is not None and not isinstance(projection, (Tensor, nn.Linear)):
            raise TypeError(
                f"Expected the text tower's `text_projection` to be a tensor, an nn.Linear or "
                f"None, but got {type(projection).__name__}."
            )
        self.text_projection: Tensor | nn.Linear | None = projection
        self.register_buffer("attn_mask", attn_mask.detach().clone(), persistent=False)

        if tokenizer is None:
            tokenizer = open_clip_helpers.simple_tokenizer(self.positional_embedding.shape[0])
        for attr in ("encode", "sot_token_id", "eot_token_id"):
            if not hasattr(tokenizer, attr):
                raise TypeError(
                    f"Expected a SimpleTokenizer-like `tokenizer` with `{attr}`, but got "
                    f"{type(tokenizer).__name__}."
                )
        vocab = getattr(tokenizer, "vocab_size", None)
        if vocab is not None and vocab > self.token_embedding.num_embeddings:
            raise ValueError(
                f"Expected a tokenizer whose vocabulary fits the token embedding "
                f"({self.token_embedding.num_embeddings}), but got vocab_size={vocab}."
            )
        self._tokenizer = tokenizer

        self.width = int(self.token_embedding.embedding_dim)
        if isinstance(self.text_projection, nn.Linear):
            self.output_dim = int(self.text_projection.out_features)
        elif isinstance(self.text_projection, Tensor):
            self.output_dim = int(self.text_projection.shape[1])
        else:
            self.output_dim = self.width
        self.context_length = int(self.positional_embedding.shape[0])
        self.bos_id = int(tokenizer.sot_token_id)
        self.eot_id = int(tokenizer.eot_token_id)
        self.pad_id = int(getattr(tower, "pad_id", 0))
        self.causal = True
        self.supports_shared_prefix = _blocks_support_shared_prefix(self.transformer)
        self.freeze()

    def token_ids(self, text: str) -> list[int]:
        """BPE ids of ``text`` (lower-cased, cleaned by the tokenizer), no start/end token."""
        if not isinstance(text, str):
            raise TypeError(f"Expected `text` to be a string, but got {type(text).__name__}.")
        return [int(i) for i in self._tokenizer.encode(text)]

    def embed_tokens(self, ids: Tensor) -> Tensor:
        """Token embeddings ``(S, L, W)`` of ids ``(S, L)`` (no positional embedding)."""
        check_tensor("ids", ids, ndim=2)
        if ids.dtype != torch.long:
            raise TypeError(f"Expected `ids` of dtype torch.long, but got {ids.dtype}.")
        return self.token_embedding(ids)

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Per-token features in the joint space.

        Args:
            inputs_embeds: ``(S, L, W)`` token embeddings, ``L <= context_length``.
            attention_mask: ``(S, L)``; not needed (causal attention), checked for shape only.

        Returns:
            ``(S, L, K)``: ``ln_final`` and ``text_projection`` applied to every token.
        """
        _, length = self._check_forward_inputs(inputs_embeds, attention_mask)
        x = self._with_positions(inputs_embeds, 0)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        return self._head(x)

    def forward_shared_prefix(
        self, prefix_embeds: Tensor, suffix_embeds: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Per-token features of S sequences sharing their first P embeddings, prefix run once.

        Runs the same blocks as :meth:`forward` (the tower's own ``ln_1``, attention weights,
        ``ls_1``, ``ln_2``, ``mlp``, ``ls_2``), but the prefix rows go through each block once
        and the suffix rows attend to the prefix's keys/values (causal mask unchanged):

        .. math::

            \\mathrm{Attn}(Q_{\\text{suf}},\\, [K_{\\text{pre}}; K_{\\text{suf}}],\\,
            [V_{\\text{pre}}; V_{\\text{suf}}])

        Exact for causal attention: position ``s`` never sees positions after it. With
        LICO's shared context this turns S×(1 + n_ctx + T) token passes into
        (1 + n_ctx) + S×T.

        Args:
            prefix_embeds: ``(P, W)`` shared prefix embeddings (``[BOS]`` + context).
            suffix_embeds: ``(S, L, W)`` per-sequence rest (class name, ``.``, ``[EOT]``).

        Returns:
            ``(P, K)`` and ``(S, L, K)``, equal to :meth:`forward` on the concatenation.

        Raises:
            ValueError: wrong shapes; P + L longer than the context; a tower whose blocks
                are not open_clip's standard ``ResidualAttentionBlock``
                (:attr:`supports_shared_prefix` is False).

        Example:
            >>> enc = OpenCLIPTextEncoder(model_cfg=tiny_openclip_config())
            >>> pre, suf = torch.randn(5, 32), torch.randn(3, 4, 32)
            >>> fp, fs = enc.forward_shared_prefix(pre, suf)
            >>> full = enc(torch.cat([pre.expand(3, -1, -1), suf], 1))
            >>> torch.allclose(fs, full[:, 5:], atol=1e-5), torch.allclose(fp, full[2, :5], atol=1e-5)
            (True, True)
        """
        if not self.supports_shared_prefix:
            raise ValueError(
                "Expected a text tower of open_clip ResidualAttentionBlocks for the shared-prefix "
                "path, but this tower has custom blocks; use forward() on full sequences."
            )
        check_tensor("prefix_embeds", prefix_embeds, ndim=2, floating=True)
        if prefix_embeds.shape[1] != self.width:
            raise ValueError(
                f"Expected `prefix_embeds` of shape (P, {self.width}), but got "
                f"{tuple(prefix_embeds.shape)}."
            )
        _, n_suf = self._check_forward_inputs(suffix_embeds, None)
        n_pre = prefix_embeds.shape[0]
        if n_pre + n_suf > self.context_length:
            raise ValueError(
                f"Expected at most {self.context_length} tokens (the encoder's context length), "
                f"but got {n_pre} + {n_suf}."
            )
        xp = self._with_positions(prefix_embeds, 0)
        xs = self._with_positions(suffix_embeds, n_pre)
        mask = self.attn_mask[: n_pre + n_suf, : n_pre + n_suf].to(xp.dtype)
        # a ModuleList of ResidualAttentionBlocks: checked by _blocks_support_shared_prefix
        for block in cast(nn.ModuleList, self.transformer.resblocks):
            xp, xs = _shared_prefix_block(block, xp, xs, mask)
        return self._head(xp), self._head(xs)

    def _with_positions(self, embeds: Tensor, start: int) -> Tensor:
        """``embeds (..., n, W)`` cast to the tower's dtype plus positions ``start .. start+n``."""
        # open_clip's Transformer method; nn.Module.__getattr__ types it as Tensor | Module
        dtype = self.transformer.get_cast_dtype()  # type: ignore[operator]
        n = embeds.shape[-2]
        return embeds.to(dtype) + self.positional_embedding[start : start + n].to(dtype)

    def _head(self, x: Tensor) -> Tensor:
        x = self.ln_final(x)
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        if self.text_projection is not None:
            return x @ self.text_projection
        return x


def _tower_part(tower: nn.Module, name: str, kind: type[_T]) -> _T:
    """The tower's ``name`` attribute, checked to be a ``kind``."""
    part = getattr(tower, name)
    if not isinstance(part, kind):
        raise TypeError(
            f"Expected the text tower's `{name}` to be a {kind.__name__}, but got "
            f"{type(part).__name__}."
        )
    return part


def _blocks_support_shared_prefix(transformer: nn.Module) -> bool:
    """True when every block is a plain open_clip ``ResidualAttentionBlock`` self-attention."""
    residual_attention_block = open_clip_helpers.transformer_classes()["ResidualAttentionBlock"]
    blocks = getattr(transformer, "resblocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        return False
    for block in blocks:
        attn = getattr(block, "attn", None)
        if (
            type(block) is not residual_attention_block
            or hasattr(block, "ln_1_kv")
            or type(attn) is not nn.MultiheadAttention
            or not attn._qkv_same_embed_dim
            or attn.in_proj_weight is None
            or attn.bias_k is not None
            or attn.add_zero_attn
        ):
            return False
    return True


def _shared_prefix_block(
    block: nn.Module, xp: Tensor, xs: Tensor, mask: Tensor
) -> tuple[Tensor, Tensor]:
    """One ``ResidualAttentionBlock`` on prefix rows ``(P, W)`` and suffix rows ``(S, L, W)``."""
    # an nn.MultiheadAttention: checked by _blocks_support_shared_prefix
    attn = cast(nn.MultiheadAttention, block.get_submodule("attn"))
    ln_1, ln_2 = block.get_submodule("ln_1"), block.get_submodule("ln_2")
    ls_1, ls_2, mlp = (
        block.get_submodule("ls_1"),
        block.get_submodule("ls_2"),
        block.get_submodule("mlp"),
    )
    n_pre, n_seq = xp.shape[0], xs.shape[0]
    heads = attn.num_heads

    def split(t: Tensor) -> Tensor:  # (..., n, W) -> (..., heads, n, W / heads)
        return t.unflatten(-1, (heads, -1)).transpose(-3, -2)

    def merge(t: Tensor) -> Tensor:  # (..., heads, n, d) -> (..., n, heads * d)
        return t.transpose(-3, -2).flatten(-2)

    qp, kp, vp = map(split, F.linear(ln_1(xp), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1))
    qs, ks, vs = map(split, F.linear(ln_1(xs), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1))
    out_p = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask[:n_pre, :n_pre])
    k = torch.cat([kp.expand(n_seq, -1, -1, -1), ks], dim=-2)
    v = torch.cat([vp.expand(n_seq, -1, -1, -1), vs], dim=-2)
    out_s = F.scaled_dot_product_attention(qs, k, v, attn_mask=mask[n_pre:])
    xp = xp + ls_1(attn.out_proj(merge(out_p)))
    xs = xs + ls_1(attn.out_proj(merge(out_s)))
    xp = xp + ls_2(mlp(ln_2(xp)))
    xs = xs + ls_2(mlp(ln_2(xs)))
    return xp, xs
