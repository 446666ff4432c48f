"""The CLIP-dagger backbone: an open_clip ModifiedResNet CLIP and its BPE tokenizer.

The backbone is built by open_clip (``open_clip.create_model(<arch>)`` for a named RN model such
as ``RN101``; for ``tiny`` a small ModifiedResNet CLIP from ``cfg.clip.tiny_*``) and its weights come
from a *local* checkpoint (``cfg.paths.clip_checkpoint``, read by :mod:`sepnms.clip.weights`).
Nothing is downloaded.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import nn

from sepnms.clip.weights import check_state_dict, read_clip_state_dict
from sepnms.config import ClipConfig
from sepnms.errors import ConfigError


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextlib.contextmanager
def _quiet_no_pretrained() -> Iterator[None]:
    """open_clip warns "No pretrained weights loaded" on the root logger; we load them ourselves."""
    root = logging.getLogger()
    flt = _DropMessage("No pretrained weights loaded")
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def _tokenizer_vocab_size() -> int:
    return len(_tokenizer(77).encoder)


def backbone_description(c: ClipConfig) -> dict[str, Any]:
    """The dims the config asks for: arch, embed dim, layer3 channels, image size, text dims."""
    if c.arch == "tiny":
        return {"arch": "tiny", "vision_layers": list(c.tiny_layers), "vision_width": c.tiny_width,
                "embed_dim": c.embed_dim, "layer3_channels": c.tiny_width * 16, "image_size": c.image_size,
                "text_width": c.tiny_text_width, "text_layers": c.tiny_text_layers,
                "text_heads": c.tiny_text_heads, "context_length": c.tiny_context_length,
                "vocab_size": c.tiny_vocab_size}
    import open_clip

    mc = open_clip.get_model_config(c.arch)
    if mc is None:
        raise ConfigError(f"clip.arch {c.arch!r} is neither 'tiny' nor an open_clip model name "
                          f"(e.g. RN50, RN101)")
    vc, tc = mc["vision_cfg"], mc["text_cfg"]
    if not isinstance(vc.get("layers"), (list, tuple)) or vc.get("timm_model_name") or tc.get("hf_model_name"):
        raise ConfigError(f"clip.arch {c.arch!r} is not a ModifiedResNet CLIP; CLIP-dagger needs the "
                          f"layer3 map of an RN model (e.g. RN101)")
    return {"arch": c.arch, "vision_layers": list(vc["layers"]), "vision_width": int(vc["width"]),
            "embed_dim": int(mc["embed_dim"]), "layer3_channels": int(vc["width"]) * 16,
            "image_size": int(vc["image_size"]), "text_width": int(tc["width"]),
            "text_layers": int(tc["layers"]), "text_heads": int(tc["heads"]),
            "context_length": int(tc["context_length"]), "vocab_size": int(tc["vocab_size"])}


def check_clip_config(c: ClipConfig) -> dict[str, Any]:
    """Check that ``cfg.clip``'s dims agree with the arch; returns :func:`backbone_description`."""
    d = backbone_description(c)
    problems = []
    if c.embed_dim != d["embed_dim"]:
        problems.append(f"clip.embed_dim is {c.embed_dim}, the {c.arch} CLIP's is {d['embed_dim']}")
    if c.layer3_channels != d["layer3_channels"]:
        how = (f"set clip.layer3_channels={d['layer3_channels']} or clip.tiny_width={c.layer3_channels // 16}"
               if c.arch == "tiny" else f"set clip.layer3_channels={d['layer3_channels']}")
        problems.append(f"clip.layer3_channels is {c.layer3_channels}, the {c.arch} CLIP's layer3 has "
                        f"{d['layer3_channels']} channels ({how})")
    if c.image_size != d["image_size"]:
        problems.append(f"clip.image_size is {c.image_size}, the {c.arch} CLIP takes {d['image_size']}")
    if c.image_size % 32:
        problems.append(f"clip.image_size {c.image_size} is not a multiple of 32")
    if d["vocab_size"] < _tokenizer_vocab_size():
        problems.append(f"clip.tiny_vocab_size {d['vocab_size']} is smaller than open_clip's BPE "
                        f"vocabulary ({_tokenizer_vocab_size()})")
    if c.arch == "tiny" and c.tiny_text_width % c.tiny_text_heads:
        problems.append(f"clip.tiny_text_width {c.tiny_text_width} is not divisible by tiny_text_heads")
    if c.crop > c.resize:
        problems.append(f"clip.crop {c.crop} is larger than clip.resize {c.resize}")
    if problems:
        raise ConfigError("invalid clip config: " + "; ".join(problems))
    return d


def _new_backbone(c: ClipConfig) -> nn.Module:
    """A randomly initialised open_clip ``CLIP`` for ``c`` (QuickGELU, as OpenAI trained it)."""
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    if c.arch == "tiny":
        heads_vision = max(1, c.tiny_width * 32 // 64)
        vision = CLIPVisionCfg(layers=tuple(c.tiny_layers), width=c.tiny_width, image_size=c.image_size,
                               head_width=c.tiny_width * 32 // heads_vision)
        text = CLIPTextCfg(context_length=c.tiny_context_length, vocab_size=c.tiny_vocab_size,
                           width=c.tiny_text_width, layers=c.tiny_text_layers, heads=c.tiny_text_heads)
        return CLIP(c.embed_dim, vision, text, quick_gelu=True)
    with _quiet_no_pretrained():
        return open_clip.create_model(c.arch, pretrained=None, force_quick_gelu=True)


def build_backbone(c: ClipConfig, checkpoint: Optional[str | Path] = None) -> nn.Module:
    """The open_clip CLIP for ``c`` with the weights of ``checkpoint`` (random init if None)."""
    desc = check_clip_config(c)
    model = _new_backbone(c)
    if checkpoint is not None:
        path = Path(checkpoint)
        sd = read_clip_state_dict(path)
        check_state_dict(sd, model, path, _describe_config(desc))
        model.load_state_dict(sd, strict=True)
    return model


def _describe_config(d: dict[str, Any]) -> str:
    return (f"{d['arch']} (ModifiedResNet layers {tuple(d['vision_layers'])}, width {d['vision_width']}, "
            f"embed dim {d['embed_dim']}, text width {d['text_width']})")


# ---------------------------------------------------------------------------------------
# tokeniser

_TOKENIZERS: dict[int, Any] = {}


def _tokenizer(context_length: int):
    """open_clip's offline BPE tokenizer (its vocabulary ships inside the package)."""
    if context_length not in _TOKENIZERS:
        from open_clip.tokenizer import SimpleTokenizer

        _TOKENIZERS[context_length] = SimpleTokenizer(context_length=context_length)
    return _TOKENIZERS[context_length]


def tokenize(texts: list[str], context_length: int) -> torch.Tensor:
    """[B, L] int64 tokens ``<sot> words <eot> 0 ...``; too long texts are cut, ending with <eot>."""
    return _tokenizer(context_length)(list(texts)).long()
