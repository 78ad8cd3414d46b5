"""Text side of LICO: frozen text encoders and the learnable prompt."""
