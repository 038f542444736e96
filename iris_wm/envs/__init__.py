"""Environments: the real ones (``atari``: ALE games behind the IRIS wrapper stack) and, beside them, the
imagined one (``imagination``: the world model rolled out with a KV cache, a batch at a time; ``imagined_gym``:
the same behind gymnasium's ``Env`` and ``VectorEnv`` for other libraries' agents)."""
