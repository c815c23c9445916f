"""Before a study runs: the preflight checks, the advice, and writing a new study file."""
