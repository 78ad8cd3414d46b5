"""Text side of LICO: frozen text encoders, the learnable prompt and the mapping net h_psi.

* :class:`TextEncoder` — the interface (tokenize / embed_tokens / forward on embeddings),
  implemented by :class:`OpenCLIPTextEncoder` and :class:`HFTextEncoder`; by name with
  :func:`create_text_encoder` / :func:`list_text_encoders`. Always frozen and in eval mode.
* :class:`PromptLearner` — CoOp-style context vectors + class names → G ``(B, M, K)``.
* :class:`MappingNet` — h_psi, ``(B, M, K)`` → ``(B, M, H·W)``.
"""

from lico_lightning.text._base import TextEncoder, TokenizedText
from lico_lightning.text._hf import HFTextEncoder, minilm_path
from lico_lightning.text._openclip import OpenCLIPTextEncoder, tiny_openclip_config
from lico_lightning.text._registry import TEXT_ENCODERS, create_text_encoder, list_text_encoders
from lico_lightning.text.mapping_net import MappingNet
from lico_lightning.text.prompt_learner import PromptLearner

__all__ = [
    "TEXT_ENCODERS",
    "HFTextEncoder",
    "MappingNet",
    "OpenCLIPTextEncoder",
    "PromptLearner",
    "TextEncoder",
    "TokenizedText",
    "create_text_encoder",
    "list_text_encoders",
    "minilm_path",
    "tiny_openclip_config",
]
