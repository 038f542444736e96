"""``python -m iris_wm.cli``: the `iris-wm` console script."""

from iris_wm.cli.main import main

main()
