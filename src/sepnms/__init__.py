"""Sep-NMS: expression-aware proposal generation for two-stage referring expression comprehension."""
__version__ = "0.1.0"
