"""CLIP-dagger: an open_clip ModifiedResNet CLIP with small trainable heads (METHOD.md
"CLIP-dagger (the fine-tuned CLIP)").

The backbone (an open_clip ModifiedResNet CLIP, weights from a local checkpoint) is built by
:mod:`sepnms.clip.backbone`; this module adds the heads, their files and the loaders.

Heads (trainable):

- ``image_head``  Linear(E, E) on the global image code (attnpool output),
- ``text_head``   Linear(E, E) on the sentence code (the EOT token's projected vector),
- ``region_head`` 1x1 conv (layer3 channels -> E, no bias) on the layer3 map (word loss),
- ``word_head`` + ``word_norm``  Linear(text width -> E) + LayerNorm on the per-token features
  before the final projection (word loss).

The initialisation follows the released (GR-GAN ITM) code: ``image_head`` and ``region_head``
weights uniform in [-0.1, 0.1], the others PyTorch defaults; LayerNorm eps 1e-12.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from sepnms.clip.backbone import backbone_description, build_backbone, tokenize
from sepnms.config import Config
from sepnms.errors import ConfigError, InputError
from sepnms.io.atomic import atomic_path
from sepnms.io.checkpoints import torch_load_weights
from sepnms.version import __version__

log = logging.getLogger(__name__)

HEADS_FORMAT = "sepnms-clip-heads"
FULL_FORMAT = "sepnms-clip-full"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------
# CLIP-dagger


class CLIPDagger(nn.Module):
    """A ModifiedResNet CLIP backbone + the CLIP-dagger heads.

    ``backbone`` is an open_clip ``CLIP``; ``info`` records arch, dims and checkpoint path (what the
    heads files store and check on load).
    """

    def __init__(self, backbone: nn.Module, info: dict[str, Any], freeze_backbone: bool = True):
        super().__init__()
        self.clip = backbone
        self.info = dict(info)
        self.frozen = bool(freeze_backbone)
        e = int(info["embed_dim"])
        self.embed_dim = e
        self.context_length = int(backbone.context_length)
        self.image_head = nn.Linear(e, e)
        self.text_head = nn.Linear(e, e)
        self.region_head = nn.Conv2d(int(info["layer3_channels"]), e, kernel_size=1, bias=False)
        self.word_head = nn.Linear(int(info["text_width"]), e)
        self.word_norm = nn.LayerNorm(e, eps=1e-12)
        nn.init.uniform_(self.image_head.weight, -0.1, 0.1)
        nn.init.uniform_(self.region_head.weight, -0.1, 0.1)
        if self.frozen:
            for p in self.clip.parameters():
                p.requires_grad_(False)
            self.clip.eval()

    # -- modes -------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "CLIPDagger":
        super().train(mode)
        if self.frozen:
            self.clip.eval()  # a frozen backbone keeps its BatchNorm statistics
        return self

    @property
    def device(self) -> torch.device:
        return self.image_head.weight.device

    def _backbone_grad(self):
        return torch.no_grad() if self.frozen else contextlib.nullcontext()

    # -- image tower ---------------------------------------------------------------------
    def _visual(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, 3, S, S] -> (global code [B, E] (attnpool), layer3 map [B, C3, S/16, S/16])."""
        v = self.clip.visual
        with self._backbone_grad():
            x = images.to(device=v.conv1.weight.device, dtype=v.conv1.weight.dtype)
            x = v.stem(x)
            x = v.layer1(x)
            x = v.layer2(x)
            l3 = v.layer3(x)
            g = v.attnpool(v.layer4(l3))
        return g, l3

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, 3, S, S] (normalised) -> (code [B, E], regions [B, E, S/16, S/16])."""
        g, l3 = self._visual(images)
        return self.image_head(g), self.region_head(l3)

    def image_code(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] -> code [B, E] (the scoring path; no region branch)."""
        g, _ = self._visual(images)
        return self.image_head(g)

    # -- text tower ----------------------------------------------------------------------
    def _textual(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, L] -> (per-token features [B, L, W] after ln_final, sentence [B, E])."""
        c = self.clip
        tokens = tokens.to(c.token_embedding.weight.device)
        with self._backbone_grad():
            x = c.token_embedding(tokens) + c.positional_embedding
            x = c.transformer(x, attn_mask=c.attn_mask)
            x = c.ln_final(x)
            eot = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
            proj = c.text_projection
            sent = proj(eot) if isinstance(proj, nn.Linear) else eot @ proj
        return x, sent

    def encode_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens [B, L] -> (code [B, E], words [B, L, E], lengths [B]).

        ``words[b, k]`` is the (head-projected) feature of caption token ``k`` - the tokens between
        ``<sot>`` and ``<eot>``, shifted to start at 0; positions ``>= lengths[b]`` are padding.  A
        caption with no word (empty text) uses its ``<eot>`` token as its one word.
        """
        feats, sent = self._textual(tokens)
        eot_pos = tokens.argmax(dim=-1).to(feats.device)
        words = self.word_norm(self.word_head(feats[:, 1:]))
        words = F.pad(words, (0, 0, 0, 1))
        lengths = (eot_pos - 1).clamp(min=1)
        return self.text_head(sent), words, lengths

    def text_code(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, L] -> code [B, E] (the scoring path; no word branch)."""
        _, sent = self._textual(tokens)
        return self.text_head(sent)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """[B, L] tokens with this model's context length."""
        return tokenize(texts, self.context_length)

    def sentence_codes(self, sentences: list[str]) -> torch.Tensor:
        """sentences (S) -> codes [S, E]: tokenise once and encode all of them in one batch."""
        return self.text_code(self.tokenize(sentences).to(self.device))

    # -- parameters and files ------------------------------------------------------------
    HEAD_MODULES = ("image_head", "text_head", "region_head", "word_head", "word_norm")

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def heads_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.split(".", 1)[0] in self.HEAD_MODULES}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What fine-tuning changes: the heads, plus the backbone when it is not frozen."""
        return self.heads_state_dict() if self.frozen else self.state_dict()

    def _meta(self, fmt: str, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        return {"format": fmt, "version": FORMAT_VERSION, "sepnms_version": __version__,
                "info": _json_safe(self.info), "freeze_backbone": self.frozen, **(extra or {})}

    def save_heads(self, path: str | Path, full_state: Optional[str] = None) -> None:
        """Write the heads alone (small), atomically, with the backbone's arch, dims and checkpoint.

        ``full_state``: the file name (beside ``path``) of a :meth:`save_full` file that holds the
        trained backbone too; :func:`load_dagger` then loads that instead.
        """
        with atomic_path(path) as tmp:
            torch.save({**self._meta(HEADS_FORMAT, {"full_state": full_state}),
                        "heads": {k: v.detach().cpu() for k, v in self.heads_state_dict().items()}}, tmp)

    def save_full(self, path: str | Path) -> None:
        """Write the whole state (backbone + heads), for a backbone that was trained."""
        with atomic_path(path) as tmp:
            torch.save({**self._meta(FULL_FORMAT),
                        "state": {k: v.detach().cpu() for k, v in self.state_dict().items()}}, tmp)

    def _read(self, path: str | Path, fmt: str) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "CLIP-dagger weights not found (run `sepnms clip-finetune` first)")
        data = torch_load_weights(path, "CLIP-dagger weights file")  # one line; never advises weights_only=False
        if not isinstance(data, dict) or data.get("format") != fmt:
            raise InputError(path, f"not a {fmt} file")
        mine, theirs = _json_safe(self.info), data.get("info", {})
        keys = [k for k in mine if k != "checkpoint"]
        diff = [f"{k}: file {theirs.get(k)!r} vs config {mine[k]!r}" for k in keys if theirs.get(k) != mine[k]]
        if diff:
            raise InputError(path, "CLIP-dagger weights of another backbone architecture: " + "; ".join(diff[:5]))
        if theirs.get("checkpoint") != mine.get("checkpoint"):
            log.warning("%s was trained on backbone checkpoint %s, now %s", path, theirs.get("checkpoint"),
                        mine.get("checkpoint"))
        return data

    def load_heads(self, path: str | Path) -> dict[str, Any]:
        """Load heads written by :meth:`save_heads`; returns the file's record."""
        data = self._read(path, HEADS_FORMAT)
        try:
            missing, unexpected = self.load_state_dict(data["heads"], strict=False)
        except RuntimeError as exc:
            raise InputError(path, f"heads do not fit the model ({str(exc)[:300]})") from None
        missing = [k for k in missing if k.split(".", 1)[0] in self.HEAD_MODULES]
        if missing or unexpected:
            raise InputError(path, f"heads file lacks {missing[:3]} / has unknown {unexpected[:3]}")
        return {k: v for k, v in data.items() if k != "heads"}

    def load_full(self, path: str | Path) -> dict[str, Any]:
        """Load a :meth:`save_full` file (backbone + heads)."""
        data = self._read(path, FULL_FORMAT)
        try:
            self.load_state_dict(data["state"], strict=True)
        except RuntimeError as exc:
            raise InputError(path, f"state does not fit the model ({str(exc)[:300]})") from None
        return {k: v for k, v in data.items() if k != "state"}


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def build_dagger(cfg: Config, seed: Optional[int] = None, checkpoint: Optional[str | Path] = "config") -> CLIPDagger:
    """A CLIP-dagger for ``cfg.clip``: backbone weights from ``cfg.paths.clip_checkpoint``
    (required for a named arch such as RN101; optional for ``tiny``), freshly initialised heads.

    ``seed`` makes the random initialisation reproducible without touching the global RNG.
    """
    c = cfg.clip
    if checkpoint == "config":
        checkpoint = cfg.paths.clip_checkpoint
        if checkpoint is None and c.arch != "tiny":
            raise ConfigError(f"config key paths.clip_checkpoint is not set; CLIP-dagger ({c.arch}) needs a "
                              f"local OpenAI/open_clip checkpoint file (e.g. {c.arch}.pt)")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        backbone = build_backbone(c, checkpoint)
        info = {**backbone_description(c), "checkpoint": str(checkpoint) if checkpoint is not None else None}
        dagger = CLIPDagger(backbone, info, freeze_backbone=c.freeze_backbone)
    return dagger


