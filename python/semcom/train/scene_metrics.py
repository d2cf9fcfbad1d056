"""Train and export the two learned image metrics of the scene benchmark (torch; CPU).

    python -m gnuradio.semcom.train.scene_metrics attr --minutes 13 --cache out/scene_metrics/cache
    python -m gnuradio.semcom.train.scene_metrics clip --minutes 14.5 --cache out/scene_metrics/cache
    python -m gnuradio.semcom.train.scene_metrics eval --json out/scene_metrics/eval.json

(from a source checkout: ``PYTHONPATH=python .venv/bin/python -m semcom.train.scene_metrics …``.)

Both models learn from renders of the train split of :mod:`semcom.datasets.scenes` at 128×128
(the first ``--n-train`` seeds, rendered once and kept in memory, or in ``--cache``), with image
degradations (Gaussian blur, Gaussian noise, 2× down/up-sampling, a small contrast/brightness
change) on a share ``--aug`` of the samples so that the metrics degrade gracefully on
reconstructed images.

``attr`` — the scene attribute recogniser ``scene_attr``: a small fully-convolutional network
with CenterNet-style heads on a 16×16 grid (object-centre heat map, sub-cell centre offset, and
shape/colour/size logits at every cell), trained with the CenterNet focal loss on the heat map,
L1 on the offsets and cross-entropy on the attributes around each object centre. The exported
graph ends with the decoding: the four highest local maxima of the heat map become four
object slots, the count logits are ``log P(count = k)`` for k = 1..4 under independent slot
probabilities, and the slots are ordered: first the ``count`` detected objects left to right by
their centre x (ties: top first), then the remaining candidates by score.

``clip`` — the contrastive dual encoder ``scene_clip_image`` / ``scene_clip_text``: a light CNN
image encoder and a 2-layer causal transformer text encoder on the word-level tokenizer of
:func:`semcom.datasets.scenes.vocabulary` (``scene_clip_tokenizer.json``: [PAD], [UNK], [BOS],
[EOS], then the vocabulary), both ending in a unit-norm 128-d embedding, trained with the
symmetric InfoNCE loss of CLIP (learned temperature) on (render, caption) pairs, one of the
scene's five captions drawn at random per sample; ``--junk`` random word strings per batch are
added as negatives for every image, so that text describing no scene scores low.

``attr`` and ``clip`` train for at most ``--minutes`` of wall time (rendering included) on one
thread, check ONNX Runtime against torch on the exported graphs, and register the models in
``<models>/manifest.json``; ``--export-from`` re-exports a saved checkpoint. ``eval`` computes
the figures of docs/metrics.md through :mod:`semcom.metrics.scene` (ONNX Runtime).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pathlib
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..datasets import scenes

ATTR_NAME = "scene_attr"
CLIP_IMAGE_NAME, CLIP_TEXT_NAME = "scene_clip_image", "scene_clip_text"
TOKENIZER_FILE = "scene_clip_tokenizer.json"
SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
IMAGE_SIZE = 128
GRID = 16  # heat-map cells per side (stride 8)
SLOTS = 4  # the benchmark has 1-4 objects
MAX_TOKENS = 48  # text encoder positions (captions have at most ~30 tokens with [BOS]/[EOS])
TOLERANCE = 1e-4
HEAT_SIGMA = 0.8  # Gaussian of the heat-map target [cells]


# ----------------------------------------------------------------------------- networks

def _conv(cin, cout, stride=1, dilation=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Backbone(nn.Module):
    """128×128 RGB on [0, 1] -> [N, w3, 16, 16] (stride 8). Normalisation inside."""

    def __init__(self, widths=(16, 32, 64), n_deep=3):
        super().__init__()
        w1, w2, w3 = widths
        dil = [1, 2, 4, 1, 2, 4][:n_deep]
        self.layers = nn.Sequential(
            _conv(3, w1, 2), _conv(w1, w2, 2), _conv(w2, w2), _conv(w2, w3, 2),
            *[_conv(w3, w3, dilation=d) for d in dil])
        self.out_channels = w3

    def forward(self, x):
        return self.layers((x - 0.5) * 4.0)


class SceneAttrNet(nn.Module):
    """Dense heads on the 16×16 grid: heat-map logit (1), centre offset (2), shape, colour, size."""

    def __init__(self, widths=(16, 32, 64), n_deep=3, head=64):
        super().__init__()
        self.backbone = Backbone(widths, n_deep)
        c = self.backbone.out_channels
        self.n_shape, self.n_colour, self.n_size = len(scenes.SHAPES), len(scenes.COLOURS), len(scenes.SIZES)
        self.head = nn.Sequential(nn.Conv2d(c, head, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(head, 3 + self.n_shape + self.n_colour + self.n_size, 1))
        with torch.no_grad():
            self.head[-1].bias[0] = -2.2  # CenterNet's prior for the heat map

    def forward(self, x):
        """Dense maps: heat logit [N,1,G,G], offset logit [N,2,G,G], attribute logits [N,K,G,G]."""
        y = self.head(self.backbone(x))
        return y[:, :1], y[:, 1:3], y[:, 3:]


class SceneAttrSlots(nn.Module):
    """The exported graph: dense maps decoded into ``SLOTS`` ordered object slots."""

    def __init__(self, net: SceneAttrNet):
        super().__init__()
        self.net = net

    def forward(self, image):
        heat, off, attr = self.net(image)
        n, g = heat.shape[0], heat.shape[-1]
        peak = (heat == F.max_pool2d(heat, 3, 1, 1)).to(heat.dtype)
        prob = torch.sigmoid(heat) * peak
        score, idx = prob.flatten(1).topk(SLOTS, dim=1)  # [N,S], descending
        gx = (idx % g).to(heat.dtype)
        gy = torch.div(idx, g, rounding_mode="floor").to(heat.dtype)
        o = torch.sigmoid(off).flatten(2)  # [N,2,G*G]
        ox = torch.gather(o[:, 0], 1, idx)
        oy = torch.gather(o[:, 1], 1, idx)
        xy = torch.stack([(gx + ox) / g, (gy + oy) / g], dim=-1)  # [N,S,2]
        a = attr.flatten(2)  # [N,K,G*G]
        k = a.shape[1]
        logits = torch.gather(a, 2, idx[:, None, :].expand(n, k, SLOTS)).transpose(1, 2)  # [N,S,K]
        # log P(count = c) for c = 1..S: the c best slots are objects, the others not
        p = score.clamp(1e-6, 1 - 1e-6)
        lp, lq = torch.log(p), torch.log1p(-p)
        count_logits = torch.cumsum(lp, 1) + (lq.sum(1, keepdim=True) - torch.cumsum(lq, 1))
        count = count_logits.argmax(1, keepdim=True) + 1  # [N,1]
        rank = torch.arange(SLOTS, device=image.device)[None, :]
        valid = (rank < count).to(heat.dtype)
        key = valid * (xy[..., 0] + 1e-3 * xy[..., 1]) + (1 - valid) * (2.0 + rank.to(heat.dtype))
        order = torch.argsort(key, dim=1)
        logits = torch.gather(logits, 1, order[..., None].expand(n, SLOTS, k))
        xy = torch.gather(xy, 1, order[..., None].expand(n, SLOTS, 2))
        score = torch.gather(score, 1, order)
        s1, s2 = self.net.n_shape, self.net.n_shape + self.net.n_colour
        return count_logits, logits[..., :s1], logits[..., s1:s2], logits[..., s2:], score, xy


class ImageEncoder(nn.Module):
    """128×128 RGB on [0, 1] -> unit-norm embedding. A light CNN (4×4 stride-4 patch stem,
    then 3×3 convs to an 8×8 map of 64 channels with a dilated layer), a 1×1 reduction, 4×4
    average pooling that keeps the layout (positions matter in captions), and an MLP."""

    def __init__(self, widths=(24, 32, 48, 64), dim=128, red=32, hidden=256):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.layers = nn.Sequential(
            nn.Conv2d(3, w1, 4, 4, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True),  # 32x32
            _conv(w1, w2, 2), _conv(w2, w3), _conv(w3, w4, 2), _conv(w4, w4, dilation=2),  # 8x8
            nn.Conv2d(w4, red, 1))
        self.mlp = nn.Sequential(nn.Linear(red * 16, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))

    def forward(self, image):
        f = F.adaptive_avg_pool2d(self.layers((image - 0.5) * 4.0), 4).flatten(1)
        return F.normalize(self.mlp(f), dim=-1)


class _Block(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))

    def forward(self, x, mask):
        n, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).reshape(n, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d // h)) + mask
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(n, t, d)
        x = x + self.proj(y)
        return x + self.ff(self.ln2(x))


class TextEncoder(nn.Module):
    """Token ids [N,T] ([BOS] … [EOS]) -> unit-norm embedding from the output at [EOS] (causal
    attention, so padding after [EOS] never matters). At batch 1 the last token is [EOS]."""

    def __init__(self, vocab, d=128, layers=2, heads=4, ff=256, dim=128):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(MAX_TOKENS, d) * 0.02)
        self.blocks = nn.ModuleList([_Block(d, heads, ff) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.out = nn.Linear(d, dim)

    def features(self, ids):
        t = ids.shape[1]
        x = self.tok.weight[ids] + self.pos[:t]  # (not aten.embedding: its ONNX value would be named 'embedding')
        i = torch.arange(t, device=ids.device)
        mask = torch.where(i[None, :] > i[:, None], -1e4, 0.0).to(x.dtype)
        for b in self.blocks:
            x = b(x, mask)
        return self.ln(x)

    def forward(self, ids, eos_pos=None):
        x = self.features(ids)
        last = x[:, -1] if eos_pos is None else x[torch.arange(x.shape[0]), eos_pos]
        return F.normalize(self.out(last), dim=-1)


class TextEncoderLast(nn.Module):
    """Exported text graph: the embedding at the last position."""

    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, input_ids):
        return self.enc(input_ids)


# ----------------------------------------------------------------------------- tokenizer

def build_tokenizer():
    """HF ``tokenizers`` word-level tokenizer: [PAD]=0, [UNK]=1, [BOS]=2, [EOS]=3, then
    ``scenes.vocabulary()``; lowercase; tokens as :func:`scenes.tokenize` splits them (runs of
    letters, every other non-space character alone); ``[BOS] … [EOS]`` added around each text."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(list(SPECIALS) + [w for w in scenes.vocabulary() if w not in SPECIALS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[a-z]+|[^\sa-z]"), behavior="removed", invert=True)
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]",
                                                       special_tokens=[("[BOS]", 2), ("[EOS]", 3)])
    return tok


