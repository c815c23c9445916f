"""Watching a study run: its events, the append-only study log and the live terminal panel."""
