"""Training: the supervised stages as LightningCLI commands (``stages``) with their callbacks (``callbacks``), the
optimiser loop outside the Trainer (``steps``), and the online IRIS loop (``loop``)."""
