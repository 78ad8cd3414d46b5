"""Lightning callbacks (one file each)."""
