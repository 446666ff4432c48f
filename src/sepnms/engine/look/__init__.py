"""The presentation commands, the pipeline's last step: ``sepnms show`` (figures), ``sepnms gallery``
(a static HTML page) and ``sepnms predict`` / ``sepnms.Predictor`` (one image, one expression)."""
