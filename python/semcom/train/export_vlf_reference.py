"""Export the reference tier of VLF-MSC (BLIP-2 + OPT + Stable Diffusion 1.5) to ONNX.

VLF-MSC sends one vision-language feature (VLF): BLIP-2's N = 32 Q-Former query states of
d = 768, as N·d/2 analog complex symbols. The receiver writes a caption with a language model
reading the VLF as a soft prompt, and draws an image with a latent diffusion model conditioned
on the VLF. The reference tier uses the paper's models, from local checkpoint directories
(nothing is downloaded)::

    python -m gnuradio.semcom.train.export_vlf_reference --blip2 BLIP2_DIR --sd SD15_DIR \
        --out models_vlf_reference [--proj vlf_proj.pt] [--prefix pooled|queries] \
        [--opset 18] [--device cpu|cuda] [--fp16]

``BLIP2_DIR`` is a ``Blip2ForConditionalGeneration`` checkpoint with an OPT language model
(e.g. Salesforce/blip2-opt-2.7b: config, weights, tokenizer, preprocessor_config.json);
``SD15_DIR`` a Stable Diffusion 1.5 pipeline in the diffusers layout (``unet/``, ``vae/``,
``text_encoder/``, ``scheduler/``). ``--proj`` is the VLF → text-space projection trained by
``python -m gnuradio.semcom.train.vlf_reference_proj``; without it the projection is the
untrained initial map (identity + CLIP's final layer norm), marked ``"trained": false``.

Writes into ``--out`` and registers in its ``manifest.json`` (``semcom.runtime.register_model``):

- ``vlf_enc``: ``image`` float32 [1, 3, S, S] RGB in [0, 1] → ``vlf`` [1, N, d]: BLIP-2's ViT
  and Q-Former with its learnt query tokens; the output is the Q-Former's last hidden state of
  the N queries. BLIP-2's normalisation (CLIP mean/std) is inside the graph; the caller
  resizes to S = ``extra.image_size`` (BLIP-2's processor: bicubic, 224).
- ``vlf_cap_prefix``: ``vlf`` [1, N, d] → ``prefix_embeds`` [1, P, E]: BLIP-2's
  ``language_projection``. ``pooled`` (default, the paper's soft prompt, P = 1):
  e0 = W_proj(mean_i ỹ_i). ``queries`` (P = N): all projected queries, as BLIP-2 itself feeds
  its LM.
- ``vlf_cap_lm``: ``prefix_embeds`` [1, P, E], ``input_ids`` int64 [1, T] → ``logits``
  float32 [1, T, V]: BLIP-2's OPT reading [prefix, embed_tokens(ids)], logits of the token
  positions (logits[:, t] predicts token t+1), no KV cache. The fast tokenizer is saved as
  ``vlf_tokenizer.json`` (HF ``tokenizers`` JSON); extra holds bos_id, eos_id, max_new_tokens.
- ``vlf_img_cond``: ``vlf`` [1, N, d] → ``context`` [1, N, C]: the projection into SD's
  text-encoder space (see ``vlf_reference_proj``).
- ``vlf_unet``: ``latent`` [1, 4, 64, 64], ``timestep`` int64 [1], ``context`` [1, N, C] →
  ``noise_pred`` (epsilon): SD's ``UNet2DConditionModel``; extra: latent_shape, the DDIM
  scheduler config of the pipeline, steps = 50.
- ``vlf_vae_dec``: ``latent`` [1, 4, 64, 64] (diffusion space; 1/scaling_factor inside) →
  ``image`` [1, 3, 512, 512] in [0, 1]: SD's ``AutoencoderKL`` decoder.

Every graph is checked against torch with ONNX Runtime before it is registered (max abs and
relative difference stored in ``extra``). Exporter: ``torch.onnx.export(dynamo=True)``; when
that fails for a model, the TorchScript exporter (``dynamo=False``) is tried, and
``extra.exporter`` says which produced the file. See docs/vlf_reference.md.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pathlib
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from torch import nn

from .vlf_reference_proj import VlfTextProjection, load_projection

__all__ = ["MODELS", "export_vlf_reference", "load_blip2", "load_sd", "VlfEncoder", "CaptionPrefix", "CaptionLM",
           "ImageCondition", "UNetEps", "VaeDecode", "scheduler_dict"]

MODELS = ("vlf_enc", "vlf_cap_prefix", "vlf_cap_lm", "vlf_img_cond", "vlf_unet", "vlf_vae_dec")
BLIP2_MODELS = ("vlf_enc", "vlf_cap_prefix", "vlf_cap_lm")
SD_MODELS = ("vlf_img_cond", "vlf_unet", "vlf_vae_dec")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # BLIP-2's processor (OpenAI CLIP statistics)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TOKENIZER_FILE = "vlf_tokenizer.json"
DEFAULT_OPSET = 18
DEFAULT_MAX_NEW_TOKENS = 30
DDIM_STEPS = 50
SCHEDULER_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type",
                  "clip_sample", "clip_sample_range", "set_alpha_to_one", "steps_offset", "timestep_spacing",
                  "thresholding", "rescale_betas_zero_snr")
TOLERANCE = {"float32": 1e-3, "float16": 3e-2}     # max |ORT − torch| / max |torch| accepted at export
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}

log = logging.getLogger(__name__)


# -- sources ---------------------------------------------------------------------------------

def _to_fast_tokenizer(tok):
    """A ``tokenizers.Tokenizer`` from a path, a Tokenizer or a transformers fast tokenizer."""
    from tokenizers import Tokenizer

    if tok is None or isinstance(tok, Tokenizer):
        return tok
    if isinstance(tok, (str, os.PathLike)):
        return Tokenizer.from_file(str(tok))
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if isinstance(backend, Tokenizer):
        return backend
    raise TypeError(f"tokenizer must be a tokenizers.Tokenizer, a JSON path or a fast transformers tokenizer, "
                    f"got {type(tok).__name__}")


def _first_id(v):
    if isinstance(v, (list, tuple)):
        return int(v[0]) if v else None
    return None if v is None else int(v)


def load_blip2(source, device="cpu", dtype=torch.float32, tokenizer=None, image_size=None) -> dict:
    """BLIP-2 (``Blip2ForConditionalGeneration`` with a decoder-only LM) and its preprocessing.

    ``source``: a checkpoint directory (loaded with ``local_files_only``) or a model object.
    Returns ``{"model", "tokenizer" (tokenizers.Tokenizer or None), "image_size", "mean",
    "std", "resample", "n_queries", "dim", "bos_id", "eos_id", "origin"}``.
    """
    from transformers import Blip2ForConditionalGeneration

    pre = {"mean": list(CLIP_MEAN), "std": list(CLIP_STD), "resample": "bicubic"}
    size = image_size
    if isinstance(source, Blip2ForConditionalGeneration):
        model = source
        origin = "in-memory Blip2ForConditionalGeneration"
    elif isinstance(source, (str, os.PathLike)):
        src = pathlib.Path(source)
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"{src}: not a BLIP-2 checkpoint directory (no config.json)")
        model = Blip2ForConditionalGeneration.from_pretrained(str(src), local_files_only=True, dtype=dtype)
        origin = f"BLIP-2 checkpoint directory {src.resolve().name}"
        proc = src / "preprocessor_config.json"
        if proc.is_file():
            p = json.loads(proc.read_text())
            s = p.get("size")
            if size is None and s is not None:
                size = s if isinstance(s, int) else s.get("height", s.get("shortest_edge"))
            if "image_mean" in p:
                pre["mean"] = [float(x) for x in p["image_mean"]]
            if "image_std" in p:
                pre["std"] = [float(x) for x in p["image_std"]]
            if "resample" in p:
                pre["resample"] = _RESAMPLE.get(p["resample"], "bicubic")
        if tokenizer is None:
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
            except (OSError, ValueError) as e:
                raise ValueError(f"{src}: no tokenizer could be loaded ({e}); pass a tokenizer") from None
    else:
        raise TypeError(f"blip2 must be a checkpoint directory or a Blip2ForConditionalGeneration, "
                        f"got {type(source).__name__}")
    cfg = model.config
    if not cfg.use_decoder_only_language_model:
        raise ValueError(f"BLIP-2 with an encoder-decoder LM ({cfg.text_config.model_type}) is not supported: "
                         "the VLF caption contract needs a decoder-only LM (OPT)")
    model = model.to(device=device).eval()
    model.requires_grad_(False)
    tcfg = cfg.text_config
    # BLIP-2's generate() runs language_model.generate(): the LM's own generation config (made
    # from text_config; 50118 = "\n" for the OPT checkpoints) decides where a caption ends.
    ids = {"bos": None, "eos": None, "eos_all": None}
    sources = (getattr(model.language_model, "generation_config", None), tcfg,
               getattr(model, "generation_config", None))
    for src in sources:
        for k in ("bos", "eos"):
            v = getattr(src, f"{k}_token_id", None) if src is not None else None
            if ids[k] is None and _first_id(v) is not None:
                ids[k] = _first_id(v)
                if k == "eos":
                    ids["eos_all"] = [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)]
    if ids["bos"] is None or ids["eos"] is None:
        raise ValueError("the BLIP-2 language model config has no bos_token_id / eos_token_id")
    bos, eos = ids["bos"], ids["eos"]
    return {"model": model, "tokenizer": _to_fast_tokenizer(tokenizer),
            "image_size": int(size or cfg.vision_config.image_size), **pre,
            "n_queries": int(cfg.num_query_tokens), "dim": int(cfg.qformer_config.hidden_size),
            "bos_id": bos, "eos_id": eos, "eos_ids": ids["eos_all"], "origin": origin}


def scheduler_dict(scheduler) -> dict:
    """Plain JSON-able DDIM config (``DDIMScheduler.from_config``-compatible) of a scheduler,
    its config or a config dict (any diffusers scheduler: PNDM configs of SD 1.5 included)."""
    from diffusers import DDIMScheduler

    cfg = getattr(scheduler, "config", scheduler)
    ddim = DDIMScheduler.from_config(dict(cfg))
    out = {}
    for k, v in dict(ddim.config).items():
        if k.startswith("_") or k == "trained_betas":
            continue
        out[k] = list(v) if isinstance(v, tuple) else v
    if ddim.config.trained_betas is not None:
        out["trained_betas"] = [float(b) for b in ddim.config.trained_betas]
    json.dumps(out)  # plain types only
    return out


def load_sd(source, device="cpu", dtype=torch.float32) -> dict:
    """Stable Diffusion parts: ``{"unet", "vae", "text_encoder", "scheduler_config", "origin"}``.

    ``source``: a diffusers pipeline directory (``unet/``, ``vae/``, ``text_encoder/``,
    ``scheduler/``; ``local_files_only``) or a dict with those objects (``scheduler``: a
    scheduler, its config, or a config dict). The VAE stays float32 when its config asks for
    upcasting (SD 1.5's does).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    if isinstance(source, dict):
        unet, vae, te = source["unet"], source["vae"], source.get("text_encoder")
        sched = scheduler_dict(source["scheduler"])
        origin = "in-memory diffusers components"
    elif isinstance(source, (str, os.PathLike)):
        src = pathlib.Path(source)
        missing = [d for d in ("unet", "vae", "scheduler") if not (src / d).is_dir()]
        if missing:
            raise FileNotFoundError(f"{src}: not a Stable Diffusion pipeline directory (missing {', '.join(missing)})")
        unet = UNet2DConditionModel.from_pretrained(str(src), subfolder="unet", local_files_only=True,
                                                    torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(str(src), subfolder="vae", local_files_only=True, torch_dtype=dtype)
        te = (CLIPTextModel.from_pretrained(str(src), subfolder="text_encoder", local_files_only=True, dtype=dtype)
              if (src / "text_encoder").is_dir() else None)
        sched = scheduler_dict(DDIMScheduler.from_pretrained(str(src), subfolder="scheduler", local_files_only=True))
        origin = f"Stable Diffusion directory {src.resolve().name}"
    else:
        raise TypeError(f"sd must be a pipeline directory or a dict of components, got {type(source).__name__}")
    vae_dtype = torch.float32 if vae.config.get("force_upcast", False) else dtype
    unet = _to(unet, device, dtype)
    vae = _to(vae, device, vae_dtype)
    for m in (unet, vae) + ((te,) if te is not None else ()):
        m.requires_grad_(False)
    if te is not None:
        te = _to(te, device, None)
    return {"unet": unet, "vae": vae, "text_encoder": te, "scheduler_config": sched, "origin": origin}


def _to(module, device, dtype):
    """``module`` on ``device`` (and ``dtype`` when given and different), in eval mode."""
    module = module.to(device=device)
    if dtype is not None and module.dtype != dtype:
        module = module.to(dtype=dtype)
    return module.eval()


# -- graph modules ---------------------------------------------------------------------------

class VlfEncoder(nn.Module):
    """image [B, 3, S, S] in [0, 1] → VLF [B, N, d]: CLIP-normalise, BLIP-2 ViT, Q-Former with
    the learnt query tokens; the Q-Former's last hidden state (float32)."""

    def __init__(self, blip2, mean, std, image_size):
        super().__init__()
        self.vision = blip2.vision_model
        self.qformer = blip2.qformer
        self.query_tokens = blip2.query_tokens
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False)
        self.interpolate = int(image_size) != int(blip2.config.vision_config.image_size)

    def forward(self, image):
        x = (image.float() - self.mean) / self.std
        dt = self.vision.embeddings.patch_embedding.weight.dtype
        e = self.vision(pixel_values=x.to(dt), interpolate_pos_encoding=self.interpolate).last_hidden_state
        q = self.query_tokens.expand(e.shape[0], -1, -1)
        qdt = q.dtype
        out = self.qformer(query_embeds=q, encoder_hidden_states=e.to(qdt),
                           encoder_attention_mask=torch.ones(e.shape[:-1], dtype=torch.long, device=e.device))
        return out.last_hidden_state.float()


class CaptionPrefix(nn.Module):
    """VLF [B, N, d] → soft prompt [B, P, E]: ``pooled`` W_proj(mean_i v_i) (P = 1) or
    ``queries`` W_proj(v_i) for every query (P = N)."""

    def __init__(self, blip2, mode="pooled"):
        super().__init__()
        if mode not in ("pooled", "queries"):
            raise ValueError(f"prefix must be 'pooled' or 'queries', got {mode!r}")
        self.mode = mode
        self.proj = blip2.language_projection

    def forward(self, vlf):
        v = vlf.mean(1, keepdim=True) if self.mode == "pooled" else vlf
        return self.proj(v.to(self.proj.weight.dtype)).float()


class CaptionLM(nn.Module):
    """(prefix [B, P, E], ids [B, T]) → logits [B, T, V] of the decoder-only LM reading
    [prefix, embed_tokens(ids)] (logits[:, t] is the distribution of token t+1)."""

    def __init__(self, blip2):
        super().__init__()
        self.lm = blip2.language_model

    def forward(self, prefix_embeds, input_ids):
        tok = self.lm.get_input_embeddings()(input_ids)
        h = torch.cat([prefix_embeds.to(tok.dtype), tok], 1)
        logits = self.lm(inputs_embeds=h, use_cache=False, return_dict=True).logits
        return logits[:, prefix_embeds.shape[1]:].float()


class ImageCondition(nn.Module):
    """VLF [B, N, d] → U-Net context [B, N, C] (a :class:`VlfTextProjection`)."""

    def __init__(self, proj: VlfTextProjection):
        super().__init__()
        self.proj = proj

    def forward(self, vlf):
        return self.proj(vlf.float()).float()


class UNetEps(nn.Module):
    """(latent, timestep int64 [B], context) → epsilon prediction (float32)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, latent, timestep, context):
        dt = self.unet.conv_in.weight.dtype
        return self.unet(latent.to(dt), timestep, encoder_hidden_states=context.to(dt), return_dict=False)[0].float()


class VaeDecode(nn.Module):
    """diffusion-space latent → RGB in [0, 1]: VAE decode of latent / scaling_factor."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.scale = 1.0 / float(vae.config.scaling_factor)

    def forward(self, latent):
        dt = self.vae.post_quant_conv.weight.dtype if self.vae.post_quant_conv is not None else \
            self.vae.decoder.conv_in.weight.dtype
        x = self.vae.decode((latent.float() * self.scale).to(dt), return_dict=False)[0].float()
        return (x / 2 + 0.5).clamp(0, 1)


# -- export machinery ------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's known-harmless chatter; real errors still raise."""
    names = ("torch.onnx._internal.exporter._registration", "torch.onnx._internal.exporter._core",
             "onnxscript")
    levels = [(lg, lg.level) for lg in map(logging.getLogger, names)]
    for lg, _ in levels:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            yield
    finally:
        for lg, level in levels:
            lg.setLevel(level)


def _onnx_export(module, args, path, input_names, output_names, dynamic=None, opset=DEFAULT_OPSET) -> str:
    """Write ``path``; returns the exporter that produced it ("dynamo" or "torchscript").

    ``dynamic``: {input name: {axis: (symbol, min, max)}}.
    """
    path = str(path)
    err = None
    with torch.no_grad(), _quiet_exporter():
        try:
            shapes = None
            if dynamic:
                shapes = tuple({ax: torch.export.Dim(sym, min=lo, max=hi) for ax, (sym, lo, hi) in dynamic[n].items()}
                               if n in dynamic else None for n in input_names)
            torch.onnx.export(module, tuple(args), path, dynamo=True, external_data=True, opset_version=opset,
                              input_names=list(input_names), output_names=list(output_names),
                              dynamic_shapes=shapes, verbose=False)
            return "dynamo"
        except Exception as e:  # the dynamo exporter raises many types; fall back, report both if both fail
            err = e
            log.warning("dynamo export of %s failed (%s: %s); trying the TorchScript exporter",
                        pathlib.Path(path).stem, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        for f in pathlib.Path(path).parent.glob(pathlib.Path(path).name + "*"):
            f.unlink()
        axes = {n: {ax: sym for ax, (sym, _, _) in d.items()} for n, d in (dynamic or {}).items()}
        try:
            torch.onnx.export(module, tuple(args), path, dynamo=False, opset_version=opset,
                              input_names=list(input_names), output_names=list(output_names),
                              dynamic_axes=axes or None, verbose=False)
        except Exception as e2:
            raise RuntimeError(f"ONNX export of {pathlib.Path(path).stem} failed with both exporters: "
                               f"dynamo: {err}; torchscript: {e2}") from e2
        return "torchscript"


def _ort_session(path, device):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(os.environ.get("SEMCOM_ORT_THREADS", "0") or 0)
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), so, providers=providers)


