"""The package's version, in a module of its own so that the layers below the public facade
(``sepnms/__init__.py``, which reaches up to ``engine.look.predict``) can stamp it without importing it."""
__version__ = "0.1.0"
