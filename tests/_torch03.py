"""Writes files in the layout of MAttNet's released checkpoints, byte by byte, without the loader.

What ``torch.save({'model': JointMatching, 'opt': opt}, f)`` under Python 2.7 and PyTorch 0.3 (or
0.4) writes (PyTorch 0.3 ``torch/serialization.py`` ``_save``; ``torch/tensor.py`` ``__reduce__``;
``torch/autograd/variable.py`` ``__reduce_ex__``; ``torch/nn/modules/module.py`` ``__init__``;
``torch/nn/modules/rnn.py`` ``flatten_parameters``; ``torch/backends/cudnn/rnn.py``
``Unserializable``; MAttNet ``tools/train.py``), emitted with :mod:`_py2pickle`:

* five pickles (protocol 2): magic number (a long), protocol version 1001, sys_info, the object,
  the sorted storage keys; then per key an int64 element count and the raw float32 data;
* a module: NEWOBJ of its class + BUILD of its ``__dict__`` (``_backend`` =
  ``_get_thnn_function_backend()``, OrderedDicts of parameters / buffers / children, hooks,
  ``training``, the layer's own attributes); its class, the first time, as the persistent id
  ``('module', cls, source_file, source)``;
* a storage: the persistent id ``('storage', torch.FloatStorage, key, 'cuda:0', numel, None)``;
* a tensor: ``_rebuild_tensor(storage, offset, size, stride)`` (0.3) or ``_rebuild_tensor_v2(...,
  requires_grad, OrderedDict())`` (0.4); a Parameter: ``Parameter(tensor)`` + BUILD
  ``(requires_grad, volatile, None)`` (0.3) or ``Parameter(tensor, requires_grad)`` (0.4);
* the LSTM's eight weights: views into one flat buffer (cuDNN's per-direction order w_ih, w_hh,
  b_ih, b_hh), its ``dropout_state`` holding a ``torch.backends.cudnn.rnn.Unserializable``.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Optional

import numpy as np
from torch import nn

from _py2pickle import Build, Global, Long, NewObj, PersId, Ref, dumps

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C

#: this project's module classes -> MAttNet's (lib/layers/*.py as tools/train.py imports them)
MATTNET_NAMES = {
    "MAttNet": ("layers.joint_match", "JointMatching"), "Matching": ("layers.joint_match", "Matching"),
    "RelationMatching": ("layers.joint_match", "RelationMatching"),
    "RNNEncoder": ("layers.lang_encoder", "RNNEncoder"), "PhraseAttention": ("layers.lang_encoder", "PhraseAttention"),
    "SubjectEncoder": ("layers.visual_encoder", "SubjectEncoder"),
    "NormalizeScale": ("layers.visual_encoder", "Normalize_Scale"),
    "LocationEncoder": ("layers.visual_encoder", "LocationEncoder"),
    "RelationEncoder": ("layers.visual_encoder", "RelationEncoder"),
}


def od(items) -> Global:
    """A Python 2.7 ``collections.OrderedDict`` as its ``__reduce__`` pickles it."""
    return Global("collections", "OrderedDict", ([[k, v] for k, v in items],))


def _layer_attrs(m: nn.Module) -> dict[str, Any]:
    """The 0.3 ``__dict__`` entries of a layer besides the Module bookkeeping (representative)."""
    name = type(m).__name__
    if name == "Linear":
        return {"in_features": m.in_features, "out_features": m.out_features}
    if name == "BatchNorm1d":
        return {"num_features": m.num_features, "eps": m.eps, "momentum": m.momentum, "affine": True}
    if name == "Dropout":
        return {"p": m.p, "inplace": False}
    if name == "ReLU":
        return {"threshold": 0, "value": 0, "inplace": False}
    if name == "Embedding":
        return {"num_embeddings": m.num_embeddings, "embedding_dim": m.embedding_dim, "padding_idx": None,
                "max_norm": None, "norm_type": 2, "scale_grad_by_freq": False, "sparse": False}
    if name == "RNNEncoder":
        return {"variable_lengths": True, "rnn_type": "lstm", "num_dirs": 2}
    if name == "NormalizeScale":
        return {"init_norm": 20}
    return {}


class ReleaseWriter:
    """One file.  ``era``: ``'0.3'`` (``_rebuild_tensor``) or ``'0.4'`` (``_rebuild_tensor_v2``);
    ``lstm_gap``: floats of junk between the LSTM's views in its flat buffer (cuDNN may align them)."""

    def __init__(self, era: str = "0.3", lstm_gap: int = 0, key_base: int = 94_400_000_000_000):
        assert era in ("0.3", "0.4")
        self.era = era
        self.lstm_gap = lstm_gap
        self.storages: dict[str, np.ndarray] = {}
        self.seen_classes: set[tuple[str, str]] = set()
        self._next_key = key_base

    def new_storage(self, data: np.ndarray) -> str:
        key = str(self._next_key)
        self._next_key += 7919 * (len(self.storages) % 3 + 1)  # keys of a few widths; the file sorts them as strings
        self.storages[key] = np.ascontiguousarray(data, dtype="<f4").reshape(-1)
        return key

    def tensor(self, key: str, offset: int, shape: tuple[int, ...], requires_grad: bool = False) -> Global:
        numel = len(self.storages[key])
        storage = PersId(("storage", Ref("torch", "FloatStorage"), key, "cuda:0", numel, None))
        stride, acc = [], 1
        for s in reversed(shape):
            stride.insert(0, acc)
            acc *= s
        if self.era == "0.3":
            return Global("torch._utils", "_rebuild_tensor", (storage, offset, tuple(shape), tuple(stride)))
        return Global("torch._utils", "_rebuild_tensor_v2",
                      (storage, offset, tuple(shape), tuple(stride), requires_grad, od([])))

    def parameter(self, key: str, offset: int, shape: tuple[int, ...]) -> Any:
        if self.era == "0.3":
            return Build(Global("torch.nn.parameter", "Parameter", (self.tensor(key, offset, shape),)), (True, False, None))
        return Global("torch.nn.parameter", "Parameter", (self.tensor(key, offset, shape, True), True))

    def module(self, m: nn.Module) -> NewObj:
        cls_name = type(m).__name__
        qual = MATTNET_NAMES.get(cls_name, (type(m).__module__, cls_name))
        cls: Any = Ref(*qual)
        if qual not in self.seen_classes:
            self.seen_classes.add(qual)
            source_file = f"/home/licheng/MAttNet/lib/{qual[0].replace('.', '/')}.py" if qual[0].startswith("layers") \
                else f"/usr/lib/python2.7/site-packages/{qual[0].replace('.', '/')}.py"
            cls = PersId(("module", cls, source_file, f"class {qual[1]}(nn.Module):\n  ...\n"))
        params: list[tuple[str, Any]] = []
        attrs: dict[str, Any] = {}
        if isinstance(m, nn.LSTM):
            names = [n for n, _ in m.named_parameters(recurse=False)]
            pieces, offsets, pos = [], {}, 0
            for n in names:  # cuDNN's order: per direction w_ih, w_hh, b_ih, b_hh
                arr = getattr(m, n).detach().numpy().reshape(-1)
                offsets[n] = pos
                pieces += [arr, np.full(self.lstm_gap, -7.0, np.float32)]
                pos += arr.size + self.lstm_gap
            key = self.new_storage(np.concatenate(pieces))
            params = [(n, self.parameter(key, offsets[n], tuple(getattr(m, n).shape))) for n in names]
            attrs = {"mode": "LSTM", "input_size": m.input_size, "hidden_size": m.hidden_size, "num_layers": 1,
                     "bias": True, "batch_first": True, "dropout": 0,
                     "dropout_state": {"desc_0": NewObj(Ref("torch.backends.cudnn.rnn", "Unserializable"), (),
                                                        "<unserializable>")},
                     "bidirectional": True, "_all_weights": [names[:4], names[4:]],
                     "_param_buf_size": pos, "_data_ptrs": [Long(139_800_000 + 4 * offsets[n]) for n in names]}
        else:
            for n, p in m.named_parameters(recurse=False):
                key = self.new_storage(p.detach().numpy())
                params.append((n, self.parameter(key, 0, tuple(p.shape))))
            attrs = _layer_attrs(m)
        buffers = []
        for n, b in m.named_buffers(recurse=False):
            if n == "num_batches_tracked":  # PyTorch < 0.4.1 has no such buffer
                continue
            key = self.new_storage(b.detach().numpy())
            buffers.append((n, self.tensor(key, 0, tuple(b.shape))))
        state = {"_backend": Global("torch.nn.backends.thnn", "_get_thnn_function_backend", ()),
                 "_parameters": od(params), "_buffers": od(buffers), "_backward_hooks": od([]),
                 "_forward_hooks": od([]), "_forward_pre_hooks": od([]),
                 "_modules": od([(n, self.module(c)) for n, c in m.named_children()]), "training": False, **attrs}
        return NewObj(cls, (), state)

    def container(self, main_object: Any, keys: Optional[list[str]] = None) -> bytes:
        """The whole file: header pickles, ``main_object`` (already in emitter nodes), keys (default:
        sorted, as torch writes them), data in the keys' order."""
        out = bytearray()
        out += dumps(Long(MAGIC_NUMBER))
        out += dumps(1001)
        out += dumps({"protocol_version": 1001, "little_endian": True,
                      "type_sizes": {"short": 2, "int": 4, "long": 8}})
        main = dumps(main_object)  # emitting it registers the storages
        out += main
        keys = sorted(self.storages) if keys is None else keys
        out += dumps(keys)
        for k in keys:
            out += struct.pack("<q", len(self.storages[k])) + self.storages[k].tobytes()
        return bytes(out)


def release_bytes(net: nn.Module, opt: dict[str, Any], era: str = "0.3", lstm_gap: int = 0,
                  extra: Optional[dict[str, Any]] = None) -> bytes:
    """A MAttNet release of ``net`` (this project's MAttNet: same module tree and names)."""
    w = ReleaseWriter(era, lstm_gap)
    top = {"model": w.module(net), "opt": dict(opt)}
    top.update(extra or {})
    return w.container(top)


def write_release(path: Path, net: nn.Module, opt: dict[str, Any], era: str = "0.3", lstm_gap: int = 0) -> Path:
    path.write_bytes(release_bytes(net, opt, era, lstm_gap))
    return path
