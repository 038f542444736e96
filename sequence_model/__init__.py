"""Sequence models over tokens: the GPT and the IRIS world model. Knows nothing of pixels."""
