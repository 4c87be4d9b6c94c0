"""Plain-torch twins of segmentation and detection models (torchvision cannot be imported in tests here).

Each mirrors the structure that makes its family hard to prune, at small widths (8-64 channels, 3x64x64 input):

* :class:`Segmenter` — FCN/DeepLabV3: a dilated residual backbone, ASPP (1x1 conv, dilated 3x3 convs, an image
  pooling branch upsampled with ``F.interpolate``, concat, projection) and an auxiliary FCN head; returns
  ``{"out", "aux"}`` like torchvision's segmentation models;
* :class:`TwoStageDetector` — Faster R-CNN: ResNet body, FPN (lateral and output convs, top-down adds through
  ``F.interpolate``, a max-pooled extra level), an RPN head shared by the levels, anchors, box decoding, ``topk``
  proposals, a multi-scale RoIAlign written with ``F.grid_sample`` (level per box from its area, ``index_copy``
  into the result), a two-layer box head and a predictor; detections chosen by ``topk`` after an NMS-like
  suppression;
* :class:`OneStageDetector` — RetinaNet/FCOS: FPN with P6/P7, classification and regression towers with GroupNorm
  shared by every level, a learnable per-level scale, centerness; ``topk`` detections;
* :class:`YoloDetector` — YOLOv8: C2f blocks (``chunk`` + bottlenecks + concat), SPPF (repeated max-pool + concat),
  a PAN neck, a decoupled head with DFL (softmax over a ``reg_max`` axis, a fixed conv with ``arange`` weights);
* :class:`AutoEncoder` — strided convs down, transposed convs up, a conv writing the 3 output channels;
* :class:`TimmBlocks` — timm's functional forms: ``BatchNormAct2d`` / ``GroupNormAct`` / ``Conv2dSame`` /
  a linear calling ``F.linear`` on their own parameters, BEiT's qkv with an assembled bias.

Detectors return their raw head outputs (``"raw"``) next to the post-processed ones, and carry
``prunekit_compare``: the outputs before post-processing, which structured pruning's exactness check compares
(the final boxes are compared too where they have the same shapes).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

INPUT_SHAPE = (3, 64, 64)
NUM_CLASSES = 5


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, act: type = nn.ReLU,
            groups: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + activation, 'same' padding."""
    pad = dilation * (k - 1) // 2
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), act())


