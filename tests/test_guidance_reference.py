"""Reference guidance backends: CLIPSeg via ONNX Runtime and the OpenAI-compatible MLLM client.

CLIPSeg: a tiny randomly initialised ``CLIPSegConfig`` (with a word-level tokenizer built
offline) is exported, checked against torch and run as a ``Segmenter``; no weights are
downloaded. MLLM: a scripted OpenAI chat-completions server on 127.0.0.1 in a thread.
"""
import base64
import http.server
import io
import json
import shutil
import socket
import threading
import time

import numpy as np
import pytest

from gnuradio.semcom.guidance.base import GuidanceError, QuestionAnalysis, Segmenter

# -- CLIPSeg --------------------------------------------------------------------------------

WORDS = ("a the red green blue car cat dog person sign tree road sky left right of on in "
         "what color is where how many are there").split()
VOCAB = {"<unk>": 0, "<|startoftext|>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
VOCAB["<|endoftext|>"] = len(VOCAB)           # EOS is the largest id, as in CLIP's vocabulary
BOS, EOS = VOCAB["<|startoftext|>"], VOCAB["<|endoftext|>"]
SEED = 0
SIZE = 96  # export size ≠ the config's 64: position embeddings are interpolated in the graph, as for
           # CIDAS/clipseg-rd64-refined (vision config 224, processor 352)


def tiny_config():
    from transformers import CLIPSegConfig

    return CLIPSegConfig(
        text_config=dict(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=BOS, eos_token_id=EOS,
                         pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                           patch_size=16, image_size=64),
        projection_dim=16, reduce_dim=16, extract_layers=[0, 1], decoder_num_attention_heads=2,
        decoder_intermediate_size=32)


def tiny_tokenizer():
    """A word-level ``tokenizers.Tokenizer``: lower-cased words between BOS and EOS."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", BOS), ("<|endoftext|>", EOS)])
    return tok


def torch_model():
    """The same random weights as the export (same config, same seed)."""
    import torch
    from transformers import CLIPSegForImageSegmentation

    torch.manual_seed(SEED)
    return CLIPSegForImageSegmentation(tiny_config()).eval()


def test_image(h=48, w=80):
    """A non-square RGB test picture: a red block on a blue-green gradient."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([40 + 0 * x, 80 + 100 * x // w, 200 - 100 * y // h], -1).astype(np.uint8)
    img[h // 4:h // 2, w // 5:w // 2] = (220, 30, 30)
    return img


test_image.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def clipseg_models(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("onnxscript")
    pytest.importorskip("tokenizers")
    from gnuradio.semcom.guidance.clipseg import export_clipseg

    out = tmp_path_factory.mktemp("clipseg_models")
    t0 = time.monotonic()
    entry = export_clipseg(tiny_config(), out, image_size=SIZE, tokenizer=tiny_tokenizer(), seed=SEED)
    return {"dir": out, "entry": entry, "export_s": time.monotonic() - t0}


def test_clipseg_export_registers_model(clipseg_models):
    from gnuradio.semcom.runtime import load_manifest, sha256_file

    out, entry = clipseg_models["dir"], clipseg_models["entry"]
    m = load_manifest(out).entry("clipseg")
    assert m.file == "clipseg.onnx" and m.task == "text-conditioned-segmentation" and m.channel_uses is None
    assert [(t.name, t.shape, t.dtype) for t in m.inputs] == [
        ("pixel_values", (1, 3, SIZE, SIZE), "float32"), ("input_ids", (1, "T"), "int64"),
        ("attention_mask", (1, "T"), "int64")]
    assert [(t.name, t.shape, t.dtype) for t in m.outputs] == [("logits", (1, SIZE, SIZE), "float32")]
    ex = m.extra
    assert ex["image_size"] == SIZE and ex["max_text_tokens"] == 16 and ex["resample"] == "bilinear"
    assert ex["image_mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert 0.0 <= ex["ort_max_abs_diff"] <= 1e-3
    tok = ex["tokenizer"]
    assert tok["file"] == "clipseg.tokenizer.json" and sha256_file(out / tok["file"]) == tok["sha256"]
    assert entry.sha256 == m.sha256
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no export leftovers


def test_clipseg_ort_matches_torch(clipseg_models):
    """The segmenter's own preprocessing + tokenizer + ONNX Runtime vs the torch model."""
    import torch

    from gnuradio.semcom.guidance.clipseg import ClipSegSegmenter

    seg = ClipSegSegmenter(clipseg_models["dir"])
    model = torch_model()
    worst = 0.0
    for img, phrase in ((test_image(), "the red car"), (test_image(64, 64), "what color is the sky on the left")):
        ids = seg.tokenize(phrase)
        assert ids[0, 0] == BOS and ids[0, -1] == EOS and ids.dtype == np.int64
        pixels = seg.preprocess(img)
        assert pixels.shape == (1, 3, SIZE, SIZE) and pixels.dtype == np.float32
        with torch.no_grad():
            ref = model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels),
                        attention_mask=torch.ones(ids.shape, dtype=torch.long)).logits.numpy()
        got = seg.logits(img, phrase)
        assert got.shape == (SIZE, SIZE)
        worst = max(worst, float(np.abs(got - ref.reshape(SIZE, SIZE)).max()))
    print(f"max |ORT - torch| = {worst:.2e} (export check {clipseg_models['entry'].extra['ort_max_abs_diff']:.2e}, "
          f"export {clipseg_models['export_s']:.1f} s)")
    assert worst < 1e-3


def test_clipseg_segmenter_heatmap(clipseg_models):
    from gnuradio.semcom.guidance.clipseg import ClipSegSegmenter

    seg = ClipSegSegmenter(clipseg_models["dir"])
    assert isinstance(seg, Segmenter) and seg.name == "clipseg"
    img = test_image(48, 80)
    a = seg.heatmap(img, "the red car")
    assert a.shape == (48, 80) and a.dtype == np.float32
    assert np.all(np.isfinite(a)) and a.min() >= 0.0 and a.max() <= 1.0
    b = seg.heatmap(img, "blue sky on the left")
    assert b.shape == (48, 80)
    assert float(np.abs(a - b).max()) > 1e-4           # the random model is still text-conditioned
    np.testing.assert_array_equal(seg.heatmap(img, "The RED car "), a)  # the tokenizer lower-cases
    # a grayscale image of another size; a long phrase is truncated to the text model's 16 tokens
    g = seg.heatmap(test_image(33, 21)[:, :, 0], " ".join(["red car"] * 20))
    assert g.shape == (33, 21) and 0.0 <= g.min() <= g.max() <= 1.0
    for phrase in ("", "   ", None):
        with pytest.raises(GuidanceError, match="empty"):
            seg.heatmap(img, phrase)
    with pytest.raises(GuidanceError, match="bad image"):
        seg.heatmap(np.zeros((4, 4, 5), np.uint8), "car")


def test_clipseg_injected_tokenizer(clipseg_models):
    from gnuradio.semcom.guidance.clipseg import ClipSegSegmenter

    img = test_image()
    ref = ClipSegSegmenter(clipseg_models["dir"]).heatmap(img, "red car")
    ids = [BOS, VOCAB["red"], VOCAB["car"], EOS]
    by_callable = ClipSegSegmenter(clipseg_models["dir"], tokenizer=lambda text: ids)
    np.testing.assert_array_equal(by_callable.heatmap(img, "anything"), ref)
    by_object = ClipSegSegmenter(clipseg_models["dir"], tokenizer=tiny_tokenizer())
    np.testing.assert_array_equal(by_object.heatmap(img, "red car"), ref)

    def broken(text):
        raise RuntimeError("boom")

    with pytest.raises(GuidanceError, match="tokenizer failed"):
        ClipSegSegmenter(clipseg_models["dir"], tokenizer=broken).heatmap(img, "car")


def test_clipseg_tampered_files_refused(clipseg_models, tmp_path):
    from gnuradio.semcom.guidance.clipseg import ClipSegSegmenter
    from gnuradio.semcom.runtime import ModelIntegrityError, ModelNotFoundError

    d = tmp_path / "models"
    shutil.copytree(clipseg_models["dir"], d)
    onnx_file = d / "clipseg.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="clipseg.onnx"):
        ClipSegSegmenter(d)

    d2 = tmp_path / "models2"
    shutil.copytree(clipseg_models["dir"], d2)
    tok_file = d2 / "clipseg.tokenizer.json"
    tok_file.write_text(tok_file.read_text().replace('"sky"', '"SKY"'))
    with pytest.raises(ModelIntegrityError, match="tokenizer"):
        ClipSegSegmenter(d2)
    tok_file.unlink()
    with pytest.raises(ModelNotFoundError, match="tokenizer"):
        ClipSegSegmenter(d2)


def test_clipseg_export_refuses_mismatch(clipseg_models, tmp_path, monkeypatch):
    """Above the tolerance nothing is registered (the export itself is replayed from the file)."""
    import torch

    from gnuradio.semcom.guidance import clipseg

    exported = clipseg_models["dir"] / "clipseg.onnx"
    monkeypatch.setattr(torch.onnx, "export", lambda model, args, path, **kw: shutil.copyfile(exported, path))
    monkeypatch.setattr(clipseg, "_check_ort", lambda *a, **k: 0.5)
    with pytest.raises(RuntimeError, match="not registered"):
        clipseg.export_clipseg(tiny_config(), tmp_path, tokenizer=tiny_tokenizer())
    assert list(tmp_path.iterdir()) == []


def test_clipseg_export_rejects_bad_size(tmp_path):
    pytest.importorskip("transformers")
    from gnuradio.semcom.guidance.clipseg import export_clipseg

    with pytest.raises(ValueError, match="multiple of the patch size"):
        export_clipseg(tiny_config(), tmp_path, image_size=50)
    with pytest.raises(FileNotFoundError, match="config.json"):
        export_clipseg(tmp_path, tmp_path / "models")


def test_clipseg_checkpoint_dir_cli(clipseg_models, tmp_path, monkeypatch, capsys):
    """A checkpoint directory in the Hugging Face layout (config, weights, tokenizer files,
    preprocessor config) through the command line, offline: loading, preprocessing facts,
    tokenizer conversion, the ORT-vs-torch check against the reloaded weights, registration,
    then ``segment``. The graph itself is the one the fixture exported from the same weights
    (replayed, to keep the test short)."""
    import torch
    from PIL import Image
    from transformers import PreTrainedTokenizerFast

    from gnuradio.semcom.guidance import clipseg
    from gnuradio.semcom.runtime import load_manifest

    ckpt = tmp_path / "clipseg-tiny"
    torch_model().save_pretrained(ckpt)
    PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer(), bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                            unk_token="<unk>", pad_token="<unk>").save_pretrained(ckpt)
    (ckpt / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": SIZE, "resample": 3,
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25],
        "rescale_factor": 1 / 255}))
    exported = clipseg_models["dir"] / "clipseg.onnx"
    calls = []

    def replay(model, args, path, **kw):
        calls.append(kw)
        shutil.copyfile(exported, path)

    monkeypatch.setattr(torch.onnx, "export", replay)
    models = tmp_path / "models"
    assert clipseg.main(["export", "--model", str(ckpt), "--out", str(models), "--name", "cs"]) == 0
    assert calls and calls[0]["dynamo"] is True and calls[0]["opset_version"] == 18
    ex = load_manifest(models).entry("cs").extra
    assert ex["image_size"] == SIZE and ex["resample"] == "bicubic" and ex["image_std"] == [0.25] * 3
    assert ex["ort_max_abs_diff"] < 1e-3  # measured against the weights reloaded from the directory
    assert "checkpoint directory clipseg-tiny" in ex["source"]
    from tokenizers import Tokenizer

    enc = Tokenizer.from_file(str(models / "cs.tokenizer.json")).encode("Red car")
    assert enc.ids == [BOS, VOCAB["red"], VOCAB["car"], EOS]
    capsys.readouterr()

    Image.fromarray(test_image(40, 70)).save(tmp_path / "in.png")
    assert clipseg.main(["segment", "--models", str(models), "--name", "cs", "--image", str(tmp_path / "in.png"),
                         "--phrase", "the red car", "--save", str(tmp_path / "heat.png")]) == 0
    assert "70x40" in capsys.readouterr().out
    heat = np.asarray(Image.open(tmp_path / "heat.png"))
    assert heat.shape == (40, 70) and heat.dtype == np.uint8


