"""What every layer of iris_wm stands on, importing nothing else of iris_wm: provenance and weight digests
(``provenance``), durable files and JSON values (``files``), the global random state (``rng``), the rule for a
non-finite loss (``numerics``), hardware probes and the precision chosen from them (``hardware``), and the
fault points of the crash tests (``faults``). Import from the submodules: this package imports none of them,
so reading a store does not pull in torch."""
