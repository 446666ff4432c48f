"""The DAMSM losses (AttnGAN, Xu et al. 2018) as GR-GAN's ITM fine-tuning uses them
(METHOD.md "CLIP-dagger").  Both are vectorised over the B x B (image, caption) pairs; slow loop
references live in ``tests/test_clip.py``.

Conventions: row ``i`` indexes images, column ``j`` captions; the matching pairs are the diagonal.
Cosines clamp the norm product at ``eps`` = 1e-8 as the released code does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8


def _cos_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """a [B, E], b [B', E] -> cosines [B, B'] (norm product clamped at ``eps``)."""
    num = a @ b.t()
    den = a.norm(dim=-1)[:, None] * b.norm(dim=-1)[None, :]
    return num / den.clamp(min=eps)


def _both_directions(scores: torch.Tensor) -> torch.Tensor:
    labels = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores, labels) + F.cross_entropy(scores.t(), labels)


def sentence_scores(img_code: torch.Tensor, sent_code: torch.Tensor, gamma3: float) -> torch.Tensor:
    """S [B, B]: S[i, j] = gamma3 * cos(image code i, sentence code j)."""
    return gamma3 * _cos_matrix(img_code, sent_code)


def sentence_loss(img_code: torch.Tensor, sent_code: torch.Tensor, gamma3: float) -> torch.Tensor:
    """DAMSM sentence loss: CE(S, arange(B)) + CE(S^T, arange(B)); img_code, sent_code [B, E]."""
    return _both_directions(sentence_scores(img_code, sent_code, gamma3))


def word_relevance(regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor,
                   gamma1: float, gamma2: float) -> torch.Tensor:
    """R [B, B]: the word-level image-caption relevance R(i, j) of image i and caption j.

    Args:
        regions: [B, E, N] region features v_r of each image (the layer3 cells after the 1x1 conv).
        words: [B, L, E] word features e_k of each caption; positions >= lengths[j] are ignored.
        lengths: [B] number of real tokens T_j of each caption (>= 1).

    For caption j against image i: a_kr = e_k . v_r; softmax over the words k (for each region r),
    times gamma1, softmax over the regions r -> weights w_kr; c_k = sum_r w_kr v_r;
    R(i, j) = log(sum_{k < T_j} exp(gamma2 * cos(c_k, e_k))).
    """
    b, e, n = regions.shape
    lengths = lengths.to(words.device).long()
    lmax = int(lengths.max())
    words = words[:, :lmax]
    valid = torch.arange(lmax, device=words.device)[None, :] < lengths[:, None]  # [B(j), L]
    # a[i, j, k, r] = e_{j,k} . v_{i,r}
    attn = torch.einsum("jke,ier->ijkr", words, regions)
    attn = attn.masked_fill(~valid[None, :, :, None], float("-inf"))
    attn = torch.softmax(attn, dim=2)  # over words, per region
    attn = torch.softmax(attn * gamma1, dim=3)  # over regions, per word (padded rows: harmless, masked below)
    context = torch.einsum("ijkr,ier->ijke", attn, regions)  # c_k [B(i), B(j), L, E]
    num = (context * words[None]).sum(-1)
    den = (context.norm(dim=-1) * words.norm(dim=-1)[None]).clamp(min=EPS)
    cos = num / den  # [B(i), B(j), L]
    logits = (gamma2 * cos).masked_fill(~valid[None], float("-inf"))
    return torch.logsumexp(logits, dim=2)


def word_loss(regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor,
              gamma1: float, gamma2: float, gamma3: float) -> torch.Tensor:
    """DAMSM word loss: W = gamma3 * R (see :func:`word_relevance`); CE(W, arange) + CE(W^T, arange).

    regions [B, E, N] (or [B, E, h, w], flattened here), words [B, L, E], lengths [B].
    """
    if regions.dim() == 4:
        regions = regions.flatten(2)
    return _both_directions(gamma3 * word_relevance(regions, words, lengths, gamma1, gamma2))


def damsm_loss(img_code, regions, sent_code, words, lengths, gamma1: float, gamma2: float,
               gamma3: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sentence loss, word loss) of one batch; the fine-tuning objective is their sum."""
    return (sentence_loss(img_code, sent_code, gamma3),
            word_loss(regions, words, lengths, gamma1, gamma2, gamma3))