# -- MLLM client ---------------------------------------------------------------------------

def completion(content, **message):
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, **message},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


GOOD = '{"target": "the red car", "needs_context": false, "answer": "red"}'


class ScriptedServer:
    """An OpenAI chat-completions server on 127.0.0.1: ``reply`` is (status, body, delay_s)
    or a callable(handler) taking over the response."""

    def __init__(self):
        self.requests = []
        self.reply = (200, completion(GOOD), 0.0)
        self.release = threading.Event()
        state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if callable(state.reply):
                    return state.reply(self)
                status, payload, delay = state.reply
                if delay:
                    state.release.wait(delay)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.close()


def client(url, **kw):
    from gnuradio.semcom.guidance.mllm import MllmClient

    kw.setdefault("timeout", 5.0)
    return MllmClient(url, **kw)


def test_mllm_good_reply_and_request(server):
    c = client(server.url, model="qwen2-vl", api_key="sk-test", max_image_side=64)
    img = test_image(96, 160)
    a = c.analyse(img, "What color is the car?", snr_db=12.5)
    assert a == QuestionAnalysis(target="the red car", needs_context=False, answer="red", source="mllm")
    assert c.last_reply == GOOD and c.last_latency_s < 5
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    assert req["headers"]["Content-Type"] == "application/json"
    body = req["body"]
    assert body["model"] == "qwen2-vl" and body["temperature"] == 0
    system, user = body["messages"]
    assert system["role"] == "system" and '"target"' in system["content"] and "JSON" in system["content"]
    assert user["role"] == "user"
    text = next(p["text"] for p in user["content"] if p["type"] == "text")
    assert "What color is the car?" in text and "12.5 dB" in text
    url = next(p["image_url"]["url"] for p in user["content"] if p["type"] == "image_url")
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    png = base64.b64decode(url[len(prefix):])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    sent = Image.open(io.BytesIO(png))
    assert sent.size == (64, 38) and sent.mode == "RGB"  # longer side capped, aspect kept