def encode_batch(tok, texts):
    """Padded int64 ids [N, T] and the [EOS] positions [N] (texts truncated to MAX_TOKENS)."""
    ids = [e.ids for e in tok.encode_batch(list(texts))]
    ids = [x if len(x) <= MAX_TOKENS else x[:MAX_TOKENS - 1] + [x[-1]] for x in ids]
    t = max(len(x) for x in ids)
    out = np.zeros((len(ids), t), np.int64)
    for i, x in enumerate(ids):
        out[i, :len(x)] = x
    return torch.from_numpy(out), torch.tensor([len(x) - 1 for x in ids])


# ----------------------------------------------------------------------------- data

def render_split(split, n, size=IMAGE_SIZE, log=print):
    """uint8 [n, size, size, 3] renders and the scenes of the first ``n`` seeds of ``split``."""
    seeds = scenes.SPLITS[split][:n]
    images = np.empty((n, size, size, 3), np.uint8)
    objs = []
    t0 = time.time()
    for k, s in enumerate(seeds):
        sc = scenes.generate(s)
        images[k] = scenes.render(sc, size)
        objs.append(sc)
        if log and (k + 1) % 5000 == 0:
            log(f"rendered {k + 1}/{n} {split} scenes ({time.time() - t0:.0f} s)")
    return images, objs


