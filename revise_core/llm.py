"""Text-only chat backends shared by the benchmark judge and the dataset pipeline.

- `OpenAIChat`: any OpenAI-compatible /chat/completions endpoint, standard-library HTTP, base URL / model /
  key from arguments or OPENAI_BASE_URL / OPENAI_MODEL / OPENAI_API_KEY, transport retries with backoff.
- `LocalChat`: a local transformers causal LM (a folder), greedy decoding through its chat template.
Both return the assistant's text or raise `LLMError`; what the text must contain is the caller's business.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)


class LLMError(RuntimeError):
    """No usable answer from a chat backend (HTTP error, timeout, malformed response)."""


class OpenAIChat:
    def __init__(self, *, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, retries: int = 2, backoff: float = 1.0, temperature: float = 0.0) -> None:
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.model = model or os.environ.get("OPENAI_MODEL") or "gpt-4o"
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.timeout, self.retries, self.backoff, self.temperature = timeout, retries, backoff, temperature

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

    def _once(self, payload: dict) -> str:
        request = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise LLMError(f"HTTP {error.code} from {self.base_url}: {error.read()[:200]!r}") from error
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise LLMError(f"no answer from {self.base_url}: {error}") from error
        except json.JSONDecodeError as error:
            raise LLMError(f"the endpoint did not return JSON: {error}") from error
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as error:
            raise LLMError(f"malformed chat-completions response: {json.dumps(data)[:200]}") from error
        if not isinstance(content, str):
            raise LLMError(f"the answer content is not text: {content!r:.100}")
        return content


class LocalChat:
    """A local causal LM folder (transformers), greedy; text messages only."""

    def __init__(self, folder: str | os.PathLike, *, device: str = "cpu") -> None:
        from .checkpoints import ModelFileNotFoundError, enforce_offline

        enforce_offline()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(folder)
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
