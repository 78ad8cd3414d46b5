"""LightningDataModules and offline datasets."""
