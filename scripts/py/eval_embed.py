"""Embeds texts with MiniLM int8 exactly as cachet's embedder does, with an on-disk cache.

A research tool for tuning hit guards and the conversation context fingerprint
(`eval_pairs.py`, `eval_conversations.py`): the recipe is the one of
`minilm_reference.py` (no padding, truncation at 256 tokens, mean pooling, L2).
The cache lives in /tmp so that repeated experiments cost no model time.
"""

import os
import pickle

import numpy as np

from minilm_reference import embed, load_tokenizer, session

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_DIR = os.path.join(ROOT, "assets", "minilm-int8")
CACHE = "/tmp/cachet-eval-embed-cache.pkl"


class Embedder:
    def __init__(self) -> None:
        self._tok = None
        self._sess = None
        self._cache: dict[str, np.ndarray] = {}
        self._dirty = False
        if os.path.exists(CACHE):
            with open(CACHE, "rb") as f:
                self._cache = pickle.load(f)

    def __call__(self, text: str) -> np.ndarray:
        vec = self._cache.get(text)
        if vec is None:
            if self._sess is None:
                self._tok = load_tokenizer(os.path.join(MODEL_DIR, "tokenizer.json"))
                self._sess = session(os.path.join(MODEL_DIR, "model.onnx"))
            vec = embed(self._sess, self._tok, text).astype(np.float32)
            self._cache[text] = vec
            self._dirty = True
        return vec

    def save(self) -> None:
        if self._dirty:
            tmp = CACHE + ".part"
            with open(tmp, "wb") as f:
                pickle.dump(self._cache, f)
            os.replace(tmp, CACHE)
            self._dirty = False
