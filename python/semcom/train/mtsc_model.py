"""The LAM multi-task semantic codec in torch (training and ONNX export only).

Ni et al., *Multi-Task Semantic Communications via Large Models*, Fig. 1:

- modality encoders + input projections: a CNN for the image (16 patch tokens), a 1-D CNN over
  the log-mel spectrogram for the audio (16 tokens), a frame CNN for the video (one token per
  frame), the LAM's own word embeddings for the question;
- the **LAM**: a ``transformers`` ``BartForConditionalGeneration`` (embedded tier: a small
  config pre-trained here; reference tier: BART-base from a local path). Its encoder fuses the
  modalities into one semantic sequence (a modality embedding tells them apart);
- the **JSC encoder**: one linear map per token to ``r_max`` complex symbols, ordered so that
  any prefix of ``r`` symbols is a coarser description of the token (it is trained with random
  prefixes), which is what lets the variable-rate coder pick a rate per token after the fact;
- the **JSC decoder**: the received prefix of each token (zeros past it), its mask, the log noise
  variance per symbol and the SNR → one token; a transformer layer lets tokens repair each other;
- the **LAM decoder** + task decoders: the BART decoder generates the VQA answer and the three
  captions from a task token (the LM head is the text task's output projection); for the
  reconstruction it runs on the task token and 16 learned queries, one per image patch; each
  query's output is added to that patch token's own received memory (the direct path a
  DeepJSCC decoder has) and an up-sampling CNN turns the 4x4 grid into the image.

``fuse=False`` builds the U-DeepSC-like baseline (SemCom without a LAM): the same encoders, but
each modality encoded on its own (no cross-modal attention), trained from scratch.

Token importance (for the variable-rate coder): the attention each token receives in the LAM
encoder's last layer, averaged over heads and over the valid query tokens.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from ..codecs.mtsc_inputs import MODALITIES, N_MELS, PAD, Layout

__all__ = ["MtscConfig", "MtscModel", "apply_channel", "load_lam"]


@dataclass
class MtscConfig:
    vocab_size: int = 128
    d_model: int = 128
    encoder_layers: int = 2
    decoder_layers: int = 2
    heads: int = 4
    ffn: int = 384
    r_max: int = 16               # complex symbols per token at the full rate
    image_size: int = 64
    video_frames: int = 8
    video_size: int = 32
    audio_frames: int = 64
    max_target: int = 24          # decoder positions of a text task (task token + words + </s>)
    rec_queries: int = 16
    fuse: bool = True             # False: the U-DeepSC-like baseline (per-modality encoding)
    layout: dict = None
    lam_config: dict = None       # the LAM's BartConfig (reference tier: BART-base's); None: built from the fields above
    lam_path: str = ""            # provenance: where the reference LAM's weights were loaded from

    def __post_init__(self):
        if self.layout is None:
            self.layout = Layout().to_dict()

    @property
    def lay(self) -> Layout:
        return Layout(**self.layout)

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(ci, co, s=2):
    return nn.Sequential(nn.Conv2d(ci, co, 3, s, 1), nn.GroupNorm(8, co), nn.GELU())


class MtscModel(nn.Module):
    def __init__(self, cfg: MtscConfig, bart=None):
        super().__init__()
        from transformers import BartConfig, BartForConditionalGeneration

        self.cfg = cfg
        d, lay = cfg.d_model, cfg.lay
        if bart is None and cfg.lam_config:
            bc = BartConfig(**cfg.lam_config)
            bc._attn_implementation = "eager"
            bart = BartForConditionalGeneration(bc)
        if bart is None:
            bc = BartConfig(vocab_size=cfg.vocab_size, d_model=d, encoder_layers=cfg.encoder_layers,
                            decoder_layers=cfg.decoder_layers, encoder_attention_heads=cfg.heads,
                            decoder_attention_heads=cfg.heads, encoder_ffn_dim=cfg.ffn, decoder_ffn_dim=cfg.ffn,
                            max_position_embeddings=max(lay.length, cfg.max_target + cfg.rec_queries) + 2,
                            pad_token_id=PAD, bos_token_id=0, eos_token_id=2, decoder_start_token_id=0,
                            forced_eos_token_id=None, dropout=0.0, attention_dropout=0.0, scale_embedding=True)
            bc._attn_implementation = "eager"
            bart = BartForConditionalGeneration(bc)
        self.lam = bart
        d_lam = bart.config.d_model
        if d_lam != d:
            raise ValueError(f"the LAM's d_model is {d_lam}, the config says {d}")
        # modality encoders + input projections
        g = cfg.image_size // 16
        self.image_enc = nn.Sequential(_conv(3, 32), _conv(32, 64), _conv(64, 96), _conv(96, d))
        if g * g != lay.image:
            raise ValueError(f"image size {cfg.image_size} gives {g * g} patch tokens, the layout has {lay.image}")
        self.frame_enc = nn.Sequential(_conv(3, 32), _conv(32, 64), _conv(64, 64))
        self.frame_proj = nn.Linear(64 * (cfg.video_size // 8) ** 2, d)
        self.audio_enc = nn.Sequential(nn.Conv1d(N_MELS, d, 5, 2, 2), nn.GELU(), nn.Conv1d(d, d, 3, 2, 1), nn.GELU())
        if cfg.audio_frames // 4 != lay.audio:
            raise ValueError("audio frames / 4 must equal the layout's audio tokens")
        self.in_proj = nn.ModuleDict({m: nn.Linear(d, d) for m in MODALITIES})
        self.modality_emb = nn.Embedding(len(MODALITIES), d)
        self.register_buffer("modality_ids", torch.as_tensor(lay.modality_ids()), persistent=False)
        # JSC encoder / decoder
        r = cfg.r_max
        self.jsc_enc = nn.Linear(d, 2 * r)
        self.jsc_in = nn.Sequential(nn.Linear(4 * r + 1, 256), nn.GELU(), nn.Linear(256, d))
        self.jsc_pos = nn.Embedding(lay.length, d)
        self.jsc_mix = nn.TransformerEncoderLayer(d, cfg.heads, cfg.ffn, dropout=0.0, batch_first=True, norm_first=True)
        self.jsc_out = nn.LayerNorm(d)
        # reconstruction task decoder: the image tokens' own memory (a DeepJSCC-style direct
        # path) plus what the LAM decoder's queries gather from the whole sequence, on the 4x4
        # patch grid, up-sampled by a CNN
        if cfg.rec_queries != lay.image:
            raise ValueError(f"rec_queries ({cfg.rec_queries}) must equal the layout's image tokens ({lay.image})")
        self.rec_queries = nn.Parameter(torch.randn(cfg.rec_queries, d))
        self.rec_in = nn.Linear(d, d)
        self._q = g

        def up(ci, co):  # normalised: an un-normalised stack drifts into a saturated sigmoid
            return [nn.ConvTranspose2d(ci, co, 4, 2, 1), nn.GroupNorm(8, co), nn.GELU(),
                    nn.Conv2d(co, co, 3, 1, 1), nn.GroupNorm(8, co), nn.GELU()]

        self.rec_head = nn.Sequential(*up(d, 128), *up(128, 96), *up(96, 64), *up(64, 32), nn.Conv2d(32, 3, 3, 1, 1))

    # ------------------------------------------------------------------ transmitter
    def tokens(self, image, q_ids, mel, video):
        """Modality encoders + input projections → (B, L, d) before the LAM encoder."""
        B = image.shape[0]
        d = self.cfg.d_model
        img = self.image_enc(image * 2 - 1).flatten(2).transpose(1, 2)              # B,16,d
        que = self.lam.model.shared(q_ids)                                          # B,Lq,d
        aud = self.audio_enc((mel + 3.0) / 3.0).transpose(1, 2)                      # B,16,d
        T = video.shape[1]
        fr = self.frame_enc(video.reshape(B * T, *video.shape[2:]) * 2 - 1).flatten(1)
        vid = self.frame_proj(fr).reshape(B, T, d)
        parts = [self.in_proj[m](x) for m, x in zip(MODALITIES, (img, que, aud, vid))]
        return torch.cat(parts, 1) + self.modality_emb(self.modality_ids)[None]

    def valid_mask(self, q_mask):
        B = q_mask.shape[0]
        lay = self.cfg.lay
        ones = q_mask.new_ones
        return torch.cat([ones(B, lay.image), q_mask, ones(B, lay.audio), ones(B, lay.video)], 1)

    def lam_encode(self, image, q_ids, q_mask, mel, video, attentions=False):
        """→ (H (B, L, d), valid (B, L), importance (B, L) or None)."""
        x = self.tokens(image, q_ids, mel, video)
        valid = self.valid_mask(q_mask)
        enc = self.lam.model.encoder
        if self.cfg.fuse:
            out = enc(inputs_embeds=x, attention_mask=valid, output_attentions=attentions)
            h = out.last_hidden_state
            imp = None
            if attentions:
                a = out.attentions[-1].mean(1)                                      # B,L(query),L(key)
                imp = (a * valid[:, :, None]).sum(1) / valid.sum(1, keepdim=True)
                imp = imp * valid
            return h, valid, imp
        hs, imps = [], []
        for sl in self.cfg.lay.spans().values():
            out = enc(inputs_embeds=x[:, sl], attention_mask=valid[:, sl], output_attentions=attentions)
            hs.append(out.last_hidden_state)
            if attentions:
                a = out.attentions[-1].mean(1)
                v = valid[:, sl]
                imps.append((a * v[:, :, None]).sum(1) / v.sum(1, keepdim=True).clamp_min(1) * v)
        return torch.cat(hs, 1), valid, (torch.cat(imps, 1) if attentions else None)

    def jsc_encode(self, h):
        """(B, L, d) → (B, L, 2·r_max) reals: [re(r_max), im(r_max)] per token."""
        return self.jsc_enc(h)

    # ------------------------------------------------------------------ receiver
    def jsc_decode(self, y, sym_mask, log_nv, snr_db):
        """y (B, L, 2·r_max) received reals (zeros where not sent), sym_mask (B, L, r_max),
        log_nv (B, L, r_max) log10 noise variance per symbol, snr_db (B,) → memory (B, L, d)."""
        B, L, _ = y.shape
        s = (snr_db.reshape(B, 1, 1) / 10.0).expand(B, L, 1)
        x = self.jsc_in(torch.cat([y, sym_mask, log_nv * sym_mask / 2.0, s], -1))
        x = x + self.jsc_pos.weight[None, :L]
        return self.jsc_out(x + self.jsc_mix(x))

    def memory_mask(self, sym_mask):
        """A token the receiver got no symbol of is masked out of the decoder's cross-attention."""
        return (sym_mask.sum(-1) > 0).to(sym_mask.dtype)

    def text_logits(self, memory, mem_mask, dec_ids):
        out = self.lam.model.decoder(input_ids=dec_ids, encoder_hidden_states=memory,
                                     encoder_attention_mask=mem_mask)
        return self.lam.lm_head(out.last_hidden_state) + self.lam.final_logits_bias

    def reconstruct(self, memory, mem_mask, rec_task_id: int):
        B = memory.shape[0]
        tok = self.lam.model.shared(torch.full((B, 1), rec_task_id, dtype=torch.long, device=memory.device))
        emb = torch.cat([tok, self.rec_queries[None].expand(B, -1, -1)], 1)
        out = self.lam.model.decoder(inputs_embeds=emb, encoder_hidden_states=memory,
                                     encoder_attention_mask=mem_mask).last_hidden_state[:, 1:]
        own = memory[:, self.cfg.lay.spans()["image"]]
        g = (self.rec_in(own) + out).transpose(1, 2).reshape(B, -1, self._q, self._q)
        return torch.sigmoid(self.rec_head(g))


