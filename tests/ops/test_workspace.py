"""The reused operator buffers survive switching between inference mode and normal mode."""

from __future__ import annotations

import torch

from blendspec.ops import dpp, feature_map, mmr, ssd
from blendspec.ops._common import release_workspace
from blendspec.ops.similarity import SimilaritySignals


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    relevance = torch.rand((4, 60), generator=gen)
    mask = torch.ones((4, 60), dtype=torch.bool)
    mask[1, 40:] = False
    emb = torch.randn((4, 60, 16), generator=gen)
    signals = SimilaritySignals(embeddings=((emb, 1.0),))
    return (
        relevance,
        mask,
        feature_map(signals, mask, bias=True),
        feature_map(signals, mask, bias=False),
    )


def test_buffers_made_in_inference_mode_are_not_reused_outside_it() -> None:
    release_workspace()
    relevance, mask, phi_b, phi = _inputs()

    def run_all() -> list[torch.Tensor]:
        return [
            ssd(relevance, phi_b, mask, slate_length=10, window=3, theta=0.6, gamma=1.0).indices,
            dpp(relevance, phi, mask, slate_length=10, alpha=0.7).indices,
            mmr(relevance, phi, mask, slate_length=10, lam=0.6).indices,
        ]

    with torch.inference_mode():
        inside = run_all()
    outside = run_all()  # used to fail: in-place update of an inference tensor
    for a, b in zip(inside, outside, strict=True):
        assert torch.equal(a, b)
