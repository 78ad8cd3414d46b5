"""Pure torch math: no state, no Lightning import."""