def _compare(module, path, cases, device) -> dict:
    """Max |ORT − torch| (abs and relative to max |torch|) over ``cases`` (lists of tensors)."""
    sess = _ort_session(path, device)
    names = [i.name for i in sess.get_inputs()]
    worst_abs, worst_rel = 0.0, 0.0
    for args in cases:
        with torch.no_grad():
            ref = module(*[a.to(device) for a in args]).float().cpu().numpy()
        got = sess.run(None, {n: a.cpu().numpy() for n, a in zip(names, args)})[0]
        if got.shape != ref.shape:
            raise RuntimeError(f"{path.name}: ONNX output shape {got.shape} != torch {ref.shape}")
        if not np.all(np.isfinite(got)):
            raise RuntimeError(f"{path.name}: ONNX output is not finite")
        d = float(np.max(np.abs(got - ref)))
        worst_abs = max(worst_abs, d)
        worst_rel = max(worst_rel, d / max(float(np.max(np.abs(ref))), 1e-12))
    return {"ort_max_abs_diff": worst_abs, "ort_max_rel_diff": worst_rel, "check_cases": len(cases),
            "check_providers": sess.get_providers()}


def _spec(name, shape, dtype="float32"):
    return {"name": name, "shape": list(shape), "dtype": dtype}


def _sha(path):
    from ..runtime import sha256_file

    return sha256_file(path)