class BasicBlock(nn.Module):
    """ResNet basic block (optionally dilated) with a projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        idt = x if self.down is None else self.down(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + idt)


class ResNetBody(nn.Module):
    """A small ResNet returning C2..C5 in a dict (torchvision's ``IntermediateLayerGetter`` output)."""

    def __init__(self, widths: tuple[int, ...] = (8, 16, 32, 32), dilate_last: bool = False) -> None:
        super().__init__()
        self.stem = conv_bn(3, widths[0], 3, 2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(widths[0], widths[0])
        self.layer2 = BasicBlock(widths[0], widths[1], 2)
        self.layer3 = BasicBlock(widths[1], widths[2], 2)
        self.layer4 = BasicBlock(widths[2], widths[3], 1 if dilate_last else 2, 2 if dilate_last else 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        c2 = self.layer1(self.pool(self.stem(x)))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return {"c2": c2, "c3": c3, "c4": c4, "c5": c5}


# -- segmentation --------------------------------------------------------------------------------------------------


class ASPPPooling(nn.Sequential):
    """Image pooling branch: global average, 1x1 conv, BN, ReLU, upsampled back to the input's size."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """DeepLabV3's atrous spatial pyramid pooling."""

    def __init__(self, cin: int, rates: tuple[int, ...] = (2, 4), cout: int = 24) -> None:
        super().__init__()
        branches: list[nn.Module] = [conv_bn(cin, cout, 1)]
        branches += [conv_bn(cin, cout, 3, dilation=r) for r in rates]
        branches.append(ASPPPooling(cin, cout))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(nn.Conv2d(cout * len(branches), cout, 1, bias=False), nn.BatchNorm2d(cout),
                                     nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([b(x) for b in self.convs], dim=1))


class Segmenter(nn.Module):
    """DeepLabV3 with an FCN auxiliary head: ``{"out": (N, classes, H, W), "aux": (N, classes, H, W)}``."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.backbone = ResNetBody((8, 16, 24, 32), dilate_last=True)
        self.classifier = nn.Sequential(ASPP(32), conv_bn(24, 24), nn.Conv2d(24, num_classes, 1))
        self.aux_classifier = nn.Sequential(conv_bn(24, 12), nn.Dropout(0.1), nn.Conv2d(12, num_classes, 1))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        size = x.shape[-2:]
        feats = self.backbone(x)
        out = F.interpolate(self.classifier(feats["c5"]), size=size, mode="bilinear", align_corners=False)
        aux = F.interpolate(self.aux_classifier(feats["c4"]), size=size, mode="bilinear", align_corners=False)
        return {"out": out, "aux": aux}


# -- detection: shared parts ---------------------------------------------------------------------------------------


class FPN(nn.Module):
    """torchvision's FeaturePyramidNetwork: 1x1 lateral convs, top-down adds of upsampled maps, 3x3 output convs;
    ``extra="pool"`` adds a max-pooled level (Faster R-CNN), ``extra="p6p7"`` two strided convs (RetinaNet)."""

    def __init__(self, in_channels: list[int], out_channels: int, extra: str = "pool") -> None:
        super().__init__()
        self.inner_blocks = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.layer_blocks = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        self.extra = extra
        if extra == "p6p7":
            self.p6 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
            self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        last = self.inner_blocks[-1](feats[-1])
        results = [self.layer_blocks[-1](last)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[i](feats[i])
            top_down = F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            last = lateral + top_down
            results.insert(0, self.layer_blocks[i](last))
        if self.extra == "pool":
            results.append(F.max_pool2d(results[-1], 1, 2, 0))
        else:
            p6 = self.p6(results[-1])
            results += [p6, self.p7(F.relu(p6))]
        return results


def grid_anchors(feats: list[Tensor], image: Tensor, sizes: list[float], ratios: tuple[float, ...]) -> list[Tensor]:
    """Anchors ``(H·W·A, 4)`` per level, centred on every cell (torchvision's ``AnchorGenerator``)."""
    out = []
    h_img, w_img = image.shape[-2:]
    for f, size in zip(feats, sizes):
        h, w = f.shape[-2:]
        sy, sx = h_img / h, w_img / w
        r = torch.tensor(ratios)
        hs, ws = size * r.sqrt(), size / r.sqrt()
        base = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
        ys, xs = torch.meshgrid(torch.arange(h) * sy, torch.arange(w) * sx, indexing="ij")
        shifts = torch.stack([xs.reshape(-1), ys.reshape(-1), xs.reshape(-1), ys.reshape(-1)], dim=1)
        out.append((shifts[:, None, :] + base[None]).reshape(-1, 4))
    return out


def decode(deltas: Tensor, anchors: Tensor, clip: float = math.log(1000.0 / 16)) -> Tensor:
    """Box decoding ``(dx, dy, dw, dh)`` relative to ``anchors`` (x1, y1, x2, y2), torchvision's ``BoxCoder``."""
    w = anchors[..., 2] - anchors[..., 0]
    h = anchors[..., 3] - anchors[..., 1]
    cx = anchors[..., 0] + 0.5 * w
    cy = anchors[..., 1] + 0.5 * h
    dx, dy, dw, dh = deltas.unbind(-1)
    pcx, pcy = dx * w + cx, dy * h + cy
    pw, ph = torch.exp(dw.clamp(max=clip)) * w, torch.exp(dh.clamp(max=clip)) * h
    return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], dim=-1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of ``(..., N, 4)`` and ``(..., M, 4)`` boxes."""
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter + 1e-9)


def select_detections(boxes: Tensor, scores: Tensor, k: int, iou: float = 0.5) -> dict[str, Tensor]:
    """An NMS-like selection of a fixed number of detections per image: boxes sorted by score, a box suppressed
    (score 0) when it overlaps a higher-scoring box by more than ``iou``, then the ``k`` best (data-dependent
    ``sort``/``topk``/``gather``). ``boxes`` (N, M, 4), ``scores`` (N, M, classes)."""
    best, labels = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True)
    boxes = boxes.gather(1, order[..., None].expand(-1, -1, 4))
    best, labels = best.gather(1, order), labels.gather(1, order)
    overlap = box_iou(boxes, boxes).triu(diagonal=1)
    suppressed = (overlap > iou).any(dim=1)
    best = best.masked_fill(suppressed, 0.0)
    top = best.topk(min(k, best.shape[1]), dim=1).indices
    return {"boxes": boxes.gather(1, top[..., None].expand(-1, -1, 4)), "scores": best.gather(1, top),
            "labels": labels.gather(1, top)}


def roi_align(feat: Tensor, rois: Tensor, size: int, scale: float) -> Tensor:
    """RoIAlign (aligned, one bilinear sample per bin centre) in plain torch: ``rois`` (K, 5) rows
    ``(batch index, x1, y1, x2, y2)`` in image coordinates; returns (K, C, size, size)."""
    h, w = feat.shape[-2:]
    idx = rois[:, 0].long()
    x1, y1, x2, y2 = (rois[:, 1:] * scale - 0.5).unbind(-1)
    steps = (torch.arange(size, dtype=feat.dtype) + 0.5) / size
    xs = x1[:, None] + (x2 - x1)[:, None] * steps[None]
    ys = y1[:, None] + (y2 - y1)[:, None] * steps[None]
    gx = (xs + 0.5) / w * 2 - 1
    gy = (ys + 0.5) / h * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(-1, size, -1), gy[:, :, None].expand(-1, -1, size)], dim=-1)
    return F.grid_sample(feat[idx], grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class MultiLevelRoIAlign(nn.Module):
    """torchvision's ``MultiScaleRoIAlign`` in plain torch: each box is pooled from the FPN level its size maps to
    (``LevelMapper``: k = floor(4 + log2(sqrt(area) / 224))), written into the result with ``index_copy``."""

    def __init__(self, scales: list[float], size: int = 4, canonical: float = 32.0) -> None:
        super().__init__()
        self.scales, self.size, self.canonical = scales, size, canonical
        self.k_min = -int(math.log2(scales[0]))
        self.k_max = -int(math.log2(scales[-1]))

    def forward(self, feats: list[Tensor], rois: Tensor) -> Tensor:
        area = (rois[:, 3] - rois[:, 1]).clamp(min=1) * (rois[:, 4] - rois[:, 2]).clamp(min=1)
        lvl = torch.floor(4 + torch.log2(area.sqrt() / self.canonical) + 1e-6)
        lvl = (lvl.clamp(self.k_min, self.k_max) - self.k_min).long()
        c = feats[0].shape[1]
        result = feats[0].new_zeros((rois.shape[0], c, self.size, self.size))
        for k, (f, s) in enumerate(zip(feats, self.scales)):
            idx = torch.where(lvl == k)[0]
            if idx.numel() == 0:
                continue
            result = result.index_copy(0, idx, roi_align(f, rois[idx], self.size, s))
        return result


# -- two-stage -----------------------------------------------------------------------------------------------------


class RPNHead(nn.Module):
    """One 3x3 conv + objectness and box-delta 1x1 convs, shared by every FPN level."""

    def __init__(self, c: int, anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.cls_logits = nn.Conv2d(c, anchors, 1)
        self.bbox_pred = nn.Conv2d(c, anchors * 4, 1)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        obj, reg = [], []
        for f in feats:
            t = F.relu(self.conv(f))
            obj.append(self.cls_logits(t))
            reg.append(self.bbox_pred(t))
        return obj, reg


class BoxHead(nn.Module):
    """TwoMLPHead + FastRCNNPredictor: flatten the pooled RoI, two linears, class scores and per-class deltas."""

    def __init__(self, c: int, size: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(c * size * size, hidden)
        self.fc7 = nn.Linear(hidden, hidden)
        self.cls_score = nn.Linear(hidden, num_classes + 1)
        self.bbox_pred = nn.Linear(hidden, (num_classes + 1) * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.fc7(F.relu(self.fc6(x.flatten(start_dim=1)))))
        return self.cls_score(x), self.bbox_pred(x)


class TwoStageDetector(nn.Module):
    """Faster R-CNN with FPN: backbone -> FPN -> RPN -> ``topk`` proposals -> multi-level RoIAlign -> box head ->
    NMS-like ``topk`` detections. Returns ``{"boxes", "scores", "labels", "raw": {...}}``."""

    ratios = (0.5, 1.0, 2.0)

    def __init__(self, num_classes: int = NUM_CLASSES, proposals: int = 12, detections: int = 6) -> None:
        super().__init__()
        self.backbone = ResNetBody((8, 16, 24, 32))
        self.fpn = FPN([8, 16, 24, 32], 16, extra="pool")
        self.rpn = RPNHead(16, len(self.ratios))
        self.roi_pool = MultiLevelRoIAlign([1 / 4, 1 / 8, 1 / 16, 1 / 32], size=4)
        self.box_head = BoxHead(16, 4, 32, num_classes)
        self.proposals, self.detections = proposals, detections

    def forward(self, images: Tensor) -> dict[str, Any]:
        n = images.shape[0]
        body = self.backbone(images)
        feats = self.fpn([body["c2"], body["c3"], body["c4"], body["c5"]])
        obj, reg = self.rpn(feats)
        a = len(self.ratios)
        objectness = torch.cat([o.permute(0, 2, 3, 1).reshape(n, -1) for o in obj], dim=1)
        deltas = torch.cat([r.view(n, a, 4, r.shape[-2], r.shape[-1]).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
                            for r in reg], dim=1)
        anchors = torch.cat(grid_anchors(feats, images, [16.0, 32.0, 64.0, 128.0, 256.0], self.ratios), dim=0)
        boxes = decode(deltas.detach(), anchors[None])
        top = objectness.detach().topk(self.proposals, dim=1).indices
        proposals = boxes.gather(1, top[..., None].expand(-1, -1, 4))
        h, w = images.shape[-2:]
        proposals = torch.stack([proposals[..., 0].clamp(0, w), proposals[..., 1].clamp(0, h),
                                 proposals[..., 2].clamp(0, w), proposals[..., 3].clamp(0, h)], dim=-1)
        batch = torch.arange(n, dtype=proposals.dtype).repeat_interleave(self.proposals)
        rois = torch.cat([batch[:, None], proposals.reshape(-1, 4)], dim=1)
        pooled = self.roi_pool(feats[:4], rois)
        cls, box = self.box_head(pooled)
        scores = F.softmax(cls, dim=-1)[:, 1:].reshape(n, self.proposals, -1)
        per_class = box.reshape(n * self.proposals, -1, 4)[:, 1:]
        best = scores.argmax(dim=-1).reshape(-1)
        chosen = per_class[torch.arange(per_class.shape[0]), best].reshape(n, self.proposals, 4)
        det = select_detections(decode(chosen, proposals), scores, self.detections)
        det["raw"] = {"objectness": objectness, "rpn_deltas": deltas, "class_logits": cls, "box_regression": box}
        return det


# -- one-stage -----------------------------------------------------------------------------------------------------


class Scale(nn.Module):
    """FCOS's learnable per-level scalar."""

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([init]))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class OneStageHead(nn.Module):
    """RetinaNet/FCOS head: classification and regression towers (conv + GroupNorm + ReLU) shared by every level,
    class logits, box regression and centerness."""

    def __init__(self, c: int, num_classes: int, levels: int, convs: int = 2, groups: int = 4) -> None:
        super().__init__()

        def tower() -> nn.Sequential:
            layers: list[nn.Module] = []
            for _ in range(convs):
                layers += [nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(groups, c), nn.ReLU()]
            return nn.Sequential(*layers)

        self.cls_tower, self.reg_tower = tower(), tower()
        self.cls_logits = nn.Conv2d(c, num_classes, 3, padding=1)
        self.bbox_reg = nn.Conv2d(c, 4, 3, padding=1)
        self.centerness = nn.Conv2d(c, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in range(levels))

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        cls, reg, ctr = [], [], []
        for f, s in zip(feats, self.scales):
            n = f.shape[0]
            t = self.cls_tower(f)
            r = self.reg_tower(f)
            cls.append(self.cls_logits(t).permute(0, 2, 3, 1).reshape(n, -1, self.cls_logits.out_channels))
            reg.append(F.relu(s(self.bbox_reg(r))).permute(0, 2, 3, 1).reshape(n, -1, 4))
            ctr.append(self.centerness(r).permute(0, 2, 3, 1).reshape(n, -1, 1))
        return torch.cat(cls, 1), torch.cat(reg, 1), torch.cat(ctr, 1)


class OneStageDetector(nn.Module):
    """FCOS/RetinaNet: backbone -> FPN (P3..P7) -> shared head -> points, box decoding, NMS-like ``topk``."""

    def __init__(self, num_classes: int = NUM_CLASSES, detections: int = 8) -> None:
        super().__init__()
        self.backbone = ResNetBody((8, 16, 24, 32))
        self.fpn = FPN([16, 24, 32], 16, extra="p6p7")
        self.head = OneStageHead(16, num_classes, levels=5)
        self.detections = detections

    def forward(self, images: Tensor) -> dict[str, Any]:
        body = self.backbone(images)
        feats = self.fpn([body["c3"], body["c4"], body["c5"]])
        cls, reg, ctr = self.head(feats)
        points = []
        for f in feats:
            h, w = f.shape[-2:]
            stride = images.shape[-1] / w
            ys, xs = torch.meshgrid((torch.arange(h) + 0.5) * stride, (torch.arange(w) + 0.5) * stride,
                                    indexing="ij")
            points.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1))
        p = torch.cat(points, 0)[None]
        boxes = torch.cat([p - reg[..., :2], p + reg[..., 2:]], dim=-1)
        scores = (torch.sigmoid(cls) * torch.sigmoid(ctr)).sqrt()
        det = select_detections(boxes, scores, self.detections)
        det["raw"] = {"cls_logits": cls, "bbox_regression": reg, "centerness": ctr}
        return det


