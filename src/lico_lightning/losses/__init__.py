"""``nn.Module`` losses holding hyperparameters and learnable parts."""
