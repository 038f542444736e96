"""The agent: the actor-critic (``actor_critic``), lambda-returns (``returns``), its objective (``objective``), the
policy acting in imagination (``rollout``) and in real environments (``policy``), the bundle of models that act
together (``bundle.Agent``) and the Lightning system that trains it in imagination (``module``; opens no files)."""