def train_renders(args, log=print):
    """The train renders and scenes; with ``--cache DIR`` the renders are kept in
    ``DIR/train_<n>.npy`` and re-read by later runs (the scenes are regenerated from their seeds)."""
    if not args.cache:
        return render_split("train", args.n_train, log=log)
    # the renderer's source hash in the name: a cache never outlives a change of scenes.py
    path = pathlib.Path(args.cache) / f"train_{args.n_train}_{IMAGE_SIZE}_{_provenance()['scenes_sha256'][:12]}.npy"
    if path.is_file():
        t0 = time.time()
        images = np.load(path)
        scene_list = [scenes.generate(s) for s in scenes.SPLITS["train"][:args.n_train]]
        log(f"read {len(images)} train renders from {path} ({time.time() - t0:.0f} s)")
        return images, scene_list
    images, scene_list = render_split("train", args.n_train, log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, images)
    os.replace(tmp, path)
    return images, scene_list


def _gauss_kernel(sigma):
    r = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-x * x / (2 * sigma * sigma))
    return k / k.sum()


def blur(x, sigma):
    """Separable Gaussian blur of [N,3,H,W] (reflect padding)."""
    if sigma <= 0:
        return x
    k = _gauss_kernel(sigma)
    r = (len(k) - 1) // 2
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def degrade(x, gen, frac):
    """Random degradations on a share ``frac`` of the batch [N,3,H,W] on [0, 1]: each picked
    image gets, independently with probability 1/2, Gaussian blur (σ uniform in [0.5, 2.5] px,
    one σ per batch), 2× down/up-sampling, Gaussian noise (σ uniform in [0, 0.12]) and a
    contrast/brightness change (×[0.85, 1.15], ±0.06)."""
    n = x.shape[0]
    pick = torch.rand(n, generator=gen) < frac

    def sub():
        return pick & (torch.rand(n, generator=gen) < 0.5)

    m = sub()
    if m.any():
        x[m] = blur(x[m], 0.5 + 2.0 * float(torch.rand(1, generator=gen)))
    m = sub()
    if m.any():
        x[m] = F.interpolate(F.avg_pool2d(x[m], 2), scale_factor=2, mode="bilinear", align_corners=False)
    m = sub()
    if m.any():
        s = 0.12 * torch.rand(int(m.sum()), 1, 1, 1, generator=gen)
        x[m] = x[m] + s * torch.randn(x[m].shape, generator=gen)
    m = sub()
    if m.any():
        k = int(m.sum())
        x[m] = (x[m] - 0.5) * (0.85 + 0.3 * torch.rand(k, 1, 1, 1, generator=gen)) + 0.5 \
            + 0.12 * (torch.rand(k, 1, 1, 1, generator=gen) - 0.5)
    return x.clamp_(0, 1)


def to_tensor(images_u8):
    return torch.from_numpy(images_u8).permute(0, 3, 1, 2).float().div_(255.0)


def attr_targets(scene_list, g=GRID):
    """Dense training targets for a list of scenes: heat [N,1,G,G] (Gaussian peaks, 1 at each
    centre cell), offsets [N,2,G,G], attribute classes [N,3,G,G] (-1 = none) and attribute
    weights [N,G,G] (the heat value within one cell of a centre, else 0)."""
    n = len(scene_list)
    heat = np.zeros((n, 1, g, g), np.float32)
    off = np.zeros((n, 2, g, g), np.float32)
    cls = np.full((n, 3, g, g), -1, np.int64)
    w = np.zeros((n, g, g), np.float32)
    yy, xx = np.mgrid[0:g, 0:g]
    cols = list(scenes.COLOURS)
    for b, sc in enumerate(scene_list):
        for o in sc.objects:
            fx, fy = o.cx * g, o.cy * g
            ix, iy = min(int(fx), g - 1), min(int(fy), g - 1)
            gauss = np.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / (2 * HEAT_SIGMA ** 2)).astype(np.float32)
            heat[b, 0] = np.maximum(heat[b, 0], gauss)
            off[b, :, iy, ix] = (fx - ix, fy - iy)
            near = (np.abs(xx - ix) + np.abs(yy - iy)) <= 1
            cls[b, 0][near] = scenes.SHAPES.index(o.shape)
            cls[b, 1][near] = cols.index(o.colour)
            cls[b, 2][near] = scenes.SIZES.index(o.size)
            w[b][near] = gauss[near]
    return (torch.from_numpy(heat), torch.from_numpy(off), torch.from_numpy(cls), torch.from_numpy(w))


