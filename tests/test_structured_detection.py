"""Structured pruning of segmentation and detection models, and of timm's functional building blocks (issue 22).

The models are plain-torch twins (``tests/detection_models.py``; torchvision cannot be imported here): a
DeepLabV3 segmenter with ASPP and an auxiliary head, a Faster R-CNN with FPN, RPN and a grid-sample RoIAlign, an
FCOS/RetinaNet one-stage detector, a YOLOv8-style detector (C2f, SPPF, DFL head), a transposed-conv autoencoder.
Each prunes at 30% and 50% with one call, is exact against the unpruned model whose consumers ignore the removed
channels (checked here again on a fresh batch, with the reference built from the plan alone), keeps the shapes of
every output, and saves and reloads (factory + plan + safetensors). Expected widths are counted by hand from the
architectures: every group keeps ``floor(n * (1 - ratio))`` of its ``n`` units.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from detection_models import DETECTION_MODELS, INPUT_SHAPE, NUM_CLASSES, raw_outputs
from prunekit import load_model, save_model
from prunekit.errors import PrunekitError
from prunekit.factory import mark
from prunekit.metrics import count_params
from prunekit.pruning.structured import build_graph, prune_structured
from prunekit.pruning.structured.capture import call_model, flat_tensors
from prunekit.pruning.structured.verify import output_difference, zeroed_reference

REL = 1e-5
RATIOS = (0.3, 0.5)


def _x(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, *INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))


def _model(name: str) -> nn.Module:
    return mark(DETECTION_MODELS[name](), f"detection_models:{name}", {}, INPUT_SHAPE)


def _kept(n: int, ratio: float) -> int:
    return max(1, math.floor(n * (1 - ratio)))


def _shapes(y: object) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in flat_tensors(y)]


@torch.no_grad()
def _outputs(model: nn.Module, x: torch.Tensor) -> object:
    return call_model(model.eval(), (x,))


# -- every twin: exact, same output shapes, smaller, reloaded ----------------------------------------------------


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("name", ["segmenter", "two_stage", "one_stage", "yolo", "autoencoder", "timm_blocks"])
def test_twin_prunes_exactly_keeps_output_shapes_and_reloads(name, ratio, tmp_path):
    model = _model(name)
    example = _x()
    res = prune_structured(model, example, ratio=ratio)
    assert res.info["rel_diff"] <= REL
    # independent of the internal check: a fresh batch, the reference rebuilt from the plan alone
    fresh = _x(3, seed=7)
    _, rel = output_difference(zeroed_reference(model, res.step_plan), res.model, (fresh,))
    assert rel <= REL
    dense_out, pruned_out = _outputs(model, fresh), _outputs(res.model, fresh)
    assert _shapes(pruned_out) == _shapes(dense_out)
    if isinstance(dense_out, dict):
        assert list(pruned_out) == list(dense_out)
    # removal is real and not a no-op
    assert count_params(res.model) < 0.75 * count_params(model)
    compared = raw_outputs(dense_out) if hasattr(model, "prunekit_compare") else dense_out
    compared_pruned = raw_outputs(pruned_out) if hasattr(model, "prunekit_compare") else pruned_out
    gap = max(float((a - b).abs().max()) for a, b in zip(flat_tensors(compared), flat_tensors(compared_pruned)))
    assert gap > 1e-4
    save_model(res.model, tmp_path)
    back = load_model(tmp_path, factory=f"detection_models:{name}").eval()
    again = _outputs(back, fresh)
    assert all(torch.equal(a, b) for a, b in zip(flat_tensors(again), flat_tensors(pruned_out)))
    assert count_params(back) == count_params(res.model)


# -- hand-counted widths -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", RATIOS)
def test_segmenter_widths_and_class_maps(ratio):
    res = prune_structured(_model("segmenter"), _x(), ratio=ratio)
    m = res.model
    # the stem and layer1 share one residual stream of 8; each ASPP branch (24) is its own group
    assert m.backbone.stem[0].out_channels == _kept(8, ratio) == m.backbone.layer1.conv2.out_channels
    aspp = m.classifier[0]
    branches = [b[0].out_channels for b in aspp.convs[:3]] + [aspp.convs[3][1].out_channels]
    assert branches == [_kept(24, ratio)] * 4
    assert aspp.project[0].in_channels == 4 * _kept(24, ratio)  # the concat of the four branches
    # both heads keep their class maps, whatever feeds them
    assert m.classifier[-1].out_channels == NUM_CLASSES == m.aux_classifier[-1].out_channels
    assert m.aux_classifier[-1].in_channels == _kept(12, ratio)


@pytest.mark.parametrize("ratio", RATIOS)
def test_two_stage_fpn_rpn_roi_and_box_head_widths(ratio):
    res = prune_structured(_model("two_stage"), _x(), ratio=ratio)
    m = res.model
    k = _kept(16, ratio)
    # lateral convs are coupled through the top-down adds, output convs through the RPN head shared by the levels
    assert {c.out_channels for c in m.fpn.inner_blocks} == {k}
    assert {c.out_channels for c in m.fpn.layer_blocks} == {k}
    assert m.rpn.conv.in_channels == k and m.rpn.conv.out_channels == k
    # RoIAlign keeps the FPN channels: fc6 reads channel x 4 x 4 columns
    assert m.box_head.fc6.in_features == k * 16
    # every output layer keeps its width
    assert (m.rpn.cls_logits.out_channels, m.rpn.bbox_pred.out_channels) == (3, 12)
    assert (m.box_head.cls_score.out_features, m.box_head.bbox_pred.out_features) == \
        (NUM_CLASSES + 1, (NUM_CLASSES + 1) * 4)
    assert res.info["compared"].startswith("outputs before post-processing")
    assert res.info["final_outputs"] == "equal"


@pytest.mark.parametrize("ratio", RATIOS)
def test_one_stage_shared_towers_lose_whole_groupnorm_groups(ratio):
    res = prune_structured(_model("one_stage"), _x(), ratio=ratio)
    head = res.model.head
    groups = _kept(4, ratio)  # GroupNorm(4, 16): a unit is a whole group of 4 channels
    for tower in (head.cls_tower, head.reg_tower):
        assert [tower[i].num_groups for i in (1, 4)] == [groups, groups]
        assert [tower[i].num_channels for i in (1, 4)] == [4 * groups, 4 * groups]
    assert (head.cls_logits.out_channels, head.bbox_reg.out_channels, head.centerness.out_channels) == \
        (NUM_CLASSES, 4, 1)
    assert {c.out_channels for c in res.model.fpn.layer_blocks} == {_kept(16, ratio)}


@pytest.mark.parametrize("ratio", RATIOS)
def test_yolo_c2f_sppf_and_dfl_head(ratio):
    res = prune_structured(_model("yolo"), _x(), ratio=ratio)
    m = res.model
    # C2f's chunk(2): both halves lose the same positions, so cv1 stays even and each half feeds the bottleneck
    for c2f in (m.stem[2], m.stage3[1], m.n3, m.n5):
        half = c2f.cv1.conv.out_channels // 2
        assert c2f.cv1.conv.out_channels % 2 == 0
        assert c2f.cv2.conv.in_channels == (2 + len(c2f.m)) * half
    assert m.stage3[1].cv1.conv.out_channels == 2 * _kept(16, ratio)
    # SPPF: the same channels four times into cv2
    sppf = m.stage5[2]
    assert sppf.cv2.conv.in_channels == 4 * sppf.cv1.conv.out_channels == 4 * _kept(32, ratio)
    # the decoupled head's outputs and the fixed DFL conv are untouched
    for i in range(3):
        assert m.detect.cv2[i][-1].out_channels == 4 * 8
        assert m.detect.cv3[i][-1].out_channels == NUM_CLASSES
    assert tuple(m.detect.dfl.conv.weight.shape) == (1, 8, 1, 1)
    assert torch.equal(m.detect.dfl.conv.weight.flatten(), torch.arange(8.0))


@pytest.mark.parametrize("ratio", RATIOS)
def test_autoencoder_keeps_its_output_channels(ratio):
    res = prune_structured(_model("autoencoder"), _x(), ratio=ratio)
    m = res.model
    assert m.out.out_channels == 3
    assert m.out.in_channels == _kept(8, ratio)
    assert (m.decoder[0].in_channels, m.decoder[0].out_channels) == (_kept(32, ratio), _kept(16, ratio))
    assert m.decoder[1].num_features == _kept(16, ratio)
    assert tuple(m.decoder[3].weight.shape[:2]) == (_kept(16, ratio), _kept(8, ratio))  # (in, out) of a transposed conv
    assert _outputs(m, _x()).shape == (2, *INPUT_SHAPE)


def test_timm_functional_forms_prune_on_their_own_parameters():
    res = prune_structured(_model("timm_blocks"), _x(), ratio=0.5)
    m = res.model
    assert (m.stem.out_channels, m.bn1.num_features, m.bn1.running_mean.numel()) == (8, 8, 8)  # F.batch_norm
    assert (m.gn2.num_groups, m.gn2.num_channels) == (2, 16)  # F.group_norm: whole groups
    assert (m.fc1.in_features, m.fc1.out_features) == (16, 12)  # F.linear on its own weight
    # BEiT's qkv: the input follows fc1, the outputs keep their width (the assembled bias cannot be sliced)
    assert (m.attn.qkv.in_features, m.attn.qkv.out_features, m.attn.proj.in_features) == (12, 72, 72)
    assert m.head.out_features == 10


# -- boundaries and errors ---------------------------------------------------------------------------------------


class _TopkOverChannels(nn.Module):
    """A conv whose channels are ranked by ``topk`` (a data-dependent selection over the channel dim)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        best = self.a(x).topk(2, dim=1).values.sum(1, keepdim=True)
        return self.c(F.relu(self.b(x))) * best