def default_heads_path(cfg: Config) -> Path:
    """``paths.clip_heads`` or ``<workdir>/clip/heads.pt``."""
    return Path(cfg.paths.clip_heads) if cfg.paths.clip_heads is not None else Path(cfg.workdir) / "clip" / "heads.pt"


def full_state_name(heads_path: Path) -> str:
    """File name (beside the heads file) of the full state: ``<stem>_full.pt``."""
    return f"{Path(heads_path).stem}_full.pt"


def load_dagger(cfg: Config, heads_path: Optional[str | Path] = None, device: Optional[str] = None) -> CLIPDagger:
    """The fine-tuned CLIP-dagger: backbone from the config, heads (or the full state, when the
    fine-tuning trained the backbone) from ``heads_path`` (default :func:`default_heads_path`).
    Returned in eval mode on ``device`` (default ``cfg.device``)."""
    heads_path = Path(heads_path) if heads_path is not None else default_heads_path(cfg)
    if not heads_path.is_file():
        raise InputError(heads_path, "CLIP-dagger heads not found (run `sepnms clip-finetune` first, "
                                     "or set paths.clip_heads)")
    dagger = build_dagger(cfg, seed=cfg.seed)
    record = dagger.load_heads(heads_path)
    if record.get("full_state"):
        dagger.load_full(heads_path.parent / record["full_state"])
    return dagger.to(device or cfg.device).eval()