def test_mllm_endpoint_forms(server):
    from gnuradio.semcom.guidance.mllm import MllmClient

    assert MllmClient("http://h:8000").endpoint == "http://h:8000/v1/chat/completions"
    assert MllmClient("http://h:11434/v1/").endpoint == "http://h:11434/v1/chat/completions"
    assert MllmClient("https://h/api/chat/completions").endpoint == "https://h/api/chat/completions"
    for bad in ("h:8000", "ftp://h", "", None):
        with pytest.raises(ValueError):
            MllmClient(bad)
    c = client(server.url + "/v1/chat/completions")
    a = c.analyse(test_image(), "Is there a dog?")  # SNR unknown
    assert a.target == "the red car"
    assert server.requests[0]["path"] == "/v1/chat/completions"
    text = server.requests[0]["body"]["messages"][1]["content"][0]["text"]
    assert "SNR unknown" in text and "Authorization" not in server.requests[0]["headers"]


@pytest.mark.parametrize("content, target, needs, answer", [
    ("```json\n" + GOOD + "\n```", "the red car", False, "red"),
    ("Sure! Here is the analysis:\n```\n" + GOOD + "\n```\nLet me know if you need more.", "the red car", False, "red"),
    ('The JSON is {"target": "street sign", "needs_context": true, "answer": "left"} as asked.',
     "street sign", True, "left"),
    ("<think>the sign {maybe}</think>" + '{"target": "sign", "needs_context": "true"}', "sign", True, None),
    ('{"target": "", "needs_context": true, "answer": 3}', "", True, "3"),
])
def test_mllm_reply_forms(server, content, target, needs, answer):
    server.reply = (200, completion(content), 0.0)
    a = client(server.url).analyse(test_image(), "q?", snr_db=3)
    assert (a.target, a.needs_context, a.answer, a.source) == (target, needs, answer, "mllm")


