"""MLLM reasoner: (image, question, channel state) → :class:`QuestionAnalysis`, from a
multimodal LLM served behind an OpenAI-compatible chat-completions endpoint (vLLM,
llama.cpp ``llama-server``, Ollama, a hosted API…).

HTTP and JSON use the standard library only (``urllib.request``, ``json``, ``base64``; no
client SDK); the image is sent as a PNG data URL (Pillow encodes it). Every failure —
unreachable endpoint, timeout, HTTP error, a body that is not a chat completion, a reply
without the expected JSON, a refusal — raises :class:`GuidanceError`, and :meth:`MllmClient.analyse`
never takes longer than ``timeout`` seconds. See docs/guidance_reference.md.
"""
from __future__ import annotations

import base64
import http.client
import io
import json
import math
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from ..codecs.base import as_rgb_uint8
from .base import GuidanceError, QuestionAnalysis

__all__ = ["MllmClient", "SYSTEM_PROMPT", "parse_reply", "png_data_url"]

SYSTEM_PROMPT = (
    "You guide a semantic image transmitter. The image will be sent over a noisy wireless link to a "
    "receiver that must answer the user's question from it; the transmitter protects the region you name "
    "with more channel uses, so name the smallest region that answers the question.\n"
    "Reply with strict JSON only, no prose and no code fences:\n"
    '{"target": "<short noun phrase to look at>", "needs_context": true|false, "answer": "<short answer>"}\n'
    '- target: the object or region the answer depends on, as a short noun phrase (e.g. "the red car", '
    '"the street sign"); "" only when the question is about the whole scene.\n'
    "- needs_context: true when the answer also needs the surroundings (relations between objects, "
    "counting, where something is, the overall scene), else false.\n"
    "- answer: your own short answer from the image."
)

MAX_REPLY_BYTES = 4 << 20       # a chat completion bigger than this is not a guidance reply
MAX_TARGET_CHARS = 100
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.S)
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_REFUSAL = re.compile(r"\b(can['’]?t|cannot|unable|not able|won['’]?t|sorry|refuse|not allowed)\b", re.I)


