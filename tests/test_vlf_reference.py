"""VLF-MSC reference tier (BLIP-2 + OPT + Stable Diffusion 1.5) on tiny random configs.

The same architectures as Salesforce/blip2-opt-2.7b and SD 1.5 (Blip2ForConditionalGeneration
with an OPT LM; UNet2DConditionModel, AutoencoderKL, CLIPTextModel, the SD scheduler config),
built from tiny configs with random weights and saved as local checkpoint directories in the
layouts a user has (nothing is downloaded). The session fixture ``vlf_reference_models``
trains the VLF → text-space projection for 2 steps and exports all six models through the
same function the CLI uses; the tests check the manifest, ONNX Runtime against torch for
every model, greedy decoding, and a numpy DDIM loop with the exported U-Net against
diffusers' DDIMScheduler with the torch U-Net. Random weights check plumbing and numerics,
not caption or image quality.
"""
import json
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("diffusers")
pytest.importorskip("onnxscript")
pytest.importorskip("tokenizers")

SEED = 0
N, D, S = 8, 32, 32          # queries, VLF dim (Q-Former hidden), BLIP-2 image size
E, V = 24, 48                # OPT hidden (≠ D: language_projection is a real map), vocab (> tokenizer's)
C, LAT, LATC = 32, 8, 4      # CLIP text hidden = U-Net cross-attention dim, latent side, latent channels
WORDS = "a an the red green blue small large circle square star left right of above below and".split()
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<eol>"]
BOS, EOS = 2, 4              # OPT: bos = "</s>" (2); BLIP-2 OPT checkpoints stop at "\n" (here <eol>)
# SD 1.5's scheduler/scheduler_config.json (a PNDM config; DDIM reads the same fields)
SD15_SCHEDULER = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
                  "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
                  "clip_sample": False}

torch.set_num_threads(1)


def _tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    return tok


def _blip2_config():
    from transformers import Blip2Config

    return Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                           image_size=S, patch_size=8),
        qformer_config=dict(hidden_size=D, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                            cross_attention_frequency=1, vocab_size=64),
        text_config=dict(model_type="opt", vocab_size=V, hidden_size=E, num_hidden_layers=2, ffn_dim=37,
                         num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=E,
                         bos_token_id=BOS, eos_token_id=EOS, pad_token_id=1),
        num_query_tokens=N)


def _sd_components():
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(SEED + 1)
    unet = UNet2DConditionModel(sample_size=LAT, in_channels=LATC, out_channels=LATC, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=C,
                                attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), latent_channels=LATC,
                        layers_per_block=1, norm_num_groups=32, sample_size=2 * LAT)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=99, hidden_size=C, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=77))
    with torch.no_grad():  # a CLIP-like final norm: uneven per-channel gains and biases
        _final_norm(te).weight.uniform_(0.5, 2.0)
        _final_norm(te).bias.normal_(0, 0.1)
    return unet.eval(), vae.eval(), te.eval(), DDIMScheduler.from_config(SD15_SCHEDULER)