def test_topk_is_a_boundary_that_keeps_what_it_reads():
    graph = build_graph(_TopkOverChannels().eval(), (torch.randn(1, 3, 8, 8),))
    producers = {p for g in graph.groups for p in g.producers}
    assert producers == {"b"}  # a's channels are read by topk: kept whole; b's feed c only


class _SpectralHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft2(self.conv(x)).abs()


class _Detector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.neck = nn.Conv2d(8, 8, 3, padding=1)
        self.head = _SpectralHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.neck(F.relu(self.stem(x)))))


def test_a_part_that_cannot_be_captured_is_one_clear_error():
    with pytest.raises(PrunekitError) as err:
        prune_structured(_Detector().eval(), (torch.randn(1, 3, 8, 8),), ratio=0.3)
    msg = str(err.value)
    assert "cannot place op torch.fft.rfft2 in module 'head'" in msg
    assert "test_structured_detection.py:" in msg and "(forward)" in msg  # the user's source line
    assert "ignore=" in msg  # the way out
    # ... which works
    res = prune_structured(_Detector().eval(), (torch.randn(1, 3, 8, 8),), ratio=0.5, ignore=["^head$"])
    assert (res.model.stem.out_channels, res.model.neck.out_channels) == (4, 8)  # the neck feeds the ignored head


class _RepeatInterleave(nn.Module):
    """gcvit's ``repeat_interleave`` along the channels, then an RMSNorm over a conv's fixed output channels."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3)
        self.b = nn.Conv2d(16, 4, 1)
        self.norm = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.a(x)).repeat_interleave(2, dim=1)
        return F.rms_norm(self.b(y).permute(0, 2, 3, 1), (4,), self.norm)


def test_repeat_interleave_keeps_each_channels_copies_together():
    torch.manual_seed(0)
    res = prune_structured(_RepeatInterleave().eval(), (torch.randn(2, 3, 8, 8),), ratio=0.5)
    assert (res.model.a.out_channels, res.model.b.in_channels, res.model.b.out_channels) == (4, 8, 4)
    assert res.info["rel_diff"] <= REL