# -- the export ------------------------------------------------------------------------------

def export_vlf_reference(blip2=None, sd=None, out_dir="models", *, proj=None, prefix: str = "pooled",
                         opset: int = DEFAULT_OPSET, device: str = "cpu", fp16: bool = False,
                         max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, steps: int = DDIM_STEPS,
                         tokenizer=None, image_size=None, models=MODELS, check: bool = True,
                         tolerance=None, seed: int = 0) -> dict:
    """Export the VLF-MSC reference models and register them in ``<out_dir>/manifest.json``.

    ``blip2``: BLIP-2 checkpoint directory or model (needed for vlf_enc, vlf_cap_prefix,
    vlf_cap_lm, and for vlf_img_cond when ``proj`` is not a checkpoint); ``sd``: SD 1.5
    directory or component dict (needed for vlf_img_cond, vlf_unet, vlf_vae_dec); see
    :func:`load_blip2` / :func:`load_sd`. ``proj``: a projection checkpoint path
    (``vlf_reference_proj``), a :class:`VlfTextProjection`, or None (untrained initial map).
    ``prefix``: "pooled" (P = 1, the paper) or "queries" (P = N, BLIP-2's own). ``models``:
    the subset to export. ``fp16``: torch weights in float16 (graph inputs/outputs stay
    float32; meant for the CUDA execution provider; the VAE stays float32 when SD asks for it).
    ``check``: compare ONNX Runtime with torch (CUDA EP when ``device`` is cuda and available)
    and refuse to register above ``tolerance`` (max abs difference relative to max |torch|;
    default 1e-3 float32, 3e-2 float16).

    Returns ``{name: ModelEntry}`` of the registered models.
    """
    from ..runtime import register_model

    models = tuple(models)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    if prefix not in ("pooled", "queries"):
        raise ValueError(f"prefix must be 'pooled' or 'queries', got {prefix!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch sees no CUDA device")
    if steps < 1 or max_new_tokens < 1:
        raise ValueError("steps and max_new_tokens must be >= 1")
    dtype = torch.float16 if fp16 else torch.float32
    dname = "float16" if fp16 else "float32"
    tol = TOLERANCE[dname] if tolerance is None else float(tolerance)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    proj_info = {}
    if isinstance(proj, (str, os.PathLike)):
        proj_path = pathlib.Path(proj)
        proj, _info = load_projection(proj_path)
        proj_info = {"checkpoint": proj_path.name, "checkpoint_sha256": _sha(proj_path),
                     "trained": True, **{k: v for k, v in _info.items() if k == "training"}}
        hist = torch.load(str(proj_path), map_location="cpu", weights_only=False).get("history") or {}
        if hist.get("loss"):
            proj_info["final_loss"] = float(hist["loss"][-1])
            proj_info["steps"] = len(hist["loss"])
    elif isinstance(proj, VlfTextProjection):
        proj_info = {"checkpoint": None, "trained": True}
    elif proj is not None:
        raise TypeError(f"proj must be a checkpoint path, a VlfTextProjection or None, got {type(proj).__name__}")

    need_blip2 = any(m in BLIP2_MODELS for m in models) or ("vlf_img_cond" in models and proj is None)
    need_sd = any(m in SD_MODELS for m in models)
    if need_blip2 and blip2 is None:
        raise ValueError(f"exporting {[m for m in models if m in BLIP2_MODELS] or ['vlf_img_cond']} needs blip2")
    if need_sd and sd is None:
        raise ValueError(f"exporting {[m for m in models if m in SD_MODELS]} needs sd")
    i64 = "int64"
    entries = {}
    timings = {}
    cmd = (f"python -m gnuradio.semcom.train.export_vlf_reference --blip2 <BLIP2_DIR> --sd <SD15_DIR> "
           f"--out <DIR> --prefix {prefix} --opset {opset}" + (" --fp16" if fp16 else ""))

    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".vlf-export-") as tmp:
        tmp = pathlib.Path(tmp)

        def build(name, module, args, inputs, outputs, dynamic=None, cases=(), extra=None, task="",
                  channel_uses=None, training=None):
            t0 = time.monotonic()
            path = tmp / name / f"{name}.onnx"
            path.parent.mkdir()
            module = module.eval()
            exporter = _onnx_export(module, [a.to(device) for a in args], path, [s["name"] for s in inputs],
                                    [s["name"] for s in outputs], dynamic, opset)
            ex = {"tier": "reference", **(extra or {}), "exporter": exporter, "opset": opset, "dtype": dname}
            if check:
                cmp = _compare(module, path, [list(args)] + [list(c) for c in cases], device)
                if not cmp["ort_max_rel_diff"] <= tol:
                    raise RuntimeError(f"{name}: ONNX Runtime differs from torch by {cmp['ort_max_rel_diff']:.2e} "
                                       f"(relative, > {tol:g}); not registered")
                ex.update(cmp)
            entry = {"name": name, "file": f"{name}.onnx", "task": task, "inputs": inputs, "outputs": outputs,
                     "channel_uses": channel_uses, "training": training, "extra": ex}
            entries[name] = register_model(out_dir, entry, path)
            timings[name] = time.monotonic() - t0
            log.info("registered %s (%s exporter, %.1f s)", name, exporter, timings[name])

        # BLIP-2 side: encoder, caption prefix, caption LM ---------------------------------------
        b2 = None
        if need_blip2:
            b2 = load_blip2(blip2, device=device, dtype=dtype, tokenizer=tokenizer, image_size=image_size)
            model, S, N, d = b2["model"], b2["image_size"], b2["n_queries"], b2["dim"]
            E = int(model.config.text_config.hidden_size)
            V = int(model.language_model.get_output_embeddings().weight.shape[0])
            blip_training = {"data": f"BLIP-2 weights from the {b2['origin']} (Salesforce BLIP-2 pretraining; "
                                     "no training here)",
                             "command": cmd,
                             "notes": "inference-only export; see docs/vlf_reference.md"}
            enc = VlfEncoder(model, b2["mean"], b2["std"], S).to(device)
            if "vlf_enc" in models:
                build("vlf_enc", enc, [torch.rand(1, 3, S, S, generator=g)], [_spec("image", [1, 3, S, S])],
                      [_spec("vlf", [1, N, d])], cases=[[torch.rand(1, 3, S, S, generator=g)]],
                      task="vlf-encoder",
                      channel_uses={"formula": "N*d/2", "symbols": {"N": "VLF query tokens (rows)",
                                                                    "d": "VLF feature dimension"}},
                      training=blip_training,
                      extra={"n_queries": N, "dim": d, "image_size": S, "image_mean": b2["mean"],
                             "image_std": b2["std"], "resample": b2["resample"], "input_range": [0, 1],
                             "source": b2["origin"],
                             "graph": "(image - mean)/std -> BLIP-2 ViT -> Q-Former(query tokens) "
                                      "-> last hidden state of the N queries"})
            with torch.no_grad():
                vlf_example = enc(torch.rand(1, 3, S, S, generator=g).to(device)).cpu()
            P = 1 if prefix == "pooled" else N
            if "vlf_cap_prefix" in models:
                build("vlf_cap_prefix", CaptionPrefix(model, prefix).to(device), [vlf_example],
                      [_spec("vlf", [1, N, d])], [_spec("prefix_embeds", [1, P, E])],
                      cases=[[torch.randn(1, N, d, generator=g)]], task="vlf-caption-prefix",
                      training=blip_training,
                      extra={"prefix": prefix, "P": P, "E": E, "source": b2["origin"],
                             "graph": ("e0 = language_projection(mean over the N queries) (the VLF-MSC soft "
                                       "prompt)" if prefix == "pooled" else
                                       "language_projection of every query (BLIP-2's own LM input)")})
            if "vlf_cap_lm" in models:
                tok = b2["tokenizer"]
                if tok is None:
                    raise ValueError("vlf_cap_lm needs a tokenizer (none in the BLIP-2 source)")
                from tokenizers import Tokenizer

                tok = Tokenizer.from_str(tok.to_str())
                tok.no_padding()
                tok.no_truncation()
                tok.save(str(tmp / TOKENIZER_FILE))
                os.replace(tmp / TOKENIZER_FILE, out_dir / TOKENIZER_FILE)
                max_pos = int(getattr(model.config.text_config, "max_position_embeddings", 2048))
                t_max = max_pos - P
                if max_new_tokens + 1 > t_max:
                    raise ValueError(f"max_new_tokens {max_new_tokens} does not fit the LM's {max_pos} positions")
                with torch.no_grad():
                    pref = CaptionPrefix(model, prefix).to(device)(vlf_example.to(device)).cpu()
                bos = b2["bos_id"]
                ids = torch.cat([torch.tensor([[bos]]), torch.randint(0, V, (1, 4), generator=g)], 1)
                build("vlf_cap_lm", CaptionLM(model).to(device), [pref, ids],
                      [_spec("prefix_embeds", [1, P, E]), _spec("input_ids", [1, "T"], i64)],
                      [_spec("logits", [1, "T", V])], dynamic={"input_ids": {1: ("T", 1, t_max)}},
                      cases=[[pref, torch.tensor([[bos]])],
                             [torch.randn(1, P, E, generator=g), torch.randint(0, V, (1, 11), generator=g)]],
                      task="vlf-caption-lm", training=blip_training,
                      extra={"tokenizer": TOKENIZER_FILE, "tokenizer_sha256": _sha(out_dir / TOKENIZER_FILE),
                             "bos_id": bos, "eos_id": b2["eos_id"], "eos_ids": b2["eos_ids"],
                             "max_new_tokens": int(max_new_tokens),
                             "vocab_size": V, "max_input_tokens": t_max, "prefix": prefix, "P": P,
                             "lm": f"{model.config.text_config.model_type} ({model.language_model.__class__.__name__})",
                             "source": b2["origin"],
                             "decoding": "greedy: ids=[bos]; repeat argmax(logits[0, -1]) until eos or "
                                         "max_new_tokens; no KV cache (the full sequence every step)"})
            vlf_dim, n_vlf = d, N
            b2 = model = enc = None  # free BLIP-2 before loading SD
            _free(device)
        else:
            vlf_dim, n_vlf = (proj.vlf_dim if proj is not None else None), _n_queries(blip2) or 32

        # SD side: VLF condition, U-Net, VAE decoder -------------------------------------------
        if need_sd:
            parts = load_sd(sd, device=device, dtype=dtype)
            unet, vae = parts["unet"], parts["vae"]
            sched = parts["scheduler_config"]
            if sched.get("prediction_type", "epsilon") != "epsilon":
                raise ValueError(f"the VLF contract needs an epsilon-prediction U-Net; the scheduler says "
                                 f"{sched.get('prediction_type')!r}")
            C = int(unet.config.cross_attention_dim if not isinstance(unet.config.cross_attention_dim, (list, tuple))
                    else unet.config.cross_attention_dim[0])
            c, h = int(unet.config.in_channels), int(unet.config.sample_size)
            vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
            H = h * vae_factor
            sd_training = {"data": f"Stable Diffusion weights from the {parts['origin']} (no training here)",
                           "command": cmd, "notes": "inference-only export; see docs/vlf_reference.md"}
            L = n_vlf
            if "vlf_img_cond" in models:
                if proj is None:
                    te = parts["text_encoder"]
                    if te is None:
                        raise ValueError("vlf_img_cond without a projection checkpoint needs SD's text_encoder")
                    proj = VlfTextProjection.from_text_encoder(vlf_dim, te, seed=seed)
                    proj_info = {"checkpoint": None, "trained": False,
                                 "note": "UNTRAINED initial map (identity or seeded random linear + CLIP final "
                                         "layer norm); train it with semcom.train.vlf_reference_proj"}
                    log.warning("vlf_img_cond: no --proj checkpoint; exporting the untrained projection")
                if proj.text_dim != C:
                    raise ValueError(f"projection outputs {proj.text_dim} channels, the U-Net's cross-attention "
                                     f"expects {C}")
                if vlf_dim is not None and proj.vlf_dim != vlf_dim:
                    raise ValueError(f"projection expects a VLF of dim {proj.vlf_dim}, BLIP-2 gives {vlf_dim}")
                cond = ImageCondition(proj.float()).to(device)
                build("vlf_img_cond", cond, [torch.randn(1, L, proj.vlf_dim, generator=g)],
                      [_spec("vlf", [1, L, proj.vlf_dim])], [_spec("context", [1, L, C])],
                      cases=[[torch.randn(1, L, proj.vlf_dim, generator=g) * 3]], task="vlf-image-condition",
                      training={"data": "images (VLF-MSC: the diffusion loss with frozen BLIP-2, VAE and U-Net; "
                                        "VLF noise at SNR ~ U[-7.5, 12.5] dB)",
                                "command": "python -m gnuradio.semcom.train.vlf_reference_proj --blip2 <BLIP2_DIR> "
                                           "--sd <SD15_DIR> --images <DIR> --out vlf_proj.pt",
                                "notes": "context = LN_clip(W vlf + b): trainable linear d -> C, frozen copy of "
                                         "the CLIP text encoder's final layer norm; N query tokens -> N context "
                                         "tokens, no text prompt"},
                      extra={"L": L, "C": C, "projection": proj_info,
                             "graph": "context = final_layer_norm_clip(W vlf + b)"})
            if "vlf_unet" in models:
                lat = torch.randn(1, c, h, h, generator=g)
                build("vlf_unet", UNetEps(unet), [lat, torch.tensor([500]), torch.randn(1, L, C, generator=g)],
                      [_spec("latent", [1, c, h, h]), _spec("timestep", [1], i64), _spec("context", [1, L, C])],
                      [_spec("noise_pred", [1, c, h, h])],
                      cases=[[torch.randn(1, c, h, h, generator=g), torch.tensor([1]),
                              torch.randn(1, L, C, generator=g)]],
                      task="vlf-diffusion-unet", training=sd_training,
                      extra={"latent_shape": [c, h, h], "scheduler": sched, "steps": int(steps), "L": L, "C": C,
                             "prediction_type": "epsilon", "source": parts["origin"],
                             "guidance": "none (no classifier-free guidance: the VLF is the only condition)"})
            if "vlf_vae_dec" in models:
                build("vlf_vae_dec", VaeDecode(vae), [torch.randn(1, c, h, h, generator=g)],
                      [_spec("latent", [1, c, h, h])], [_spec("image", [1, 3, H, H])],
                      cases=[[torch.randn(1, c, h, h, generator=g) * 0.5]], task="vlf-vae-decoder",
                      training=sd_training,
                      extra={"latent_shape": [c, h, h], "image_size": H,
                             "scaling_factor": float(vae.config.scaling_factor),
                             "output_range": [0, 1], "source": parts["origin"],
                             "vae_dtype": "float32" if vae.dtype == torch.float32 else dname,
                             "graph": "clamp(VAE.decode(latent / scaling_factor) / 2 + 0.5, 0, 1)"})
    for name, t in timings.items():
        log.info("%s: %.1f s", name, t)
    return entries


