"""The agent: an actor-critic that learns in the world model's imagination (IRIS section 2.3)."""
