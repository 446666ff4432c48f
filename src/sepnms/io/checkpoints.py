"""Loading torch checkpoint files that may come from anywhere.

``torch.load(weights_only=True)`` admits tensors and plain containers only, so a crafted file
cannot run code.  Its own errors are long, multi-line and - for a refused file - advise loading
with ``weights_only=False``, the one thing a user must not do with an untrusted file.  This
module turns them into one line naming the file and the fault.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator

from sepnms.errors import InputError

PREFIX = "not a loadable checkpoint"


def torch_load_weights(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; InputError on any failure:

    * missing file;
    * refused content (a global other than tensors / containers, i.e. code would run):
      ``not a loadable checkpoint: refused, it references <module.name> ...``;
    * truncated or corrupt archive: ``not a loadable checkpoint: truncated or corrupt ...``;
    * anything else: ``not a loadable checkpoint (<error type>: <first line>)``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise InputError(path, f"{PREFIX}: refused, it references {found.group(1)}, which is not a tensor or a "
                                   f"plain container (loading it could run code; a {what} holds only weights)") from None
        raise InputError(path, f"{PREFIX}: not torch.save data (unreadable pickle stream)") from None
    except (EOFError, zipfile.BadZipFile) as exc:
        raise InputError(path, f"{PREFIX}: truncated or corrupt ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/ValueError/OSError ... for bad files
        text = " ".join(str(exc).split())
        if "zip archive" in text or "central directory" in text or "PytorchStreamReader" in text:
            raise InputError(path, f"{PREFIX}: truncated or corrupt (not a complete torch zip archive)") from None
        raise InputError(path, f"{PREFIX} ({type(exc).__name__}: {text[:160]})") from None
    check_tensors(obj, path, what)
    return obj


#: tensor names whose values may legitimately be infinite (CLIP's causal attention mask is -inf)
NONFINITE_OK = ("attn_mask",)


def _tensors(obj: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    """(dotted name, tensor) of every tensor in nested dicts / lists / tuples."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield prefix or "<top level>", obj
    elif depth < 64 and isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)
    elif depth < 64 and isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]", depth + 1)


def check_tensors(obj: Any, path: Path, what: str = "checkpoint") -> None:
    """Weights that can be used: dense tensors with data (no sparse or meta tensors), finite values
    (except :data:`NONFINITE_OK`) and no negative BatchNorm ``running_var`` (its square root is
    taken: every output would be NaN).  InputError naming the file and the tensor otherwise."""
    import torch

    for name, t in _tensors(obj):
        if t.layout != torch.strided:
            raise InputError(path, f"{PREFIX}: {name} is a {str(t.layout).replace('torch.', '')} tensor; a {what} "
                                   "holds dense tensors")
        if t.is_meta:
            raise InputError(path, f"{PREFIX}: {name} is a meta tensor (a shape without data); a {what} holds values")
        if t.is_floating_point() or t.is_complex():
            if not any(k in name for k in NONFINITE_OK) and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise InputError(path, f"{name} holds {bad} NaN or Inf value(s) of {t.numel()}: weights of a "
                                       "diverged or damaged run, refused")
            if name.endswith("running_var") and t.numel() and bool((t < 0).any()):
                raise InputError(path, f"{name} has {int((t < 0).sum())} negative variance(s) of {t.numel()} "
                                       f"(min {float(t.min()):.3g}): not a trained BatchNorm layer (a damaged file?)")


def check_finite_state(state: Any, folder: Path, what: str) -> None:
    """Before a training stage saves ``state`` (a state dict): every tensor finite, else a
    SepNMSError saying ``what`` went wrong - nothing of this state is saved, ``folder`` keeps the
    last finite checkpoints."""
    import torch

    from sepnms.errors import SepNMSError

    bad = [name for name, t in _tensors(state) if (t.is_floating_point() or t.is_complex())
           and not bool(torch.isfinite(t).all())]
    if bad:
        total = sum(1 for _ in _tensors(state))
        raise SepNMSError(f"{what}: {len(bad)} of {total} tensors hold NaN or Inf (e.g. {bad[0]}); nothing of this "
                          f"state was saved, {folder} keeps the last finite checkpoints")
