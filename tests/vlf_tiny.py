"""A tiny random VLF backend (the six models of the VLF ONNX contract) for codec and block tests.

Random weights: the outputs mean nothing, but every model has the contract's names, shapes
and dtypes, so the runtime codec, the blocks and the flowgraphs run end to end in seconds.
"""
import json
import pathlib

N, D, S, E, C, V = 4, 8, 32, 16, 12, 11
WORDS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "a", "red", "blue", "circle", "square", "left", "of"]
SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
             "timestep_spacing": "leading"}


def build(models_dir, seed=0):
    """Export the tiny backend into ``models_dir`` (manifest included); returns the directory."""
    import torch
    from torch import nn

    from gnuradio.semcom.runtime import register_model

    torch.manual_seed(seed)
    out = pathlib.Path(models_dir)
    out.mkdir(parents=True, exist_ok=True)

    class Enc(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 8, stride=8)
            self.lin = nn.Linear(8 * (S // 8) ** 2, N * D)

        def forward(self, image):
            return self.lin(self.conv(image).flatten(1)).reshape(-1, N, D)

    class Prefix(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(D, E)

        def forward(self, vlf):
            return self.lin(vlf.mean(dim=1, keepdim=True))

    class Lm(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, E)
            self.gru = nn.GRU(E, E, batch_first=True)
            self.head = nn.Linear(E, V)

        def forward(self, prefix_embeds, input_ids):
            x = torch.cat([prefix_embeds, self.emb(input_ids)], dim=1)
            h, _ = self.gru(x)
            return self.head(h[:, prefix_embeds.shape[1]:])

    class Cond(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(D, C)

        def forward(self, vlf):
            return self.lin(vlf)

    class Unet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.ctx = nn.Linear(C, 4)

        def forward(self, latent, timestep, context):
            t = timestep.to(torch.float32).reshape(-1, 1, 1, 1) / 1000.0
            return self.conv(latent) * 0.1 + torch.tanh(self.ctx(context.mean(dim=1)))[:, :, None, None] * t

    class VaeDec(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 3, 3, padding=1)

        def forward(self, latent):
            return torch.sigmoid(nn.functional.interpolate(self.conv(latent), scale_factor=4.0))

    vlf = torch.randn(1, N, D)
    pre = torch.randn(1, 1, E)
    specs = [
        ("vlf_enc", Enc(), (torch.rand(1, 3, S, S),), ["image"], ["vlf"], None,
         {"n_queries": N, "dim": D, "image_size": S, "tier": "tiny-random"}),
        ("vlf_cap_prefix", Prefix(), (vlf,), ["vlf"], ["prefix_embeds"], None, {}),
        ("vlf_cap_lm", Lm(), (pre, torch.tensor([[2, 4, 5]])), ["prefix_embeds", "input_ids"], ["logits"],
         {"input_ids": {1: "T"}, "logits": {1: "T"}},
         {"tokenizer": "vlf_tiny_tokenizer.json", "bos_id": 2, "eos_id": 3, "max_new_tokens": 6}),
        ("vlf_img_cond", Cond(), (vlf,), ["vlf"], ["context"], None, {}),
        ("vlf_unet", Unet(), (torch.randn(1, 4, S // 4, S // 4), torch.tensor([10]), torch.randn(1, N, C)),
         ["latent", "timestep", "context"], ["noise_pred"], None,
         {"latent_shape": [4, S // 4, S // 4], "scheduler": SCHEDULER, "steps": 4}),
        ("vlf_vae_dec", VaeDec(), (torch.randn(1, 4, S // 4, S // 4),), ["latent"], ["image"], None, {}),
    ]
    for name, module, args, ins, outs, dyn, extra in specs:
        path = out / f"{name}.onnx"
        with torch.no_grad():
            torch.onnx.export(module.eval(), args, str(path), input_names=ins, output_names=outs, dynamic_axes=dyn,
                              dynamo=False, opset_version=17)
        register_model(out, {"name": name, "task": "tiny random VLF test model", "extra": extra,
                             "channel_uses": {"formula": "N*d/2", "symbols": {"N": "queries", "d": "dimension"}}
                             if name == "vlf_enc" else None}, path)
    _tokenizer(out / "vlf_tiny_tokenizer.json")
    return out


def _tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["[PAD]", "[UNK]", "[BOS]", "[EOS]"])
    tok.save(str(path))
    json.loads(pathlib.Path(path).read_text())  # written and readable
