"""The embedded synthetic world: a small dataset written in exactly the real formats (refer pickles,
instances.json, rpn pickles, MAttNet head features, GloVe text, captions), for the demo and the tests.
A product of its own, kept apart from the real-data code in ``sepnms.data``."""
from sepnms.world.annotations import load_mentions
from sepnms.world.generate import generate_world

__all__ = ["generate_world", "load_mentions"]