def attr_loss(net, x, targets):
    heat_t, off_t, cls_t, w_t = targets
    heat, off, attr = net(x)
    p = torch.sigmoid(heat).clamp(1e-4, 1 - 1e-4)
    pos = (heat_t == 1).to(p.dtype)
    npos = pos.sum().clamp(min=1)
    focal = -(pos * (1 - p) ** 2 * torch.log(p) + (1 - pos) * (1 - heat_t) ** 4 * p ** 2 * torch.log(1 - p)).sum() / npos
    l_off = (pos * (torch.sigmoid(off) - off_t).abs()).sum() / npos
    s1, s2 = net.n_shape, net.n_shape + net.n_colour
    ce = 0.0
    wsum = w_t.sum().clamp(min=1e-6)
    for j, (lo, hi) in enumerate(((0, s1), (s1, s2), (s2, attr.shape[1]))):
        t = cls_t[:, j].clamp(min=0)
        ce = ce + (F.cross_entropy(attr[:, lo:hi], t, reduction="none") * w_t).sum() / wsum
    return focal + l_off + ce, {"focal": float(focal.detach()), "off": float(l_off.detach()), "ce": float(ce.detach())}


# ----------------------------------------------------------------------------- evaluation (torch side)

def slot_predictions(outputs):
    """Predicted scene graphs from the slot outputs (numpy arrays, batch N): list of dicts."""
    count_logits, shape, colour, size, score, xy = [np.asarray(o) for o in outputs]
    cols = list(scenes.COLOURS)
    preds = []
    for b in range(count_logits.shape[0]):
        c = int(np.argmax(count_logits[b])) + 1
        objs = [{"shape": scenes.SHAPES[int(np.argmax(shape[b, k]))], "colour": cols[int(np.argmax(colour[b, k]))],
                 "size": scenes.SIZES[int(np.argmax(size[b, k]))], "cx": float(xy[b, k, 0]),
                 "cy": float(xy[b, k, 1]), "score": float(score[b, k])} for k in range(c)]
        preds.append({"count": c, "objects": objs})
    return preds


def evaluate_attr(model, images_u8, scene_list, degrade_fn=None, batch=100):
    """Mean of :func:`semcom.metrics.scene.attribute_accuracy` over a set, torch forward."""
    from ..metrics.scene import attribute_accuracy

    model.eval()
    acc = []
    with torch.no_grad():
        for i in range(0, len(images_u8), batch):
            x = to_tensor(images_u8[i:i + batch])
            if degrade_fn is not None:
                x = degrade_fn(x)
            preds = slot_predictions([o.numpy() for o in model(x)])
            acc += [attribute_accuracy(p, s) for p, s in zip(preds, scene_list[i:i + batch])]
    keys = [k for k in acc[0] if not k.startswith("n_")]
    return {k: float(np.mean([a[k] for a in acc])) for k in keys}


# ----------------------------------------------------------------------------- export

def _session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def export_attr(net: SceneAttrNet, path):
    model = SceneAttrSlots(net).eval()
    x = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False, input_names=["image"],
                          output_names=["count_logits", "shape_logits", "colour_logits", "size_logits",
                                        "slot_score", "slot_xy"],
                          dynamic_shapes=({0: batch},), verbose=False)
    return model


def check_attr_ort(model, path, images=None):
    """Largest |ORT − torch| over the slot outputs (on renders of val scenes, plus noise)."""
    if images is None:
        images, _ = render_split("val", 4, log=None)
    x = to_tensor(images)
    x = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    with torch.no_grad():
        ref = [o.numpy() for o in model(x)]
    got = _session(path).run(None, {"image": x.numpy()})
    return max(float(np.abs(np.asarray(a, np.float64) - b).max()) for a, b in zip(got, ref))


def export_clip(img_enc, txt_enc, img_path, txt_path):
    img_enc.eval(), txt_enc.eval()
    txt = TextEncoderLast(txt_enc).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    tlen = torch.export.Dim("tokens", min=2, max=MAX_TOKENS)
    with torch.no_grad():
        torch.onnx.export(img_enc, (torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE),), str(img_path), dynamo=True,
                          external_data=False, input_names=["image"], output_names=["embedding"],
                          dynamic_shapes=({0: batch},), verbose=False)
        ids = torch.tensor([[2, 10, 11, 12, 13, 3]])
        torch.onnx.export(txt, (ids,), str(txt_path), dynamo=True, external_data=False, input_names=["input_ids"],
                          output_names=["embedding"], dynamic_shapes=({1: tlen},), verbose=False)
    return img_enc, txt


def check_clip_ort(img_enc, txt, img_path, txt_path, tok):
    images, sc = render_split("val", 3, log=None)
    x = to_tensor(images)
    with torch.no_grad():
        ref_i = img_enc(x).numpy()
    got_i = _session(img_path).run(None, {"image": x.numpy()})[0]
    worst = float(np.abs(got_i - ref_i).max())
    sess = _session(txt_path)
    for s in sc:
        ids, _ = encode_batch(tok, [scenes.captions(s)[0]])
        with torch.no_grad():
            ref_t = txt(ids).numpy()
        worst = max(worst, float(np.abs(sess.run(None, {"input_ids": ids.numpy()})[0] - ref_t).max()))
    return worst


# ----------------------------------------------------------------------------- training loops

def _provenance():
    path = pathlib.Path(scenes.__file__)
    return {"scenes_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _lr(step_frac, base):
    """Linear warm-up over the first 3 % of the time budget, cosine decay to 2 % after."""
    if step_frac < 0.03:
        return base * step_frac / 0.03
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step_frac - 0.03) / 0.97))))


