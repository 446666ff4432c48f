"""What a command prints: its result as JSON on stdout (rank 0 only under torchrun)."""
from __future__ import annotations

import json
import os
from typing import Any


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float as None: JSON has no NaN / Infinity (``json.dumps``
    would print them bare, and the output would not parse)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun, rank 0 speaks for all
        print(json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False))
