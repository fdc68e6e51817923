"""Developer and CI tooling run as `python -m hack.<tool>` from the repository root."""
