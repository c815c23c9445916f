"""scalekit."""
