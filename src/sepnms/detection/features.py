"""C4 maps of image pixels with the detector trunk (MAttNet's ``extract_head``), and autocast."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from sepnms.detection.detector import MaskRCNNC4
from sepnms.detection.preprocess import preprocess


def autocast(device: str, amp: str):
    """bf16 / fp16 autocast on CUDA when asked, else a no-op context."""
    if amp == "none" or not str(device).startswith("cuda"):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def c4_from_rgb(model: MaskRCNNC4, rgb: np.ndarray, device: str = "cpu", amp: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB [H, W, 3] -> ``c4_from_bgr`` of its BGR flip."""
    return c4_from_bgr(model, np.ascontiguousarray(np.asarray(rgb)[..., ::-1]), device, amp)


@torch.no_grad()
def c4_from_bgr(model: MaskRCNNC4, bgr: np.ndarray, device: str = "cpu", amp: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """uint8 BGR [H, W, 3] (``cv2.imread``) -> (head float32 [1, C, Hf, Wf], im_info float32 [3]) as
    MAttNet's files."""
    dc = model.dc
    blob, info = preprocess(bgr, dc.pixel_means, dc.test_scale, dc.test_max_size, device=device)
    with autocast(device, amp):
        c4 = model.c4(blob)
    return c4.float().cpu().numpy(), info.numpy()


