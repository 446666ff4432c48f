"""The second stage (MAttNet) as pipeline commands: ``train`` (``sepnms ground train`` and its
checkpoints), ``candidates`` (the candidate set of each method, from the pipeline's outputs) and
``evaluate`` (``sepnms ground eval``, and the demo's second stage)."""