def train_attr(args, log=print):
    t_start = time.time()
    prov = _provenance()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    images, scene_list = train_renders(args, log)
    targets = attr_targets(scene_list)
    val_images, val_scenes = render_split("val", args.n_val, log=None)
    net = SceneAttrNet(widths=tuple(args.widths), n_deep=args.deep)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = args.minutes * 60 - (time.time() - t_start) - args.reserve_s
    t0, step, seen = time.time(), 0, 0
    log(f"scene_attr: {sum(p.numel() for p in net.parameters())} parameters; training budget {budget:.0f} s")
    while True:
        frac = (time.time() - t0) / budget
        if frac >= 1 or (args.steps and step >= args.steps):
            break
        for gp in opt.param_groups:
            gp["lr"] = _lr(frac, args.lr)
        net.train()
        idx = torch.randint(0, len(images), (args.batch,), generator=gen)
        x = degrade(to_tensor(images[idx.numpy()]), gen, args.aug)
        loss, parts = attr_loss(net, x, [t[idx] for t in targets])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seen += args.batch
        if step % 100 == 0:
            log(f"step {step} ({seen} samples, {time.time() - t0:.0f} s): loss {float(loss.detach()):.4f} "
                + " ".join(f"{k} {v:.4f}" for k, v in parts.items()))
    elapsed = time.time() - t_start
    torch.save({"model": net.state_dict(), "args": vars(args)}, pathlib.Path(args.out) / "attr_raw.pt")
    net.eval()
    slots = SceneAttrSlots(net).eval()
    val = evaluate_attr(slots, val_images, val_scenes)
    log(f"scene_attr: {step} steps, {seen} samples, {elapsed:.0f} s; val ({args.n_val} scenes): "
        + json.dumps({k: round(v, 4) for k, v in val.items()}))
    return net, {"steps": step, "samples": seen, "elapsed_s": elapsed, "val": val, **prov}


def clip_loss(img_enc, txt_enc, scale, x, ids, eos, junk=None):
    """Symmetric InfoNCE; ``junk`` = (ids, eos) of extra texts that are negatives for every image."""
    zi, zt = img_enc(x), txt_enc(ids, eos)
    s = scale.exp().clamp(max=100.0)
    logits = s * zi @ zt.t()
    lab = torch.arange(len(x))
    i2t = logits if junk is None else torch.cat([logits, s * zi @ txt_enc(*junk).t()], 1)
    loss = 0.5 * (F.cross_entropy(i2t, lab) + F.cross_entropy(logits.t(), lab))
    acc = float((logits.argmax(1) == lab).float().mean())
    return loss, acc


def junk_texts(rng, vocab_words, k):
    """``k`` texts that describe no scene: random strings of 0-12 benchmark words or unknown words."""
    out = []
    for _ in range(k):
        n = int(rng.integers(0, 13))
        words = [vocab_words[int(rng.integers(len(vocab_words)))] if rng.random() < 0.8 else "xq" for _ in range(n)]
        out.append(" ".join(words))
    return out


def evaluate_clip(img_enc, txt_enc, images_u8, scene_list, tok, caption_index=0):
    """Image→caption top-1 among the set, mean cosine of matched and mismatched pairs."""
    img_enc.eval(), txt_enc.eval()
    with torch.no_grad():
        zi = torch.cat([img_enc(to_tensor(images_u8[i:i + 100])) for i in range(0, len(images_u8), 100)])
        ids, eos = encode_batch(tok, [scenes.captions(s)[caption_index] for s in scene_list])
        zt = txt_enc(ids, eos)
    sim = (zi @ zt.t()).numpy()
    n = len(sim)
    off = ~np.eye(n, dtype=bool)
    return {"top1": float(np.mean(sim.argmax(1) == np.arange(n))),
            "score_matched": float(100 * np.mean(np.maximum(np.diag(sim), 0))),
            "score_mismatched": float(100 * np.mean(np.maximum(sim[off], 0)))}


def train_clip(args, log=print):
    t_start = time.time()
    prov = _provenance()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tok = build_tokenizer()
    images, scene_list = train_renders(args, log)
    caps = [scenes.captions(s) for s in scene_list]
    words = scenes.vocabulary()
    val_images, val_scenes = render_split("val", args.n_val, log=None)
    img_enc = ImageEncoder(widths=tuple(args.image_widths), dim=args.dim)
    txt_enc = TextEncoder(tok.get_vocab_size(), d=args.text_dim, layers=args.text_layers, dim=args.dim)
    scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = list(img_enc.parameters()) + list(txt_enc.parameters()) + [scale]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    budget = args.minutes * 60 - (time.time() - t_start) - args.reserve_s
    n_img = sum(p.numel() for p in img_enc.parameters())
    n_txt = sum(p.numel() for p in txt_enc.parameters())
    log(f"scene_clip: {n_img} + {n_txt} parameters; training budget {budget:.0f} s")
    t0, step, seen = time.time(), 0, 0
    while True:
        frac = (time.time() - t0) / budget
        if frac >= 1 or (args.steps and step >= args.steps):
            break
        for gp in opt.param_groups:
            gp["lr"] = _lr(frac, args.lr)
        img_enc.train(), txt_enc.train()
        idx = torch.randperm(len(images), generator=gen)[:args.batch].numpy()
        x = degrade(to_tensor(images[idx]), gen, args.aug)
        ids, eos = encode_batch(tok, [caps[i][int(rng.integers(len(caps[i])))] for i in idx])
        junk = encode_batch(tok, junk_texts(rng, words, args.junk)) if args.junk else None
        loss, acc = clip_loss(img_enc, txt_enc, scale, x, ids, eos, junk)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seen += args.batch
        if step % 50 == 0:
            log(f"step {step} ({seen} pairs, {time.time() - t0:.0f} s): loss {float(loss.detach()):.4f} batch top-1 {acc:.3f} "
                f"scale {float(scale.detach().exp()):.1f}")
    elapsed = time.time() - t_start
    torch.save({"image": img_enc.state_dict(), "text": txt_enc.state_dict(), "args": vars(args)},
               pathlib.Path(args.out) / "clip_raw.pt")
    val = evaluate_clip(img_enc, txt_enc, val_images, val_scenes, tok)
    log(f"scene_clip: {step} steps, {seen} pairs, {elapsed:.0f} s; val ({args.n_val} pairs, caption 0): "
        + json.dumps({k: round(v, 4) for k, v in val.items()}))
    return img_enc, txt_enc, tok, {"steps": step, "samples": seen, "elapsed_s": elapsed, "val": val,
                                   "logit_scale": float(scale.detach().exp()), **prov}