# -- YOLO ----------------------------------------------------------------------------------------------------------


class Conv(nn.Module):
    """Ultralytics' Conv: Conv2d (no bias) + BatchNorm2d + SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, 3), Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x: Tensor) -> Tensor:
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C2f(nn.Module):
    """CSP bottleneck with 2 convs: ``cv1`` split in two by ``chunk``, bottlenecks on the last piece, all
    concatenated into ``cv2``."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: Tensor) -> Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: one max-pool applied three times, the four maps concatenated."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss integral: softmax over ``reg_max`` bins, then a fixed 1x1 conv with weights
    ``0..reg_max-1`` (the expected distance)."""

    def __init__(self, c1: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x: Tensor) -> Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class Detect(nn.Module):
    """YOLOv8's decoupled head: per level a box branch (4·reg_max) and a class branch, concatenated; DFL decoding
    against anchor points."""

    def __init__(self, nc: int, ch: tuple[int, ...], strides: tuple[int, ...], reg_max: int = 8) -> None:
        super().__init__()
        self.nc, self.reg_max, self.no = nc, reg_max, nc + 4 * reg_max
        self.stride = strides
        c2, c3 = max(16, ch[0] // 4, reg_max * 4), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(reg_max)

    def forward(self, x: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        x = [torch.cat((self.cv2[i](xi), self.cv3[i](xi)), 1) for i, xi in enumerate(x)]
        b = x[0].shape[0]
        x_cat = torch.cat([xi.view(b, self.no, -1) for xi in x], 2)
        anchors, strides = [], []
        for xi, s in zip(x, self.stride):
            h, w = xi.shape[-2:]
            sy, sx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            anchors.append(torch.stack((sx, sy), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), float(s)))
        anchor_points = torch.cat(anchors).transpose(0, 1)[None]
        stride_t = torch.cat(strides).transpose(0, 1)
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = anchor_points - lt, anchor_points + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * stride_t
        return torch.cat((dbox, cls.sigmoid()), 1), x


class YoloDetector(nn.Module):
    """YOLOv8-n-like: backbone (Conv / C2f / SPPF), PAN neck (upsample + concat + C2f, strided conv + concat + C2f),
    decoupled DFL head; returns ``{"boxes", "scores", "labels", "pred", "raw"}``."""

    def __init__(self, num_classes: int = NUM_CLASSES, detections: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(Conv(3, 8, 3, 2), Conv(8, 16, 3, 2), C2f(16, 16))
        self.stage3 = nn.Sequential(Conv(16, 32, 3, 2), C2f(32, 32))
        self.stage4 = nn.Sequential(Conv(32, 48, 3, 2), C2f(48, 48))
        self.stage5 = nn.Sequential(Conv(48, 64, 3, 2), C2f(64, 64), SPPF(64, 64))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n4 = C2f(64 + 48, 48, shortcut=False)
        self.n3 = C2f(48 + 32, 32, shortcut=False)
        self.d3 = Conv(32, 32, 3, 2)
        self.n4b = C2f(32 + 48, 48, shortcut=False)
        self.d4 = Conv(48, 48, 3, 2)
        self.n5 = C2f(48 + 64, 64, shortcut=False)
        self.detect = Detect(num_classes, (32, 48, 64), (8, 16, 32))
        self.detections = detections

    def forward(self, x: Tensor) -> dict[str, Any]:
        p3 = self.stage3(self.stem(x))
        p4 = self.stage4(p3)
        p5 = self.stage5(p4)
        n4 = self.n4(torch.cat([self.up(p5), p4], 1))
        o3 = self.n3(torch.cat([self.up(n4), p3], 1))
        o4 = self.n4b(torch.cat([self.d3(o3), n4], 1))
        o5 = self.n5(torch.cat([self.d4(o4), p5], 1))
        pred, raw = self.detect([o3, o4, o5])
        xywh = pred[:, :4].transpose(1, 2)
        boxes = torch.cat([xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2], dim=-1)
        det = select_detections(boxes, pred[:, 4:].transpose(1, 2), self.detections)
        det["pred"] = pred
        det["raw"] = raw
        return det


# -- autoencoder ---------------------------------------------------------------------------------------------------


class AutoEncoder(nn.Module):
    """Conv encoder (stride 2 twice), transposed-conv decoder, a 3x3 conv writing the image (3 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, 32, 3, 2), conv_bn(32, 32))
        self.decoder = nn.Sequential(nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                                     nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.ReLU())
        self.out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.out(self.decoder(self.encoder(x))))


