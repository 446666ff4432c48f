"""Sep-NMS: expression-aware proposal generation for two-stage referring expression comprehension."""
from sepnms.version import __version__

__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    # lazy: ``import sepnms`` stays cheap (no torch) until the Predictor is asked for
    if name == "Predictor":
        from sepnms.engine.look.predict import Predictor

        return Predictor
    raise AttributeError(f"module 'sepnms' has no attribute {name!r}")
