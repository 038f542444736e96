"""The command line, a leaf that nothing imports: ``main`` (the `iris-wm` verbs), ``scaling`` (its scaling
verbs), ``demo`` (`make demo`) and ``report`` (the demo's report)."""