# -- timm's functional building blocks ----------------------------------------------------------------------------


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's ``BatchNormAct2d``: a ``BatchNorm2d`` whose forward calls ``F.batch_norm`` on its own parameters, then
    an activation."""

    def __init__(self, c: int) -> None:
        super().__init__(c)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                         self.momentum, self.eps)
        return self.act(x)


class Conv2dSame(nn.Conv2d):
    """timm's ``Conv2dSame``: TF 'same' padding with ``F.pad``, then ``F.conv2d`` on its own weight and bias."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)


class GroupNormAct(nn.GroupNorm):
    """timm's ``GroupNormAct``: ``F.group_norm`` on its own parameters, then SiLU."""

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))


class FunctionalLinear(nn.Linear):
    """A linear layer whose forward calls ``F.linear`` on its own weight and bias (StarNet's/SwiftFormer's heads)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class BeitQKV(nn.Module):
    """BEiT's qkv projection: ``F.linear`` with a bias assembled from ``q_bias``, zeros and ``v_bias``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(c, 3 * c, bias=False)
        self.q_bias = nn.Parameter(torch.randn(c) * 0.1)
        self.v_bias = nn.Parameter(torch.randn(c) * 0.1)
        self.proj = nn.Linear(3 * c, c)

    def forward(self, x: Tensor) -> Tensor:
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        return self.proj(F.gelu(F.linear(input=x, weight=self.qkv.weight, bias=bias)))  # keywords, as timm


