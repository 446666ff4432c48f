"""CLIP-dagger: an open_clip ModifiedResNet CLIP with small trainable heads (METHOD.md
"CLIP-dagger (the fine-tuned CLIP)").

The backbone is built by open_clip (``open_clip.create_model(<arch>)`` for a named RN model such
as ``RN101``; for ``tiny`` a small ModifiedResNet CLIP from ``cfg.clip.tiny_*``) and its weights come
from a *local* checkpoint (``cfg.paths.clip_checkpoint``): an OpenAI TorchScript archive
(``RN101.pt`` as OpenAI ships it), a plain state dict with OpenAI key names, or an open_clip state
dict / training checkpoint.  Nothing is downloaded.

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
import zipfile
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from sepnms.config import ClipConfig, Config
from sepnms.io.checkpoints import torch_load_weights
from sepnms.errors import ConfigError, InputError
from sepnms.io.atomic import atomic_path
from sepnms.version import __version__

log = logging.getLogger(__name__)

HEADS_FORMAT = "sepnms-clip-heads"
FULL_FORMAT = "sepnms-clip-full"
FORMAT_VERSION = 1
#: keys of an OpenAI state dict that are not parameters of the model
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


# ---------------------------------------------------------------------------------------
# building the backbone


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


# ---------------------------------------------------------------------------------------
# reading checkpoints


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

