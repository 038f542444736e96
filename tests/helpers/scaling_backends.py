"""Backends for the sweep launchers' tests, importable by the processes and jobs they spawn."""

from iris_wm.scaling.backend import TorchBackend


class FailingBackend(TorchBackend):
    """The torch backend, except that training the size ``fail_size`` raises."""

    def __init__(self, fail_size: str, **kwargs):
        super().__init__(**kwargs)
        self.fail_size = fail_size

    def train(self, trunk, spec, out, on_point):
        if trunk.size.label == self.fail_size:
            raise RuntimeError(f"planted failure in {trunk.size.label}")
        super().train(trunk, spec, out, on_point)
