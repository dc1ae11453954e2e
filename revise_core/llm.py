"""Text-only chat backends shared by the benchmark judge and the dataset pipeline.

- `OpenAIChat`: any OpenAI-compatible /chat/completions endpoint, standard-library HTTP, base URL / model /
  key from arguments or OPENAI_BASE_URL / OPENAI_MODEL / OPENAI_API_KEY, transport retries with backoff.
- `LocalChat`: a local transformers causal LM (a folder), greedy decoding through its chat template.
Both return the assistant's text or raise `LLMError`; what the text must contain is the caller's business.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.parse
from pathlib import Path

logger = logging.getLogger(__name__)


MAX_RESPONSE_BYTES = 4 * 2**20  # a chat answer is text: far below this


class LLMError(RuntimeError):
    """No usable answer from a chat backend (HTTP error, timeout, malformed response)."""


class OpenAIChat:
    """An OpenAI-compatible /chat/completions endpoint.

    Each request has a total deadline (`timeout` seconds for connecting, sending and reading the whole
    answer: a server that trickles bytes cannot hang a run) and a size cap on the answer (`max_bytes`).
    The API key never appears in an error, a log line or a report: it is redacted from every message.
    """

    def __init__(self, *, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, retries: int = 2, backoff: float = 1.0, temperature: float = 0.0,
                 max_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.model = model or os.environ.get("OPENAI_MODEL") or "gpt-4o"
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.timeout, self.retries, self.backoff, self.temperature = timeout, retries, backoff, temperature
        self.max_bytes = max_bytes

    def complete(self, messages: list[dict], *, max_tokens: int = 256) -> str:
        payload = {"model": self.model, "temperature": self.temperature, "max_tokens": max_tokens,
                   "messages": messages}
        errors = []
        for attempt in range(self.retries + 1):
            try:
                return self._once(payload)
            except LLMError as error:
                errors.append(str(error))
                logger.warning("chat attempt %d/%d failed: %s", attempt + 1, self.retries + 1, error)
                if attempt < self.retries:
                    time.sleep(self.backoff * (2 ** attempt))
        raise LLMError("; ".join(errors))

    def redact(self, text: str) -> str:
        """`text` with the API key (however it was echoed) replaced by [redacted]."""
        if self.api_key:
            text = text.replace(self.api_key, "[redacted]")
        return text

    def _once(self, payload: dict) -> str:
        try:
            status, body = _post(f"{self.base_url}/chat/completions", json.dumps(payload).encode(),
                                 {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"},
                                 deadline=time.monotonic() + self.timeout, max_bytes=self.max_bytes)
        except _Deadline:
            raise LLMError(f"no answer from {self.base_url} within the {self.timeout:g} s deadline") from None
        except _TooLarge:
            raise LLMError(f"the answer from {self.base_url} exceeds {self.max_bytes} bytes") from None
        except (OSError, http.client.HTTPException) as error:
            raise LLMError(self.redact(f"no answer from {self.base_url}: {error}")) from None
        if status >= 400:
            raise LLMError(self.redact(f"HTTP {status} from {self.base_url}: {body[:200]!r}"))
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise LLMError(f"the endpoint did not return JSON: {error}") from None
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMError(self.redact(f"malformed chat-completions response: {json.dumps(data)[:200]}")) from None
        if not isinstance(content, str):
            raise LLMError(f"the answer content is not text: {content!r:.100}")
        return content


class _Deadline(Exception):
    pass


class _TooLarge(Exception):
    pass


def _post(url: str, body: bytes, headers: dict, *, deadline: float, max_bytes: int) -> tuple[int, bytes]:
    """POST with a deadline on the whole exchange: every socket operation waits at most the time left, and
    the answer is read in chunks until it is complete, the deadline passes or it grows past `max_bytes`.
    (urllib's timeout applies to each read, so a byte every few seconds would keep it waiting forever.)"""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise OSError(f"not an http(s) URL: {url}")

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Deadline()
        return left

    kind = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
    connection = kind(parsed.hostname, parsed.port, timeout=remaining())
    try:
        path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        try:
            connection.request("POST", path or "/", body=body, headers=headers)
            sock = connection.sock  # the response reads from it even after http.client drops its reference
            sock.settimeout(remaining())
            response = connection.getresponse()
            chunks, size = [], 0
            while True:
                sock.settimeout(remaining())
                chunk = response.read1(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise _TooLarge()
                chunks.append(chunk)
        except TimeoutError:
            raise _Deadline() from None
        return response.status, b"".join(chunks)
    finally:
        connection.close()


class LocalChat:
    """A local causal LM folder (transformers), greedy; text messages only."""

    def __init__(self, folder: str | os.PathLike, *, device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .checkpoints import ModelFileNotFoundError

        folder = Path(folder)
        self.folder = str(folder.resolve())
        if not (folder / "config.json").is_file():
            raise ModelFileNotFoundError(f"local LLM folder not found or without config.json: {folder}")
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).to(device).eval()

    def complete(self, messages: list[dict], *, max_tokens: int = 256) -> str:
        import torch

        from . import chat_text

        # Message text stays text: a control-token string in a caption or instruction cannot end the turn.
        pieces = chat_text.render_chat(self.tokenizer, messages, add_generation_prompt=True)
        ids = torch.tensor([chat_text.tokenize(self.tokenizer, pieces)], device=self.model.device)
        with torch.no_grad():
            output = self.model.generate(ids, max_new_tokens=max_tokens, do_sample=False,
                                         pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        return self.tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()
