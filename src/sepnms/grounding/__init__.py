"""The second stage: MAttNet (Yu et al., CVPR 2018) for box comprehension, on modern PyTorch.

Modules: :mod:`vocab` (MAttNet's vocabulary), :mod:`language` (bi-LSTM + phrase attentions),
:mod:`subject` / :mod:`location` / :mod:`relation` (the three visual modules), :mod:`matching`,
:mod:`mattnet` (the whole network), :mod:`loss` (hinge ranking + attribute BCE) and
:mod:`features` (box geometry: location, offsets, neighbours).
"""