# ----------------------------------------------------------------------------- manifest entries

def _command(args):
    skip = {"cmd", "models", "out", "func", "export_from", "threads", "cache"}
    flags = " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                     for k, v in vars(args).items() if k not in skip)
    return f"python -m gnuradio.semcom.train.scene_metrics {args.cmd} {flags}"


def _data_text(args, info):
    """``info["scenes_sha256"]``: hash of scenes.py when training started (else: now)."""
    sha = info.get("scenes_sha256") or _provenance()["scenes_sha256"]
    return (f"semcom.datasets.scenes, train split seeds {scenes.SPLITS['train'].start}..."
            f"{scenes.SPLITS['train'].start + args.n_train - 1} rendered at {IMAGE_SIZE} px; validation: the first "
            f"{args.n_val} val seeds (scenes.py sha256 {sha[:16]}…)")


def attr_entry(args, info):
    f32 = "float32"
    return {
        "name": ATTR_NAME, "file": ATTR_NAME + ".onnx", "task": "scene-attribute-recognition",
        "inputs": [{"name": "image", "shape": ["N", 3, IMAGE_SIZE, IMAGE_SIZE], "dtype": f32}],
        "outputs": [{"name": "count_logits", "shape": ["N", SLOTS], "dtype": f32},
                    {"name": "shape_logits", "shape": ["N", SLOTS, len(scenes.SHAPES)], "dtype": f32},
                    {"name": "colour_logits", "shape": ["N", SLOTS, len(scenes.COLOURS)], "dtype": f32},
                    {"name": "size_logits", "shape": ["N", SLOTS, len(scenes.SIZES)], "dtype": f32},
                    {"name": "slot_score", "shape": ["N", SLOTS], "dtype": f32},
                    {"name": "slot_xy", "shape": ["N", SLOTS, 2], "dtype": f32}],
        "channel_uses": None,
        "training": {
            "data": _data_text(args, info),
            "command": _command(args),
            "notes": (f"{info['steps']} steps ({info['samples']} samples, batch {args.batch}) in "
                      f"{info['elapsed_s'] / 60:.1f} min of CPU wall time on 1 thread, seed {args.seed}; CenterNet "
                      "focal loss on a 16x16 heat map + L1 centre offsets + cross-entropy on shape/colour/size; "
                      f"degradations (blur, noise, 2x down/up, contrast) on a share {args.aug} of samples; "
                      "val accuracy (semcom.metrics.scene.attribute_accuracy): "
                      + ", ".join(f"{k} {v:.3f}" for k, v in info["val"].items())),
        },
        "extra": {
            "image_size": IMAGE_SIZE, "input_range": [0, 1], "slots": SLOTS, "counts": list(range(1, SLOTS + 1)),
            "shapes": list(scenes.SHAPES), "colours": list(scenes.COLOURS), "sizes": list(scenes.SIZES),
            "slot_order": "slots 0..count-1 (count = argmax(count_logits) + 1) are the detected objects "
                          "left to right by centre x (ties: top first); the remaining slots are the next "
                          "candidates by score",
            "slot_xy": "object centre (x, y) as fractions of the image side, y down",
            "count_logits": "log P(count = k), k = 1..4, from independent slot probabilities slot_score",
            "grid": GRID, "architecture": {"widths": list(args.widths), "deep_layers": args.deep},
        },
    }