class MllmClient:
    """Client of an OpenAI-compatible chat-completions endpoint.

    ``url``: the server's base URL (``http://host:8000``, ``http://host:11434/v1``) or the full
    endpoint (ending in ``/chat/completions``), see :attr:`endpoint`. ``model``: the served
    model's name. ``api_key``: sent as ``Authorization: Bearer …`` when given. ``timeout``: the
    bound, in seconds, on a whole :meth:`analyse` call. ``max_image_side``: the image is
    downscaled (aspect kept) so that its longer side is at most this (None or 0: sent as is).
    ``max_tokens``: the reply's token budget. ``extra_body``: additional request fields
    (e.g. ``{"response_format": {"type": "json_object"}}`` where the server supports it).
    Environment proxies are used, except for loopback hosts.
    """

    name = "mllm"

    def __init__(self, url: str, model: str = "default", api_key: str | None = None, timeout: float = 10.0,
                 max_image_side: int | None = 512, max_tokens: int = 200, extra_body: dict | None = None):
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https") \
                or not urllib.parse.urlsplit(url).hostname:
            raise ValueError(f"url must be an http(s) URL, got {url!r}")
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if max_image_side is not None and (not isinstance(max_image_side, int) or max_image_side < 0):
            raise ValueError(f"max_image_side must be None or an int >= 0, got {max_image_side!r}")
        self.url = url
        self.model = model
        self.api_key = api_key
        self.timeout = float(timeout)
        self.max_image_side = max_image_side
        self.max_tokens = int(max_tokens)
        self.extra_body = dict(extra_body or {})
        self.endpoint = _endpoint(url)
        host = urllib.parse.urlsplit(self.endpoint).hostname
        handlers = [urllib.request.ProxyHandler({})] if host in _LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)
        self.last_reply: str | None = None      # the raw reply text of the last call (for logs)
        self.last_latency_s: float | None = None

    # request -------------------------------------------------------------------------
    def build_request(self, image, question: str, snr_db=None) -> dict:
        """The chat-completions request body (a dict) for one question."""
        if not isinstance(question, str) or not question.strip():
            raise GuidanceError("mllm: empty question")
        try:
            url = png_data_url(image, self.max_image_side)
        except (ValueError, TypeError) as e:
            raise GuidanceError(f"mllm: bad image: {e}") from None
        text = f"Question: {question.strip()}\n{_channel_text(snr_db)}"
        body = {
            "model": self.model,
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": [{"type": "text", "text": text},
                                             {"type": "image_url", "image_url": {"url": url}}]},
            ],
        }
        body.update(self.extra_body)
        return body

    def analyse(self, image, question: str, snr_db=None) -> QuestionAnalysis:
        """Ask the served model what the question needs; ``QuestionAnalysis(source="mllm")``.

        ``image``: RGB uint8 (H, W, 3) (anything ``as_rgb_uint8`` accepts); ``snr_db``: the
        estimated SNR of the link in dB (None: unknown). Raises :class:`GuidanceError` on any
        failure, within ``timeout`` seconds."""
        t0 = time.monotonic()
        self.last_reply = None
        payload = json.dumps(self.build_request(image, question, snr_db)).encode()
        status, raw = self._post(payload, t0 + self.timeout)
        self.last_latency_s = time.monotonic() - t0
        if status != 200:
            raise GuidanceError(f"mllm: HTTP {status} from {self.endpoint}: {_error_message(raw)}")
        content = _completion_text(raw, self.endpoint)
        self.last_reply = content
        return parse_reply(content)

    def _post(self, payload: bytes, deadline: float) -> tuple:
        """POST in a worker thread; the caller waits until ``deadline`` at most.

        The worker's socket operations also time out (``timeout``), so an abandoned worker
        ends on its own."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.endpoint, data=payload, headers=headers, method="POST")
        result = {}

        def work():
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    result["reply"] = (resp.status, _read_capped(resp, deadline))
            except urllib.error.HTTPError as e:
                try:
                    body = _read_capped(e, deadline)
                except Exception:
                    body = b""
                result["reply"] = (e.code, body)
            except BaseException as e:  # reported to the caller as GuidanceError
                result["error"] = e

        worker = threading.Thread(target=work, name="mllm-request", daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive() or ("reply" not in result and "error" not in result):
            raise GuidanceError(f"mllm: no reply from {self.endpoint} within {self.timeout:g} s")
        if "error" in result:
            raise GuidanceError(f"mllm: request to {self.endpoint} failed: {_describe(result['error'])}")
        return result["reply"]

    def __repr__(self):
        return f"MllmClient({self.endpoint!r}, model={self.model!r}, timeout={self.timeout:g})"


# -- reply parsing ----------------------------------------------------------------------

def parse_reply(content: str) -> QuestionAnalysis:
    """The model's reply text → :class:`QuestionAnalysis` (``source="mllm"``).

    Accepts the JSON object bare, inside a fenced code block, or surrounded by prose (the
    first object with a ``target`` key wins; ``<think>…</think>`` sections are skipped).
    ``target`` must be a string; it may be empty only when ``needs_context`` is true (a
    whole-scene question). Anything else raises :class:`GuidanceError`."""
    if not isinstance(content, str) or not content.strip():
        raise GuidanceError("mllm: empty reply")
    text = _THINK.sub("", content)[:100_000]
    obj = _find_object(text)
    if obj is None:
        snippet = _snippet(text)
        if _REFUSAL.search(text):
            raise GuidanceError(f"mllm: the model declined (no JSON in reply): {snippet}")
        raise GuidanceError(f"mllm: no JSON object in reply: {snippet}")
    if "target" not in obj or obj["target"] is None:
        raise GuidanceError(f"mllm: reply has no target: {_snippet(json.dumps(obj))}")
    target = obj["target"]
    if not isinstance(target, str):
        raise GuidanceError(f"mllm: target must be a string, got {target!r}")
    target = " ".join(target.strip().strip("\"'`.").split())[:MAX_TARGET_CHARS]
    needs = obj.get("needs_context", False)
    if isinstance(needs, str) and needs.strip().lower() in ("true", "false", "yes", "no"):
        needs = needs.strip().lower() in ("true", "yes")
    if not isinstance(needs, bool):
        raise GuidanceError(f"mllm: needs_context must be true or false, got {needs!r}")
    if not target and not needs:
        raise GuidanceError("mllm: reply names no target (empty target for a question that is not "
                            f"about the whole scene): {_snippet(json.dumps(obj))}")
    answer = obj.get("answer")
    if answer is not None and not isinstance(answer, str):
        answer = json.dumps(answer) if isinstance(answer, (list, dict)) else str(answer)
    if isinstance(answer, str):
        answer = answer.strip() or None
    return QuestionAnalysis(target=target, needs_context=needs, answer=answer, source="mllm")


def _find_object(text: str):
    decoder = json.JSONDecoder()
    first = None
    for chunk in [m.group(1) for m in _FENCE.finditer(text)] + [text]:
        start = chunk.find("{")
        while start != -1:
            try:
                obj, _ = decoder.raw_decode(chunk, start)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                if "target" in obj:
                    return obj
                first = first if first is not None else obj
            start = chunk.find("{", start + 1)
    return first


def _completion_text(raw: bytes, endpoint: str) -> str:
    """The first choice's message text of a chat-completions body."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise GuidanceError(f"mllm: {endpoint} did not return JSON: {_snippet(raw)}") from None
    if not isinstance(data, dict):
        raise GuidanceError(f"mllm: {endpoint} returned {type(data).__name__}, not a chat completion")
    if data.get("error"):
        raise GuidanceError(f"mllm: {endpoint} returned an error: {_error_message(raw)}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise GuidanceError(f"mllm: reply from {endpoint} has no choices: {_snippet(raw)}")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise GuidanceError(f"mllm: reply from {endpoint} has no message: {_snippet(raw)}")
    if message.get("refusal"):
        raise GuidanceError(f"mllm: the model refused: {_snippet(str(message['refusal']))}")
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if not isinstance(content, str) or not content.strip():
        raise GuidanceError(f"mllm: empty reply from {endpoint} (finish_reason={choice.get('finish_reason')!r})")
    if choice.get("finish_reason") == "content_filter":
        raise GuidanceError(f"mllm: reply withheld by the server's content filter: {_snippet(content)}")
    return content


# -- helpers ------------------------------------------------------------------------------

def png_data_url(image, max_side: int | None = 512) -> str:
    """``data:image/png;base64,…`` of an RGB image, downscaled (aspect kept, bilinear) so that
    its longer side is at most ``max_side`` (None or 0: full size)."""
    from PIL import Image

    rgb = as_rgb_uint8(image)
    pil = Image.fromarray(rgb)
    h, w = rgb.shape[:2]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        pil = pil.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _endpoint(url: str) -> str:
    base = url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


def _channel_text(snr_db) -> str:
    try:
        snr = None if snr_db is None else float(snr_db)
    except (TypeError, ValueError):
        snr = None
    if snr is None or not math.isfinite(snr):
        return "Channel state: estimated SNR unknown."
    if snr < 5:
        quality = "poor: only a small region can be sent in good quality"
    elif snr < 15:
        quality = "moderate"
    else:
        quality = "good"
    return f"Channel state: estimated SNR {snr:.1f} dB ({quality})."


def _read_capped(resp, deadline: float) -> bytes:
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("reply body not complete before the deadline")
        block = resp.read(65536)
        if not block:
            return b"".join(chunks)
        size += len(block)
        if size > MAX_REPLY_BYTES:
            raise ValueError(f"reply larger than {MAX_REPLY_BYTES} bytes")
        chunks.append(block)


def _describe(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError):
        reason = e.reason
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused (is the server running?)"
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return "timed out"
        return f"cannot reach the server: {reason}"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(e, ConnectionError):
        return f"connection error: {type(e).__name__}: {e}"
    if isinstance(e, http.client.HTTPException):
        return f"malformed HTTP reply: {type(e).__name__}: {e}"
    return f"{type(e).__name__}: {e}"


def _error_message(raw: bytes) -> str:
    """The OpenAI-style ``{"error": {"message": …}}`` text, else the start of the body."""
    try:
        data = json.loads(raw.decode("utf-8"))
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return _snippet(str(err["message"]))
        if isinstance(err, str) and err:
            return _snippet(err)
    except (UnicodeDecodeError, ValueError, AttributeError):
        pass
    return _snippet(raw) or "(empty body)"


def _snippet(x, n: int = 200) -> str:
    if isinstance(x, (bytes, bytearray)):
        x = bytes(x[:4 * n]).decode("utf-8", "replace")
    x = " ".join(str(x).split())
    return x if len(x) <= n else x[:n] + "…"

