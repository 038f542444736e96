"""The torch side of the scaling harness (the top-level ``scaling`` package fits and plots without torch): the
backend that trains the sweep's points (``backend``), the token store a CPU sweep needs (``prepare``), and the
harness's steps (``harness``: prepare, sweep, fit, report)."""