def clip_entries(args, info, tok_file):
    f32 = "float32"
    training = {
        "data": _data_text(args, info) + "; one of the scene's five captions drawn at random per sample",
        "command": _command(args),
        "notes": (f"{info['steps']} steps ({info['samples']} pairs, batch {args.batch}) in "
                  f"{info['elapsed_s'] / 60:.1f} min of CPU wall time on 1 thread, seed {args.seed}; symmetric "
                  f"InfoNCE (CLIP) loss, learned temperature, {getattr(args, 'junk', 0)} random word strings per batch as extra "
                  f"image->text negatives (final logit scale {info['logit_scale']:.1f}); "
                  f"image degradations on a share {args.aug} of samples; val ({args.n_val} pairs, first caption): "
                  f"image->caption top-1 {info['val']['top1']:.3f}, 100*max(cos,0) matched "
                  f"{info['val']['score_matched']:.1f} / mismatched {info['val']['score_mismatched']:.1f}"),
    }
    extra = {"dim": args.dim, "image_size": IMAGE_SIZE, "input_range": [0, 1], "tokenizer": tok_file,
             "bos_id": 2, "eos_id": 3, "pad_id": 0, "max_tokens": MAX_TOKENS,
             "embedding": "unit L2 norm; score = 100 * max(cos, 0)",
             "image_model": CLIP_IMAGE_NAME, "text_model": CLIP_TEXT_NAME}
    img = {"name": CLIP_IMAGE_NAME, "file": CLIP_IMAGE_NAME + ".onnx", "task": "scene-clip-image-encoder",
           "inputs": [{"name": "image", "shape": ["N", 3, IMAGE_SIZE, IMAGE_SIZE], "dtype": f32}],
           "outputs": [{"name": "embedding", "shape": ["N", args.dim], "dtype": f32}],
           "channel_uses": None, "training": training,
           "extra": dict(extra, architecture={"widths": list(args.image_widths)})}
    txt = {"name": CLIP_TEXT_NAME, "file": CLIP_TEXT_NAME + ".onnx", "task": "scene-clip-text-encoder",
           "inputs": [{"name": "input_ids", "shape": [1, "T"], "dtype": "int64"}],
           "outputs": [{"name": "embedding", "shape": [1, args.dim], "dtype": f32}],
           "channel_uses": None, "training": training,
           "extra": dict(extra, input="[BOS] tokens [EOS] (tokenizer post-processor), T <= max_tokens; "
                                      "the embedding is read at the last position",
                         architecture={"d_model": args.text_dim, "layers": args.text_layers, "heads": 4})}
    return img, txt


# ----------------------------------------------------------------------------- evaluation (ONNX Runtime)