def _images(n=4, size=40):
    rng = np.random.default_rng(SEED)
    out = []
    for _ in range(n):
        img = np.full((size, size, 3), rng.integers(0, 255, 3), np.uint8)
        y0, x0 = rng.integers(0, size // 2, 2)
        img[y0:y0 + size // 3, x0:x0 + size // 3] = rng.integers(0, 255, 3)
        out.append(img)
    return out


def _write_sources(root):
    """BLIP-2 and SD 1.5 checkpoint directories as a user has them (tiny, random)."""
    from transformers import Blip2ForConditionalGeneration, PreTrainedTokenizerFast

    torch.manual_seed(SEED)
    blip2 = Blip2ForConditionalGeneration(_blip2_config()).eval()
    with torch.no_grad():  # the real query tokens are learnt, not zeros
        blip2.query_tokens.normal_(0, 1.0)
    b_dir = root / "blip2-tiny"
    blip2.save_pretrained(b_dir)
    PreTrainedTokenizerFast(tokenizer_object=_tokenizer(), bos_token="</s>", eos_token="<eol>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(b_dir)
    (b_dir / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "BlipImageProcessor", "do_resize": True, "size": {"height": S, "width": S},
         "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
         "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    unet, vae, te, sched = _sd_components()
    sd_dir = root / "sd15-tiny"
    unet.save_pretrained(sd_dir / "unet")
    vae.save_pretrained(sd_dir / "vae")
    te.save_pretrained(sd_dir / "text_encoder")
    (sd_dir / "scheduler").mkdir(parents=True)
    (sd_dir / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER))
    return b_dir, sd_dir


@pytest.fixture(scope="session")
def vlf_reference_models(tmp_path_factory):
    """Tiny BLIP-2/SD sources, a 2-step trained projection, and the exported reference models dir.

    ``{"dir", "blip2_dir", "sd_dir", "proj", "history", "entries", "seconds"}``.
    """
    from gnuradio.semcom.train.export_vlf_reference import export_vlf_reference
    from gnuradio.semcom.train.vlf_reference_proj import save_projection, train_projection

    root = tmp_path_factory.mktemp("vlf_reference")
    t0 = time.monotonic()
    b_dir, sd_dir = _write_sources(root)
    t1 = time.monotonic()
    proj, hist = train_projection(b_dir, sd_dir, _images(), steps=2, batch_size=2, lr=1e-2, device="cpu",
                                  seed=SEED, log=None)
    ckpt = root / "vlf_proj.pt"
    save_projection(proj, ckpt, history=hist, training={"images": "tiny test images", "steps": 2})
    t2 = time.monotonic()
    out = root / "models"
    entries = export_vlf_reference(b_dir, sd_dir, out, proj=ckpt, seed=SEED, max_new_tokens=12)
    t3 = time.monotonic()
    return {"dir": out, "blip2_dir": b_dir, "sd_dir": sd_dir, "proj": ckpt, "history": hist, "entries": entries,
            "seconds": {"sources": t1 - t0, "train": t2 - t1, "export": t3 - t2}}


def _torch_parts(models):
    from gnuradio.semcom.train.export_vlf_reference import load_blip2, load_sd

    return load_blip2(models["blip2_dir"]), load_sd(models["sd_dir"])


# -- manifest ------------------------------------------------------------------------------

def test_manifest_entries(vlf_reference_models):
    from gnuradio.semcom.runtime import load_manifest, load_model, sha256_file
    from gnuradio.semcom.train.export_vlf_reference import MODELS

    out = vlf_reference_models["dir"]
    m = load_manifest(out)
    assert set(m.names) == set(MODELS)
    io = {e.name: ([(t.name, t.shape, t.dtype) for t in e.inputs], [(t.name, t.shape, t.dtype) for t in e.outputs])
          for e in m}
    f32, i64 = "float32", "int64"
    assert io["vlf_enc"] == ([("image", (1, 3, S, S), f32)], [("vlf", (1, N, D), f32)])
    assert io["vlf_cap_prefix"] == ([("vlf", (1, N, D), f32)], [("prefix_embeds", (1, 1, E), f32)])
    assert io["vlf_cap_lm"] == ([("prefix_embeds", (1, 1, E), f32), ("input_ids", (1, "T"), i64)],
                                [("logits", (1, "T", V), f32)])
    assert io["vlf_img_cond"] == ([("vlf", (1, N, D), f32)], [("context", (1, N, C), f32)])
    assert io["vlf_unet"] == ([("latent", (1, LATC, LAT, LAT), f32), ("timestep", (1,), i64),
                               ("context", (1, N, C), f32)], [("noise_pred", (1, LATC, LAT, LAT), f32)])
    assert io["vlf_vae_dec"] == ([("latent", (1, LATC, LAT, LAT), f32)], [("image", (1, 3, 2 * LAT, 2 * LAT), f32)])

    enc = m.entry("vlf_enc")
    assert enc.extra["n_queries"] == N and enc.extra["dim"] == D and enc.extra["image_size"] == S
    assert enc.extra["tier"] == "reference"
    assert enc.channel_uses["formula"] == "N*d/2" and enc.channel_uses_for(N=N, d=D) == N * D // 2
    assert all(m.entry(n).channel_uses is None for n in MODELS if n != "vlf_enc")
    lm = m.entry("vlf_cap_lm").extra
    assert (lm["bos_id"], lm["eos_id"], lm["max_new_tokens"]) == (BOS, EOS, 12)
    assert sha256_file(out / lm["tokenizer"]) == lm["tokenizer_sha256"]
    un = m.entry("vlf_unet").extra
    assert un["latent_shape"] == [LATC, LAT, LAT] and un["steps"] == 50
    sched = un["scheduler"]
    for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type", "clip_sample",
              "set_alpha_to_one", "steps_offset", "timestep_spacing"):
        assert k in sched, k
    assert sched["beta_schedule"] == "scaled_linear" and sched["steps_offset"] == 1
    assert sched["prediction_type"] == "epsilon" and sched["timestep_spacing"] == "leading"
    cond = m.entry("vlf_img_cond").extra["projection"]
    assert cond["trained"] is True and cond["checkpoint"] == "vlf_proj.pt" and cond["steps"] == 2
    assert m.entry("vlf_vae_dec").extra["scaling_factor"] == pytest.approx(0.18215)
    for e in m:
        assert e.training and set(e.training) == {"data", "command", "notes"}
        x = e.extra
        assert x["tier"] == "reference" and x["exporter"] in ("dynamo", "torchscript") and x["dtype"] == f32
        assert x["ort_max_rel_diff"] <= 1e-3, (e.name, x["ort_max_rel_diff"])
        model = load_model(e.name, models_dir=out, providers="CPUExecutionProvider", threads=1)
        assert model.inputs == [t.name for t in e.inputs]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no export leftovers
    print("exporters:", {e.name: e.extra["exporter"] for e in m},
          "times:", {k: round(v, 1) for k, v in vlf_reference_models["seconds"].items()})


# -- ONNX Runtime vs torch -------------------------------------------------------------------

def _run(models, name, **feeds):
    from gnuradio.semcom.runtime import load_model

    m = load_model(name, models_dir=models["dir"], providers="CPUExecutionProvider", threads=1)
    return m.run(feeds)


def test_ort_matches_torch(vlf_reference_models):
    """Every exported model against the torch model loaded back from the source directories."""
    from gnuradio.semcom.train.export_vlf_reference import (CaptionLM, CaptionPrefix, ImageCondition, VaeDecode, VlfEncoder)
    from gnuradio.semcom.train.vlf_reference_proj import load_projection

    models = vlf_reference_models
    b2, sd = _torch_parts(models)
    g = torch.Generator().manual_seed(7)
    image = torch.rand(1, 3, S, S, generator=g)
    vlf_t = VlfEncoder(b2["model"], b2["mean"], b2["std"], b2["image_size"]).eval()
    cases = {}
    with torch.no_grad():
        ref_vlf = vlf_t(image)
        got_vlf = _run(models, "vlf_enc", image=image.numpy())["vlf"]
        cases["vlf_enc"] = (got_vlf, ref_vlf)
        # BLIP-2's own path: the processor-normalised pixels through get_image_features' Q-Former
        mean = torch.tensor(b2["mean"]).reshape(1, 3, 1, 1)
        std = torch.tensor(b2["std"]).reshape(1, 3, 1, 1)
        own = b2["model"].get_image_features(pixel_values=(image - mean) / std).qformer_outputs.last_hidden_state
        cases["vlf_enc (vs Blip2 get_image_features)"] = (got_vlf, own)
        vlf = torch.from_numpy(got_vlf)
        pref_t = CaptionPrefix(b2["model"], "pooled")(vlf)
        cases["vlf_cap_prefix"] = (_run(models, "vlf_cap_prefix", vlf=vlf.numpy())["prefix_embeds"], pref_t)
        lp = b2["model"].language_projection
        cases["vlf_cap_prefix (= W_proj(mean))"] = (cases["vlf_cap_prefix"][0], lp(vlf.mean(1, keepdim=True)))
        lm_t = CaptionLM(b2["model"])
        for t in (1, 5, 20):
            ids = torch.cat([torch.tensor([[BOS]]), torch.randint(5, V, (1, t - 1), generator=g)], 1)
            got = _run(models, "vlf_cap_lm", prefix_embeds=pref_t.numpy(), input_ids=ids.numpy())["logits"]
            assert got.shape == (1, t, V)
            cases[f"vlf_cap_lm T={t}"] = (got, lm_t(pref_t, ids))
        # the LM graph against transformers' OPT fed the same embeddings
        ids = torch.tensor([[BOS, 7, 8, 9]])
        lm = b2["model"].language_model
        full = lm(inputs_embeds=torch.cat([pref_t, lm.get_input_embeddings()(ids)], 1)).logits[:, 1:]
        cases["vlf_cap_lm (vs OPTForCausalLM)"] = (
            _run(models, "vlf_cap_lm", prefix_embeds=pref_t.numpy(), input_ids=ids.numpy())["logits"], full)
        proj, _ = load_projection(models["proj"])
        ctx_t = ImageCondition(proj)(vlf)
        got_ctx = _run(models, "vlf_img_cond", vlf=vlf.numpy())["context"]
        cases["vlf_img_cond"] = (got_ctx, ctx_t)
        lat = torch.randn(1, LATC, LAT, LAT, generator=g)
        for step in (981, 1):
            got = _run(models, "vlf_unet", latent=lat.numpy(), timestep=np.array([step], np.int64),
                       context=got_ctx)["noise_pred"]
            ref = sd["unet"](lat, torch.tensor([step]), encoder_hidden_states=torch.from_numpy(got_ctx)).sample
            cases[f"vlf_unet t={step}"] = (got, ref)
        assert not np.allclose(cases["vlf_unet t=981"][0], cases["vlf_unet t=1"][0])  # the timestep is read
        ref_img = VaeDecode(sd["vae"])(lat)
        got_img = _run(models, "vlf_vae_dec", latent=lat.numpy())["image"]
        cases["vlf_vae_dec"] = (got_img, ref_img)
        direct = sd["vae"].decode(lat / sd["vae"].config.scaling_factor).sample
        cases["vlf_vae_dec (vs AutoencoderKL.decode)"] = (got_img, (direct / 2 + 0.5).clamp(0, 1))
    assert got_img.min() >= 0.0 and got_img.max() <= 1.0
    report = {}
    for name, (got, ref) in cases.items():
        ref = ref.detach().float().numpy()
        assert got.shape == ref.shape, name
        err = float(np.abs(got - ref).max())
        rel = err / float(np.abs(ref).max())
        report[name] = f"{err:.1e} (rel {rel:.1e})"
        assert rel < 1e-4 and err < 1e-3, (name, err, rel)
    print("max |ORT - torch|:", json.dumps(report, indent=1))


def test_greedy_caption_decoding(vlf_reference_models):
    """The runtime's greedy loop (ids=[bos]; argmax(logits[0,-1])) with ORT = the same loop in torch,
    and the saved tokenizer decodes the ids."""
    from tokenizers import Tokenizer

    from gnuradio.semcom.runtime import load_manifest
    from gnuradio.semcom.train.export_vlf_reference import CaptionLM

    models = vlf_reference_models
    extra = load_manifest(models["dir"]).entry("vlf_cap_lm").extra
    b2, _ = _torch_parts(models)
    lm_t = CaptionLM(b2["model"])
    g = torch.Generator().manual_seed(3)
    prefix = torch.randn(1, 1, E, generator=g) * 2
    ids_o, ids_t = [extra["bos_id"]], [extra["bos_id"]]
    for _ in range(extra["max_new_tokens"]):
        lo = _run(models, "vlf_cap_lm", prefix_embeds=prefix.numpy(), input_ids=np.array([ids_o], np.int64))["logits"]
        ids_o.append(int(np.argmax(lo[0, -1])))
        with torch.no_grad():
            ids_t.append(int(lm_t(prefix, torch.tensor([ids_t]))[0, -1].argmax()))
        if ids_o[-1] == extra["eos_id"]:
            break
    assert ids_o == ids_t and len(ids_o) >= 2
    tok = Tokenizer.from_file(str(models["dir"] / extra["tokenizer"]))
    text = tok.decode([i for i in ids_o[1:] if i < tok.get_vocab_size()], skip_special_tokens=True)
    assert isinstance(text, str)
    assert tok.encode("the red circle").ids == [SPECIALS.__len__() + WORDS.index(w) for w in ("the", "red", "circle")]


# -- DDIM: numpy loop with the exported U-Net vs diffusers with the torch U-Net ---------------

def ddim_numpy(eps_fn, latent, cfg, steps):
    """Deterministic DDIM (eta = 0) from a diffusers DDIMScheduler config dict, in numpy."""
    T = int(cfg["num_train_timesteps"])
    b0, b1, kind = float(cfg["beta_start"]), float(cfg["beta_end"]), cfg["beta_schedule"]
    if kind == "linear":
        betas = np.linspace(b0, b1, T, dtype=np.float32)
    elif kind == "scaled_linear":
        betas = np.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=np.float32) ** 2
    else:
        raise ValueError(kind)
    ac = np.cumprod(1.0 - betas.astype(np.float64)).astype(np.float32)
    final = np.float32(1.0) if cfg["set_alpha_to_one"] else ac[0]
    spacing, offset = cfg["timestep_spacing"], int(cfg["steps_offset"])
    if spacing == "leading":
        ts = (np.arange(steps) * (T // steps)).round()[::-1].astype(np.int64) + offset
    elif spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1
    else:
        ts = np.linspace(0, T - 1, steps).round()[::-1].astype(np.int64)
    x = latent.astype(np.float32)
    for t in ts:
        eps = eps_fn(x, int(t))
        prev = int(t) - T // steps
        a, a_prev = ac[t], (ac[prev] if prev >= 0 else final)
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        if cfg.get("clip_sample"):
            r = float(cfg.get("clip_sample_range", 1.0))
            x0 = np.clip(x0, -r, r)
        x = (np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps).astype(np.float32)
    return x, ts


def test_ddim_loop_matches_diffusers(vlf_reference_models):
    from diffusers import DDIMScheduler

    from gnuradio.semcom.runtime import load_model

    models = vlf_reference_models
    unet_o = load_model("vlf_unet", models_dir=models["dir"], providers="CPUExecutionProvider", threads=1)
    extra = unet_o.entry.extra
    cfg, steps = extra["scheduler"], 10   # the runtime uses extra["steps"] = 50; 10 keeps the test short
    _, sd = _torch_parts(models)
    g = torch.Generator().manual_seed(11)
    ctx = torch.randn(1, N, C, generator=g)
    lat = torch.randn(1, *extra["latent_shape"], generator=g)

    def eps_onnx(x, t):
        return unet_o.run({"latent": x, "timestep": np.array([t], np.int64), "context": ctx.numpy()})["noise_pred"]

    got, ts = ddim_numpy(eps_onnx, lat.numpy(), cfg, steps)
    sched = DDIMScheduler.from_config(cfg)
    sched.set_timesteps(steps)
    np.testing.assert_array_equal(ts, sched.timesteps.numpy())
    x = lat.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            eps = sd["unet"](x, t, encoder_hidden_states=ctx).sample
            x = sched.step(eps, t, x, eta=0.0).prev_sample
    ref = x.numpy()
    err = float(np.abs(got - ref).max())
    print(f"DDIM {steps} steps: max |numpy+ORT - diffusers+torch| = {err:.1e} (max |x| {np.abs(ref).max():.2f})")
    assert err < 1e-3 * max(1.0, float(np.abs(ref).max()))
    # and the scheduler of the SD pipeline: 50 leading steps 981 … 1
    sched.set_timesteps(extra["steps"])
    assert sched.timesteps[0] == 981 and sched.timesteps[-1] == 1


# -- projection training and the noise model ------------------------------------------------

def test_projection_training_step(vlf_reference_models):
    from gnuradio.semcom.train.export_vlf_reference import load_sd
    from gnuradio.semcom.train.vlf_reference_proj import VlfTextProjection, load_projection

    hist = vlf_reference_models["history"]
    assert len(hist["loss"]) == 2 and all(np.isfinite(hist["loss"])) and hist["snr_db"] == [-7.5, 12.5]
    proj, info = load_projection(vlf_reference_models["proj"])
    te = load_sd(vlf_reference_models["sd_dir"])["text_encoder"]
    init = VlfTextProjection.from_text_encoder(D, te, seed=SEED)
    assert not torch.allclose(proj.proj.weight, init.proj.weight)           # the linear map was trained
    torch.testing.assert_close(proj.norm.weight, _final_norm(te).weight)  # the CLIP norm frozen
    torch.testing.assert_close(proj.norm.bias, _final_norm(te).bias)
    torch.testing.assert_close(init.proj.weight, torch.eye(D, C))            # d == C: starts as the identity
    assert info["training"]["steps"] == 2


def test_vlf_channel_noise_model():
    """ỹ = (v + √P n)/(1+σ²), n ~ N(0, σ²/2) per real dimension, P = 2·mean(v²)."""
    from gnuradio.semcom.train.vlf_reference_proj import vlf_channel_noise

    g = torch.Generator().manual_seed(5)
    v = torch.randn(2, 32, 768, generator=g) * torch.tensor([0.5, 3.0]).reshape(2, 1, 1)
    snr = torch.tensor([0.0, 10.0])
    y = vlf_channel_noise(v, snr, generator=g)
    sigma2 = 10 ** (-snr / 10)
    p = 2 * v.pow(2).mean((1, 2))
    n = (y * (1 + sigma2).reshape(2, 1, 1) - v)             # = √P n
    var = n.pow(2).mean((1, 2))
    np.testing.assert_allclose(var.numpy(), (p * sigma2 / 2).numpy(), rtol=0.02)
    y0 = vlf_channel_noise(v, 200.0)                        # no noise left: only the shrink 1/(1+σ²) ≈ 1
    torch.testing.assert_close(y0, v, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        vlf_channel_noise(v, torch.tensor([1.0, 2.0, 3.0]))


# -- command line: the BLIP-2 prefix mode of BLIP-2 itself -----------------------------------

def test_cli_queries_prefix(vlf_reference_models, tmp_path):
    from gnuradio.semcom.runtime import load_manifest
    from gnuradio.semcom.train.export_vlf_reference import CaptionPrefix, main

    models = vlf_reference_models
    out = tmp_path / "queries"
    assert main(["--blip2", str(models["blip2_dir"]), "--out", str(out), "--prefix", "queries",
                 "--only", "vlf_cap_prefix,vlf_cap_lm"]) == 0
    m = load_manifest(out)
    assert set(m.names) == {"vlf_cap_prefix", "vlf_cap_lm"}
    assert m.entry("vlf_cap_prefix").outputs[0].shape == (1, N, E)
    assert m.entry("vlf_cap_lm").inputs[0].shape == (1, N, E) and m.entry("vlf_cap_lm").extra["prefix"] == "queries"
    b2, _ = _torch_parts(models)
    vlf = torch.randn(1, N, D, generator=torch.Generator().manual_seed(1))
    got = _run({"dir": out}, "vlf_cap_prefix", vlf=vlf.numpy())["prefix_embeds"]
    with torch.no_grad():
        ref = b2["model"].language_projection(vlf).numpy()     # BLIP-2's own soft prompt: every query
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        assert np.allclose(CaptionPrefix(b2["model"], "queries")(vlf).numpy(), ref)


def _final_norm(text_encoder):
    return getattr(text_encoder, "text_model", text_encoder).final_layer_norm


def test_full_path_onnx_only(vlf_reference_models):
    """Image → VLF → analog link (numpy, the spec's noise model) → caption ids and image, with
    ONNX Runtime and numpy only, as the runtime codec will run it."""
    from gnuradio.semcom.runtime import load_model

    d = vlf_reference_models["dir"]
    get = {n: load_model(n, models_dir=d, providers="CPUExecutionProvider", threads=1)
           for n in ("vlf_enc", "vlf_cap_prefix", "vlf_cap_lm", "vlf_img_cond", "vlf_unet", "vlf_vae_dec")}
    rng = np.random.default_rng(0)
    img = _images(1, S)[0].astype(np.float32).transpose(2, 0, 1)[None] / 255
    v = get["vlf_enc"].run({"image": img})["vlf"][0]
    assert get["vlf_enc"].entry.channel_uses_for(N=v.shape[0], d=v.shape[1]) == N * D // 2
    s = v.reshape(-1, 2) @ np.array([1, 1j])                 # pairs -> complex symbols
    scale = np.sqrt(np.mean(np.abs(s) ** 2))
    snr_db = 5.0
    sigma2 = 10 ** (-snr_db / 10)
    y = s / scale + np.sqrt(sigma2 / 2) * (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape))
    y = y * scale / (1 + sigma2)
    vt = np.stack([y.real, y.imag], -1).reshape(1, N, D).astype(np.float32)
    pre = get["vlf_cap_prefix"].run({"vlf": vt})["prefix_embeds"]
    ex = get["vlf_cap_lm"].entry.extra
    ids = [ex["bos_id"]]
    for _ in range(ex["max_new_tokens"]):
        ids.append(int(np.argmax(get["vlf_cap_lm"].run({"prefix_embeds": pre, "input_ids": np.array([ids])})
                                 ["logits"][0, -1])))
        if ids[-1] == ex["eos_id"]:
            break
    assert 2 <= len(ids) <= ex["max_new_tokens"] + 1
    ctx = get["vlf_img_cond"].run({"vlf": vt})["context"]
    ue = get["vlf_unet"].entry.extra
    lat = rng.standard_normal((1, *ue["latent_shape"])).astype(np.float32)
    lat, _ = ddim_numpy(lambda x, t: get["vlf_unet"].run({"latent": x, "timestep": np.array([t], np.int64),
                                                          "context": ctx})["noise_pred"], lat, ue["scheduler"], 4)
    out = get["vlf_vae_dec"].run({"latent": lat})["image"]
    assert out.shape == (1, 3, 2 * LAT, 2 * LAT) and np.all(np.isfinite(out)) and 0 <= out.min() <= out.max() <= 1


def test_fp16_export_and_training_cli(vlf_reference_models, tmp_path):
    """--fp16 keeps float32 graph inputs/outputs; the training command line on an image folder."""
    from PIL import Image

    from gnuradio.semcom.runtime import load_manifest
    from gnuradio.semcom.train.export_vlf_reference import export_vlf_reference
    from gnuradio.semcom.train.vlf_reference_proj import load_projection
    from gnuradio.semcom.train.vlf_reference_proj import main as train_main

    models = vlf_reference_models
    out = tmp_path / "fp16"
    export_vlf_reference(models["blip2_dir"], models["sd_dir"], out, proj=models["proj"], fp16=True,
                         models=("vlf_cap_prefix", "vlf_img_cond"))
    m = load_manifest(out)
    for e in m:
        assert e.extra["dtype"] == "float16" and e.extra["ort_max_rel_diff"] <= 3e-2
        assert all(t.dtype == "float32" for t in e.inputs + e.outputs)
    vlf = np.random.default_rng(2).standard_normal((1, N, D)).astype(np.float32)
    ref = _run(models, "vlf_img_cond", vlf=vlf)["context"]
    got = _run({"dir": out}, "vlf_img_cond", vlf=vlf)["context"]   # the projection itself stays float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(_images(3, 48)):
        Image.fromarray(img[:, :40]).save(folder / f"{i}.png")          # not square: centre-cropped
    ckpt = tmp_path / "p.pt"
    assert train_main(["--blip2", str(models["blip2_dir"]), "--sd", str(models["sd_dir"]), "--images", str(folder),
                       "--steps", "1", "--batch-size", "2", "--out", str(ckpt), "--device", "cpu"]) == 0
    proj, info = load_projection(ckpt)
    assert proj.vlf_dim == D and proj.text_dim == C and len(info["history"]["loss"]) == 1


def test_torchscript_fallback(vlf_reference_models, tmp_path, monkeypatch):
    """When the dynamo exporter fails, the TorchScript exporter writes the graph (dynamic T kept)."""
    from gnuradio.semcom.runtime import load_manifest
    from gnuradio.semcom.train.export_vlf_reference import export_vlf_reference

    real = torch.onnx.export

    def no_dynamo(*args, **kwargs):
        if kwargs.get("dynamo"):
            raise RuntimeError("dynamo export unavailable (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    out = tmp_path / "ts"
    export_vlf_reference(vlf_reference_models["blip2_dir"], None, out, models=("vlf_cap_prefix", "vlf_cap_lm"))
    m = load_manifest(out)
    lm = m.entry("vlf_cap_lm")
    assert lm.extra["exporter"] == "torchscript" and lm.extra["ort_max_rel_diff"] < 1e-4
    assert lm.inputs[1].shape == (1, "T") and lm.extra["check_cases"] == 3
    ids = np.array([[BOS, 7, 8]], np.int64)
    a = _run({"dir": out}, "vlf_cap_lm", prefix_embeds=np.ones((1, 1, E), np.float32), input_ids=ids)["logits"]
    b = _run(vlf_reference_models, "vlf_cap_lm", prefix_embeds=np.ones((1, 1, E), np.float32), input_ids=ids)["logits"]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_runtime_codec_runs_the_reference_backend(vlf_reference_models):
    """The runtime VLF codec (ONNX Runtime + numpy) over the exported reference directory:
    encode → AWGN at 5 dB → caption and image, through the same code as the embedded tier."""
    vlf = pytest.importorskip("gnuradio.semcom.codecs.vlf")
    from gnuradio.semcom.codecs.base import Csi

    codec = vlf.VlfCodec(vlf_reference_models["dir"], providers="CPUExecutionProvider", threads=1, steps=3,
                         check_features=False)
    assert codec.tier == "reference" and codec.n_symbols == N * D // 2
    img = _images(1, 48)[0]
    enc = codec.encode(img)
    assert enc.symbols.size == N * D // 2
    rng = np.random.default_rng(1)
    sigma2 = 10 ** (-5.0 / 10)
    y = enc.symbols + np.sqrt(sigma2 / 2) * (rng.standard_normal(enc.symbols.size)
                                             + 1j * rng.standard_normal(enc.symbols.size))
    csi = Csi(5.0, sigma2)
    text = codec.decode_caption(y.astype(np.complex64), enc.side_info, csi)
    assert isinstance(text, str) and codec.last_status in vlf.DECODED
    out = codec.decode_image(y.astype(np.complex64), enc.side_info, csi)
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8


def test_reference_tier_through_gnu_radio(vlf_reference_models):
    """The exported reference backend (tiny BLIP-2 + OPT + SD) behind the same blocks: image source
    → vlf_encoder → OFDM TX → AWGN → OFDM RX → caption and image decoders, `reference:PATH`."""
    from gnuradio.semcom.blocks.vlf_link import VlfLinkConfig, run_vlf_link

    d = vlf_reference_models["dir"]
    cfg = VlfLinkConfig(images="scenes:test:2", size=64, backend=f"reference:{d}", snr_db=10.0, profile="wide256",
                        steps=2)
    res = run_vlf_link(cfg, timeout_s=300)
    rows = res["rows"]
    assert [r["caption_status"] for r in rows] == ["ok", "ok"] and [r["image_status"] for r in rows] == ["ok", "ok"]
    assert all(isinstance(r["caption"], str) and r["image"].shape == (64, 64, 3) for r in rows)
    from gnuradio.semcom.runtime import load_manifest

    extra = load_manifest(d).entry("vlf_enc").extra
    n = extra["n_queries"] * extra["dim"] // 2
    assert all(r["n_symbols"] == n for r in rows)