@pytest.mark.parametrize("reply, match", [
    ((500, {"error": {"message": "CUDA out of memory", "type": "server_error"}}, 0), "HTTP 500.*CUDA out of memory"),
    ((404, b"<html>not found</html>", 0), "HTTP 404"),
    ((200, b"<html>hello</html>", 0), "did not return JSON"),
    ((200, b"", 0), "did not return JSON"),
    ((200, {"object": "chat.completion", "choices": []}, 0), "no choices"),
    ((200, {"error": {"message": "model not loaded"}}, 0), "model not loaded"),
    ((200, [1, 2], 0), "not a chat completion"),
    ((200, completion('{"target": "car", needs_context: tru'), 0), "no JSON object"),
    ((200, completion("I'm sorry, but I can't help with that."), 0), "declined"),
    ((200, completion(None, refusal="I can't assist with that request."), 0), "refused"),
    ((200, completion(""), 0), "empty reply"),
    ((200, completion('{"answer": "yes", "needs_context": false}'), 0), "no target"),
    ((200, completion('{"target": "", "needs_context": false}'), 0), "names no target"),
    ((200, completion('{"target": ["car"]}'), 0), "target must be a string"),
    ((200, completion('{"target": "car", "needs_context": "maybe"}'), 0), "needs_context"),
])
def test_mllm_failures_are_guidance_errors(server, reply, match):
    server.reply = reply
    with pytest.raises(GuidanceError, match=match):
        client(server.url).analyse(test_image(), "What color is the car?", snr_db=0.0)