def load_lam(path, tokens):
    """The reference-tier LAM: ``BartForConditionalGeneration`` from a local directory (e.g.
    facebook/bart-base as ``save_pretrained`` wrote it; nothing is downloaded), its token
    embeddings replaced by one per word of ``tokens`` (the benchmark's vocabulary). With the
    BART tokenizer in the same directory, a word's embedding starts as the mean of its BPE
    pieces' embeddings (" word"), the specials take BART's own (<s>, <pad>, </s>, <unk> are its
    ids 0-3 too), the task tokens the mean embedding; without one they start at random.
    Returns (model, its config as a dict, "tokenizer" or "random" for how words started)."""
    from transformers import BartForConditionalGeneration

    bart = BartForConditionalGeneration.from_pretrained(str(path), local_files_only=True, attn_implementation="eager")
    old = bart.get_input_embeddings().weight.detach().clone()
    how = "random"
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError):
        tok = None
    bart.resize_token_embeddings(len(tokens))
    emb = bart.get_input_embeddings().weight
    with torch.no_grad():
        if tok is not None:
            how = "tokenizer"
            mean = old.mean(0)
            for i, t in enumerate(tokens):
                if i < 4:
                    emb[i] = old[i]
                elif t.startswith("<"):
                    emb[i] = mean
                else:
                    ids = tok(" " + t, add_special_tokens=False)["input_ids"]
                    emb[i] = old[ids].mean(0) if ids else mean
        else:
            emb.normal_(0.0, float(old.std()))
    bart.config.vocab_size = len(tokens)
    return bart, bart.config.to_dict(), how


