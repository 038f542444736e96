"""Episode data: episodes in memory (``episode``), the append-only stores on disk (``store``), windows of steps
and the train/validation split (``windows``), collection from an environment (``collect``), token stores
(``tokens``), the check that parts fit the data (``sizes``) and the Lightning data module (``datamodule``)."""
