"""Evaluation: episodes of the real game (``play``), imagined against real rollouts (``imagine``), and
human-normalised scores with their aggregates (``scores``)."""
