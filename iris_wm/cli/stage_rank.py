"""``python -m iris_wm.cli.stage_rank VERB [options]``: what Lightning runs on the other ranks of a data-parallel
stage (``--trainer.strategy ddp --trainer.devices N``). The stage that started them names itself in
``IRIS_WM_STAGE`` (:func:`iris_wm.train.stages.run_stage`), so each rank runs that stage with the same options."""

import os
import sys

from iris_wm.train.stages import RUNNERS

if __name__ == "__main__":
    stage = os.environ.get("IRIS_WM_STAGE")
    if stage not in RUNNERS:
        sys.exit(f"iris_wm.cli.stage_rank: IRIS_WM_STAGE must be one of {sorted(RUNNERS)}; got {stage!r}.")
    RUNNERS[stage](sys.argv[1:])