def _free(device):
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _n_queries(blip2):
    """N of a BLIP-2 source without loading its weights (config.json), or None."""
    if blip2 is None:
        return None
    if hasattr(blip2, "config"):
        return int(blip2.config.num_query_tokens)
    p = pathlib.Path(blip2) / "config.json"
    if p.is_file():
        return int(json.loads(p.read_text()).get("num_query_tokens", 32))
    return None


# -- command line ----------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gnuradio.semcom.train.export_vlf_reference",
                                 description=__doc__.splitlines()[0],
                                 epilog="See docs/vlf_reference.md.")
    ap.add_argument("--blip2", help="local BLIP-2 (OPT) checkpoint directory, e.g. blip2-opt-2.7b")
    ap.add_argument("--sd", help="local Stable Diffusion 1.5 pipeline directory (diffusers layout)")
    ap.add_argument("--out", required=True, help="models directory: ONNX files + manifest.json")
    ap.add_argument("--proj", default=None, help="VLF -> text-space projection checkpoint (vlf_reference_proj); "
                                                 "default: the untrained initial map")
    ap.add_argument("--prefix", choices=("pooled", "queries"), default="pooled",
                    help="caption soft prompt: pooled = W_proj(mean of the queries), P=1 (the paper); "
                         "queries = all N projected queries (BLIP-2's own)")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the device torch traces and checks on)")
    ap.add_argument("--fp16", action="store_true", help="float16 weights (float32 graph inputs/outputs); "
                                                        "for the CUDA execution provider")
    ap.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    ap.add_argument("--steps", type=int, default=DDIM_STEPS, help="DDIM steps recorded for the runtime")
    ap.add_argument("--image-size", type=int, default=None, help="VLF encoder input size (default: BLIP-2's)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs torch check")
    ap.add_argument("--tolerance", type=float, default=None, help="max relative |ORT - torch| (default 1e-3; "
                                                                  "3e-2 with --fp16)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = MODELS if not args.only else tuple(s.strip() for s in args.only.split(",") if s.strip())
    t0 = time.monotonic()
    entries = export_vlf_reference(args.blip2, args.sd, args.out, proj=args.proj, prefix=args.prefix,
                                   opset=args.opset, device=args.device, fp16=args.fp16,
                                   max_new_tokens=args.max_new_tokens, steps=args.steps,
                                   image_size=args.image_size, models=models, check=not args.no_check,
                                   tolerance=args.tolerance)
    for e in entries.values():
        size = e.size_bytes + sum(x.get("size_bytes", 0) for x in e.external_data)
        diff = e.extra.get("ort_max_rel_diff")
        print(f"{e.name}: {e.file} {size / 1e6:.1f} MB, exporter {e.extra['exporter']}"
              + (f", max rel |ORT - torch| {diff:.1e}" if diff is not None else ""))
    print(f"registered {len(entries)} model(s) in {pathlib.Path(args.out) / 'manifest.json'} "
          f"({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
