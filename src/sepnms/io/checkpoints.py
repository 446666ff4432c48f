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
from typing import Any

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
        return torch.load(path, map_location="cpu", weights_only=True)
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
