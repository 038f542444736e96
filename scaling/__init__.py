"""The scaling harness without torch: sweep specs (``spec``), the sweep's plan and records (``sweep``,
``records``), scaling laws and their estimators (``laws``, ``estimators``), fits with bootstrap intervals (``fit``),
plots (``plot``) and the report (``report``). Training runs come from a backend (``iris_wm.scaling.backend``)."""