class TimmBlocks(nn.Module):
    """timm's functional forms in one classifier: Conv2dSame -> BatchNormAct2d -> conv -> GroupNormAct -> pool ->
    FunctionalLinear -> BEiT-style qkv -> head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = Conv2dSame(3, 16, 3, stride=2)
        self.bn1 = BatchNormAct2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.gn2 = GroupNormAct(4, 32)
        self.fc1 = FunctionalLinear(32, 24)
        self.attn = BeitQKV(24)
        self.head = nn.Linear(24, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.gn2(self.conv2(self.bn1(self.stem(x))))
        x = F.relu(self.fc1(x.mean((2, 3))))
        return self.head(self.attn(x))


# -- builders ------------------------------------------------------------------------------------------------------


def raw_outputs(output: dict[str, Any]) -> Any:
    """The outputs of a detector before post-processing (what ``prunekit_compare`` names)."""
    return output["raw"]


def _calibrated(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with random BatchNorm statistics and affine parameters (as a trained model has: activations O(1)
    and channels that differ), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def segmenter() -> Segmenter:
    torch.manual_seed(0)
    return _calibrated(Segmenter())


def two_stage() -> TwoStageDetector:
    torch.manual_seed(0)
    m = _calibrated(TwoStageDetector())
    m.prunekit_compare = raw_outputs
    return m


def one_stage() -> OneStageDetector:
    torch.manual_seed(0)
    m = _calibrated(OneStageDetector())
    m.prunekit_compare = raw_outputs
    return m


def yolo() -> YoloDetector:
    torch.manual_seed(0)
    m = _calibrated(YoloDetector())
    m.prunekit_compare = raw_outputs
    return m


def autoencoder() -> AutoEncoder:
    torch.manual_seed(0)
    return _calibrated(AutoEncoder())


def timm_blocks() -> TimmBlocks:
    torch.manual_seed(0)
    m = TimmBlocks()
    with torch.no_grad():
        m.gn2.weight.uniform_(0.5, 1.5)
    return _calibrated(m)


DETECTION_MODELS: dict[str, Callable[[], nn.Module]] = {
    "segmenter": segmenter, "two_stage": two_stage, "one_stage": one_stage, "yolo": yolo,
    "autoencoder": autoencoder, "timm_blocks": timm_blocks}
