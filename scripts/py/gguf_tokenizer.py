"""Rebuilds a Hugging Face tokenizer.json from a GGUF's gpt2-style BPE vocabulary, and checks it.

The check is independent of the `tokenizers` library: a plain Python byte-level BPE
(pre-tokenizer regex, byte-to-unicode table, merges applied by rank, as llama.cpp
reads the GGUF's metadata) must give the same ids as the built tokenizer, every
vocabulary entry must map to its own id, and decoding must give the text back.
"""

import json

import regex
from tokenizers import Tokenizer

CONTROL_TOKEN_TYPE = 3

# GPT-2's split, as used by HF's ByteLevel pre-tokenizer and llama.cpp's gpt2 family.
GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}

# tokenizer.ggml.pre -> (HF pre-tokenizer, whether digits are split one by one first).
PRE_TOKENIZERS = {
    "smollm": (
        {
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL],
        },
        True,
    ),
    "gpt-2": (BYTE_LEVEL, False),
    "default": (BYTE_LEVEL, False),
}

CHECK_TEXTS = [
    "What is the capital of France?",
    "Hello, world! It's 2024-06-01 and the price is $1234.56.",
    "def f(x):\n    return x**2  # squares\n\n\n\tindented\r\n",
    "  leading spaces, trailing spaces   ",
    "naïve café, Zürich, 東京, мир, 🙂👍🏽, مرحبا",
    "I'm sure they'll say we've done what you'd do; it's OK'S",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "",
]


def build_tokenizer_json(tokens: list[str], token_types: list[int], merges: list[str], pre: str) -> dict:
    if pre not in PRE_TOKENIZERS:
        raise SystemExit(f"tokenizer.ggml.pre = {pre!r} is not supported (known: {sorted(PRE_TOKENIZERS)})")
    for m in merges:
        if m.count(" ") != 1:
            raise SystemExit(f"merge {m!r} is not two symbols")
    pre_tokenizer, _ = PRE_TOKENIZERS[pre]
    added = [
        {
            "id": i,
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, (t, kind) in enumerate(zip(tokens, token_types, strict=True))
        if kind == CONTROL_TOKEN_TYPE
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            # "a b" strings are read by every tokenizers version, old Rust crates included.
            "merges": list(merges),
        },
    }


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars), strict=True))


class ReferenceBpe:
    """Straightforward byte-level BPE over the GGUF's vocab and ranked merges."""

    def __init__(self, tokens: list[str], merges: list[str], special: list[str], split_digits: bool):
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
        self.byte_map = bytes_to_unicode()
        self.special = special
        self.split_digits = split_digits

    def encode(self, text: str) -> list[int]:
        ids = []
        pattern = "(" + "|".join(regex.escape(s) for s in self.special) + ")"
        for part in regex.split(pattern, text):
            if part in self.special:
                ids.append(self.vocab[part])
            elif part:
                ids.extend(self._encode_plain(part))
        return ids

    def _encode_plain(self, text: str) -> list[int]:
        pieces = regex.split(r"(\p{N})", text) if self.split_digits else [text]
        ids = []
        for piece in pieces:
            for word in regex.findall(GPT2_SPLIT, piece):
                mapped = "".join(self.byte_map[b] for b in word.encode("utf-8"))
                ids.extend(self.vocab[s] for s in self._bpe(mapped))
        return ids

    def _bpe(self, word: str) -> list[str]:
        symbols = list(word)
        while len(symbols) > 1:
            pairs = [(self.ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(symbols, symbols[1:], strict=False))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
        return symbols


def check_tokenizer(tok_json: dict, tokens: list[str], merges: list[str], pre: str) -> None:
    tok = Tokenizer.from_str(json.dumps(tok_json))
    if tok.get_vocab_size(with_added_tokens=True) != len(tokens):
        raise SystemExit(f"tokenizer has {tok.get_vocab_size()} entries, gguf {len(tokens)}")
    wrong = [i for i, t in enumerate(tokens) if tok.token_to_id(t) != i]
    if wrong:
        raise SystemExit(f"{len(wrong)} vocabulary entries map to other ids, e.g. {tokens[wrong[0]]!r}")
    special = [a["content"] for a in tok_json["added_tokens"]]
    reference = ReferenceBpe(tokens, merges, special, PRE_TOKENIZERS[pre][1])
    for text in CHECK_TEXTS:
        got = tok.encode(text, add_special_tokens=True).ids
        want = reference.encode(text)
        if got != want:
            raise SystemExit(f"tokenizer disagrees with the gguf merges on {text!r}:\n  {got}\n  {want}")
        back = tok.decode(got, skip_special_tokens=False)
        if back != text:
            raise SystemExit(f"tokenizer does not round-trip {text!r}: got {back!r}")
    print(
        f"  tokenizer: {len(tokens)} tokens, {len(merges)} merges, {len(special)} special; "
        f"{len(CHECK_TEXTS)} texts encode as the gguf merges imply and round-trip"
    )
