"""CLIP checkpoint files (``cfg.paths.clip_checkpoint``): read an OpenAI TorchScript archive (``RN101.pt`` as
OpenAI ships it), a plain state dict with OpenAI key names, or an open_clip state dict / training
checkpoint, and check it against the configured model.  Nothing is downloaded."""
from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from sepnms.errors import InputError
from sepnms.io.checkpoints import torch_load_weights

#: keys of an OpenAI state dict that are not parameters of the model
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("constants.pkl") for n in names) or any("/code/" in n for n in names)


def read_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The CLIP weights of a local checkpoint file, with OpenAI / open_clip key names, float32.

    Accepts an OpenAI TorchScript archive, a plain state dict (``torch.load(weights_only=True)``),
    or an open_clip training checkpoint ``{"state_dict": {"module.<key>": ...}}``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "CLIP checkpoint not found (paths.clip_checkpoint; nothing is downloaded)")
    try:
        if _is_torchscript(path):
            import warnings

            with warnings.catch_warnings():  # torch.jit.load is deprecated, but it is how OpenAI ships CLIP
                warnings.simplefilter("ignore", FutureWarning)
                sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            sd = torch_load_weights(path, "CLIP checkpoint")  # one line; never advises weights_only=False
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means "not a checkpoint we can read"
        raise InputError(path, f"not a loadable CLIP checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(path, "not a CLIP state dict (expected a mapping of parameter names to tensors)")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    text_prefix = ("text.transformer.", "text.token_embedding", "text.positional_embedding",
                   "text.ln_final", "text.text_projection")
    if any(k.startswith(text_prefix) for k in sd):  # open_clip CustomTextCLIP layout
        sd = {(k[len("text."):] if k.startswith(text_prefix) else k): v for k, v in sd.items()}
    # OpenAI's extra entries, and the causal mask a TorchScript export stores (a buffer open_clip rebuilds)
    drop = set(OPENAI_EXTRA_KEYS) | {k for k in sd if k == "attn_mask" or k.endswith(".attn_mask")}
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items() if k not in drop}


def describe_state_dict(sd: dict[str, torch.Tensor]) -> str:
    """A short human description of what a CLIP state dict holds (for error messages)."""
    if "visual.proj" in sd or "visual.class_embedding" in sd or any(k.startswith("visual.transformer.") for k in sd):
        width = sd["visual.conv1.weight"].shape[0] if "visual.conv1.weight" in sd else "?"
        return f"a ViT CLIP (vision width {width})"
    if "visual.layer1.0.conv1.weight" in sd:
        layers = tuple(len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4))
        width = sd["visual.layer1.0.conv1.weight"].shape[0]
        embed = sd["text_projection"].shape[1] if "text_projection" in sd else "?"
        text_w = sd["ln_final.weight"].shape[0] if "ln_final.weight" in sd else "?"
        return f"a ModifiedResNet CLIP (layers {layers}, width {width}, embed dim {embed}, text width {text_w})"
    return "no recognisable CLIP model"


def check_state_dict(sd: dict[str, torch.Tensor], model: nn.Module, path: Path, expected: str) -> None:
    """Raise an InputError saying what differs when ``sd`` does not fit ``model`` exactly."""
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    shapes = [f"{k}: file {list(sd[k].shape)} vs model {list(v.shape)}"
              for k, v in want.items() if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return
    parts = [f"is not a CLIP of the configured architecture: expected {expected}, the file holds "
             f"{describe_state_dict(sd)}"]
    if missing:
        parts.append(f"{len(missing)} keys missing (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    if shapes:
        parts.append(f"{len(shapes)} shapes differ (e.g. {'; '.join(shapes[:3])})")
    raise InputError(path, "; ".join(parts))
