"""The mapping net h_psi: prompt token features (K wide) -> image feature-map space (H*W)."""

from __future__ import annotations

from torch import Tensor, nn

from lico_lightning._validation import check_int, check_tensor

__all__ = ["MappingNet"]


def _check_dim(name: str, value: int) -> None:
    check_int(name, value, 1)


class MappingNet(nn.Module):
    """LICO's :math:`h_\\psi`: an MLP with one hidden layer, applied to every prompt token.

    Maps the text encoder's K-dim token features to the flattened spatial size of the image
    feature map, so a prompt token and a feature-map channel live in the same
    :math:`d' = H \\cdot W` space (paper: :math:`h_\\psi[512, 49]` for ResNet-50 /
    PARN-18 7×7 maps, :math:`h_\\psi[512, 64]` for WRN 8×8 maps). Layout of the official code:
    ``Linear(K, hidden) → Dropout → ReLU → Linear(hidden, out)``.

    .. math::

        h_\\psi(g) = W_2\\, \\mathrm{ReLU}\\big(\\mathrm{Dropout}(W_1 g + b_1)\\big) + b_2

    Args:
        in_dim: K, width of the token features (512 for CLIP ViT-B/32, 384 for MiniLM).
        out_dim: H·W of the image feature map (d').
        hidden_dim: hidden units (paper: 512).
        dropout: dropout probability in ``[0, 1)`` (official code: 0.5).

    Raises:
        ValueError: non-positive dims, dropout outside ``[0, 1)``; in ``forward``, a last
            dim different from ``in_dim``.

    Example:
        >>> import torch
        >>> h = MappingNet(in_dim=512, out_dim=49)
        >>> h(torch.randn(4, 13, 512)).shape  # (B, M, K) -> (B, M, H*W)
        torch.Size([4, 13, 49])
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int = 512, dropout: float = 0.5
    ) -> None:
        super().__init__()
        _check_dim("in_dim", in_dim)
        _check_dim("out_dim", out_dim)
        _check_dim("hidden_dim", hidden_dim)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Expected `dropout` in [0, 1), but got {dropout!r}.")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, tokens: Tensor) -> Tensor:
        """Map ``(..., K)`` token features (usually ``(B, M, K)``) to ``(..., H·W)``."""
        check_tensor("tokens", tokens, ndim=None, floating=True)
        if tokens.ndim < 1 or tokens.shape[-1] != self.in_dim:
            raise ValueError(
                f"Expected token features with last dim in_dim={self.in_dim} (the text "
                f"encoder's output_dim), but got shape {tuple(tokens.shape)}."
            )
        return self.net(tokens)