def _degradations():
    """name -> function(uint8 H×W×3, rng) -> image, for the robustness table."""
    from PIL import Image, ImageFilter
    import io

    def gblur(r):
        return lambda im, rng: np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(r)))

    def noise(sd):
        return lambda im, rng: np.clip(im + rng.normal(0, sd, im.shape), 0, 255).astype(np.uint8)

    def downup(f):
        def fn(im, rng):
            n = im.shape[0]
            small = Image.fromarray(im).resize((n // f, n // f), Image.BILINEAR)
            return np.asarray(small.resize((n, n), Image.BILINEAR))
        return fn

    def jpeg(q):
        def fn(im, rng):
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, "JPEG", quality=q)
            return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        return fn

    return {"clean": lambda im, rng: im, "blur 1 px": gblur(1), "blur 2 px": gblur(2), "blur 3 px": gblur(3), "blur 5 px": gblur(5),
            "noise 10": noise(10), "noise 25": noise(25), "noise 50": noise(50), "noise 80": noise(80),
            "down/up 2x": downup(2), "down/up 4x": downup(4), "down/up 8x": downup(8), "jpeg q20": jpeg(20)}


def evaluate_shipped(models_dir, n_attr=1000, n_clip=100, log=print):
    """The figures of docs/metrics.md, with the registered models through semcom.metrics.scene."""
    from ..metrics import scene as ms

    rng = np.random.default_rng(0)
    images, sc = render_split("test", max(n_attr, n_clip), log=None)
    res = {"attr": {}, "clip": {}}
    for name, fn in _degradations().items():
        x = np.stack([fn(im, rng) for im in images[:n_attr]])
        acc = ms.image_attribute_accuracy(x, sc[:n_attr], models_dir=models_dir)
        keys = list(ms.ATTRIBUTE_KINDS) + ["relation", "overall"]
        res["attr"][name] = {k: float(np.mean([a[k] for a in acc])) for k in keys}
        res["attr"][name]["exact_scene"] = float(np.mean([a["overall"] == 1.0 for a in acc]))
        log(f"attr {name:11s} " + " ".join(f"{k} {v:.3f}" for k, v in res["attr"][name].items()))
    by_n = {}
    acc = ms.image_attribute_accuracy(images[:n_attr], sc[:n_attr], models_dir=models_dir)
    for a in acc:
        by_n.setdefault(a["n_objects"], []).append(a["overall"])
    res["attr"]["clean_by_count"] = {str(k): float(np.mean(v)) for k, v in sorted(by_n.items())}
    other = ms.image_attribute_accuracy(images[:n_attr], sc[1:n_attr] + sc[:1], models_dir=models_dir)
    res["attr"]["other_scene_overall"] = float(np.mean([a["overall"] for a in other]))
    log(f"attr clean by count {res['attr']['clean_by_count']}; other scene {res['attr']['other_scene_overall']:.3f}")
    zi_all = {}
    for name in ("clean", "blur 2 px", "noise 25", "down/up 4x"):
        fn = _degradations()[name]
        zi_all[name] = ms.clip_image_embedding(np.stack([fn(im, rng) for im in images[:n_clip]]), models_dir=models_dir)
    off = ~np.eye(n_clip, dtype=bool)
    for t in range(5):
        zt = ms.clip_text_embedding([scenes.captions(s)[t] for s in sc[:n_clip]], models_dir=models_dir)
        for name, zi in zi_all.items():
            sim = 100 * np.maximum(zi @ zt.T, 0)
            r = res["clip"].setdefault(name, {"top1": [], "matched": [], "mismatched": []})
            r["top1"].append(float(np.mean(sim.argmax(1) == np.arange(n_clip))))
            r["matched"].append(float(np.diag(sim).mean()))
            r["mismatched"].append(float(sim[off].mean()))
    for name, r in res["clip"].items():
        log(f"clip {name:11s} top-1 per template {[round(v, 2) for v in r['top1']]} mean {np.mean(r['top1']):.3f}; "
            f"matched {np.mean(r['matched']):.1f} mismatched {np.mean(r['mismatched']):.1f}")
    return res


# ----------------------------------------------------------------------------- CLI

def _parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, lr, batch in (("attr", 2e-3, 32), ("clip", 1e-3, 128)):
        p = sub.add_parser(name)
        p.add_argument("--minutes", type=float, default=13.0, help="wall-time budget incl. rendering [min]")
        p.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: time budget only)")
        p.add_argument("--n-train", type=int, default=16000, help="train-split scenes rendered")
        p.add_argument("--n-val", type=int, default=500, help="val-split scenes for the final check")
        p.add_argument("--batch", type=int, default=batch)
        p.add_argument("--lr", type=float, default=lr)
        p.add_argument("--aug", type=float, default=0.5, help="share of samples degraded")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--reserve-s", type=float, default=40.0, help="seconds kept for the final evaluation")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--cache", default=None, metavar="DIR", help="keep/reuse the train renders in DIR")
        p.add_argument("--models", default="models", help="models folder holding manifest.json")
        p.add_argument("--out", default="out/scene_metrics", help="checkpoints and logs")
        p.add_argument("--export-from", default=None, metavar="CKPT",
                       help="skip training: export and register the checkpoint CKPT (attr.pt / clip.pt)")
        if name == "attr":
            p.add_argument("--widths", type=int, nargs=3, default=[16, 32, 64])
            p.add_argument("--deep", type=int, default=4, help="dilated 3x3 layers at stride 8")
        if name == "clip":
            p.add_argument("--dim", type=int, default=128)
            p.add_argument("--image-widths", type=int, nargs=4, default=[24, 32, 48, 64])
            p.add_argument("--junk", type=int, default=16,
                           help="random word strings per batch added as negatives for every image")
            p.add_argument("--text-dim", type=int, default=128)
            p.add_argument("--text-layers", type=int, default=2)
    p = sub.add_parser("eval", help="figures of the registered models (ONNX Runtime)")
    p.add_argument("--models", default="models")
    p.add_argument("--n-attr", type=int, default=1000, help="test scenes for the attribute accuracy")
    p.add_argument("--n-clip", type=int, default=100, help="test pairs for the retrieval")
    p.add_argument("--json", default=None, help="write the figures here")
    ap.epilog = "\n".join(f"--- {name}\n{sp.format_help()}" for name, sp in sub.choices.items())
    return ap


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.cmd == "eval":
        res = evaluate_shipped(args.models, args.n_attr, args.n_clip)
        if args.json:
            pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            pathlib.Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
        return
    torch.set_num_threads(args.threads)
    from ..runtime import register_model

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logf = open(out / f"{args.cmd}.log", "a")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    ck = None
    if args.export_from:
        src = args.export_from
        ck = torch.load(src, map_location="cpu", weights_only=False)
        models_dir = args.models
        args = argparse.Namespace(**ck["args"])
        args.models, args.export_from = models_dir, None
        info = ck["info"]
        log(f"exporting {args.cmd} from {src} (trained by: {_command(args)})")
    else:
        log(f"$ {_command(args)}")
    if args.cmd == "attr":
        if ck is None:
            net, info = train_attr(args, log)
            torch.save({"model": net.state_dict(), "args": vars(args), "info": info}, out / "attr.pt")
        else:
            net = SceneAttrNet(widths=tuple(args.widths), n_deep=args.deep)
            net.load_state_dict(ck["model"])
        net.eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / (ATTR_NAME + ".onnx")
            model = export_attr(net, path)
            err = check_attr_ort(model, path)
            log(f"max |ORT - torch| = {err:.2e}")
            if err > TOLERANCE:
                raise SystemExit(f"ONNX Runtime differs from torch by {err:.2e}; not registered")
            register_model(args.models, attr_entry(args, info), path)
            log(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB registered in {args.models}")
    else:
        if ck is None:
            img_enc, txt_enc, tok, info = train_clip(args, log)
            torch.save({"image": img_enc.state_dict(), "text": txt_enc.state_dict(), "args": vars(args), "info": info,
                        "tokenizer": tok.to_str()}, out / "clip.pt")
        else:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(ck["tokenizer"]) if "tokenizer" in ck else build_tokenizer()
            img_enc = ImageEncoder(widths=tuple(args.image_widths), dim=args.dim)
            txt_enc = TextEncoder(tok.get_vocab_size(), d=args.text_dim, layers=args.text_layers, dim=args.dim)
            img_enc.load_state_dict(ck["image"])
            txt_enc.load_state_dict(ck["text"])  # fails if the vocabulary size changed
        with tempfile.TemporaryDirectory() as tmp:
            ip, tp = pathlib.Path(tmp) / (CLIP_IMAGE_NAME + ".onnx"), pathlib.Path(tmp) / (CLIP_TEXT_NAME + ".onnx")
            img, txt = export_clip(img_enc, txt_enc, ip, tp)
            err = check_clip_ort(img, txt, ip, tp, tok)
            log(f"max |ORT - torch| = {err:.2e}")
            if err > TOLERANCE:
                raise SystemExit(f"ONNX Runtime differs from torch by {err:.2e}; not registered")
            pathlib.Path(args.models).mkdir(parents=True, exist_ok=True)
            tok.save(str(pathlib.Path(args.models) / TOKENIZER_FILE))
            ie, te = clip_entries(args, info, TOKENIZER_FILE)
            register_model(args.models, ie, ip)
            register_model(args.models, te, tp)
            for p in (ip, tp):
                log(f"{p.name}: {p.stat().st_size / 1e6:.2f} MB registered in {args.models}")
    logf.close()


if __name__ == "__main__":
    main()