def test_mllm_slow_reply_times_out(server):
    server.reply = (200, completion(GOOD), 10.0)
    c = client(server.url, timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(GuidanceError, match="within 1 s|timed out"):
        c.analyse(test_image(), "What color is the car?", snr_db=5)
    assert time.monotonic() - t0 < 2.0


def test_mllm_trickling_body_times_out(server):
    """Headers at once, then one byte every 0.3 s: the whole call still ends near the timeout."""
    data = json.dumps(completion(GOOD)).encode()

    def trickle(h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        for i in range(len(data)):
            if server.release.wait(0.3):
                return
            h.wfile.write(data[i:i + 1])
            h.wfile.flush()

    server.reply = trickle
    t0 = time.monotonic()
    with pytest.raises(GuidanceError):
        client(server.url, timeout=1.0).analyse(test_image(), "q?")
    assert time.monotonic() - t0 < 2.0


def test_mllm_dropped_connection(server):
    def drop(h):
        h.close_connection = True  # no status line at all

    server.reply = drop
    with pytest.raises(GuidanceError, match="failed"):
        client(server.url).analyse(test_image(), "q?")


def test_mllm_unreachable():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t0 = time.monotonic()
    with pytest.raises(GuidanceError, match="connection refused"):
        client(f"http://127.0.0.1:{port}", timeout=2.0).analyse(test_image(), "q?", snr_db=10)
    assert time.monotonic() - t0 < 2.5


def test_mllm_bad_inputs(server):
    c = client(server.url)
    for q in ("", "  ", None):
        with pytest.raises(GuidanceError, match="empty question"):
            c.analyse(test_image(), q)
    with pytest.raises(GuidanceError, match="bad image"):
        c.analyse(np.zeros((0, 5, 3), np.uint8), "q?")
    a = c.analyse(test_image(), "q?", snr_db=float("nan"))  # a useless SNR is sent as unknown
    assert a.target == "the red car"
    assert "SNR unknown" in server.requests[-1]["body"]["messages"][1]["content"][0]["text"]
    assert len(server.requests) == 1  # nothing was sent for the rejected calls
