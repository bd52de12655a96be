"""Tokenizer loading and chat-template rendering for a Hugging Face checkpoint folder.

The template is rendered the way transformers' apply_chat_template does it (jinja2
sandbox, trim_blocks and lstrip_blocks, loop controls, `raise_exception`, `tojson`),
with the tokenizer_config.json's special tokens as variables and
add_generation_prompt set, so that its output is what an OpenAI-style chat request
turns into.
"""

import json
import os
from datetime import datetime

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer


def load_tokenizer(model_dir: str) -> Tokenizer:
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def token_text(value) -> str | None:
    """tokenizer_config.json stores special tokens as strings or as AddedToken dicts."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def raise_exception(message: str):
    raise TemplateError(message)


def render_chat(model_dir: str, user: str, system: str | None = None) -> str:
    with open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        tok_cfg = json.load(f)
    template = tok_cfg.get("chat_template")
    if isinstance(template, list):
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if not template:
        raise SystemExit(f"{model_dir}/tokenizer_config.json has no chat_template")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    specials = {k: token_text(tok_cfg.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return env.from_string(template).render(messages=messages, add_generation_prompt=True, **specials)