def apply_channel(z, rates, snr_db, k_factor=None, generator=None):
    """Training channel: z (B, L, 2·r) JSC output, rates (B, L) symbols kept per token,
    snr_db (B,), k_factor (B,) Rician K per item (None: AWGN) → (y, sym_mask, log_nv):
    the kept symbols scaled to unit mean power per item, each through its own Rician gain
    (block fading per symbol, equalised by the receiver: noise variance σ²/|h|²) and AWGN, then
    shrunk by the LMMSE factor 1/(1+σ²ₖ), as ``codecs.mtsc`` does at the receiver."""
    B, L, two_r = z.shape
    r = two_r // 2
    idx = torch.arange(r, device=z.device)
    mask = (idx[None, None] < rates[..., None]).to(z.dtype)                           # B,L,r
    re, im = z[..., :r] * mask, z[..., r:] * mask
    p = ((re ** 2 + im ** 2).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)).clamp_min(1e-8)
    sc = p.rsqrt().reshape(B, 1, 1)
    re, im = re * sc, im * sc
    nv = (10.0 ** (-snr_db / 10.0)).reshape(B, 1, 1).expand(B, L, r)
    if k_factor is not None:
        K = k_factor.reshape(B, 1, 1)
        los = torch.sqrt(K / (K + 1))
        sig = torch.sqrt(1 / (2 * (K + 1)))
        hr = los + sig * torch.randn(B, L, r, generator=generator, device=z.device)
        hi = sig * torch.randn(B, L, r, generator=generator, device=z.device)
        nv = nv / (hr ** 2 + hi ** 2).clamp_min(1e-4)
    std = torch.sqrt(nv / 2)
    shrink = 1.0 / (1.0 + nv)
    yr = (re + std * torch.randn(B, L, r, generator=generator, device=z.device)) * shrink * mask
    yi = (im + std * torch.randn(B, L, r, generator=generator, device=z.device)) * shrink * mask
    return torch.cat([yr, yi], -1), mask, torch.log10(nv) * mask
