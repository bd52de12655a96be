"""The hit verifier's networks in torch: the MiniLM encoder (BERT, loaded from the published
safetensors; the gateway's embedder runs the same network through ONNX Runtime) and the pair
head that judges a cached question against a new one from their token states.

The head sees four segments: the two final questions and the two conversation contexts (empty
for single questions). Each token state is normalised and projected to a narrow width, tagged
with its segment and position, and the head's transformer layers attend across all four; the
first output row gives the logit of "serving the cached answer is right". The projection is a
separate function so that a cached entry stores its projected states once (`project`) and a
lookup runs only the layers (`judge`).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

SEGMENTS = 4  # cached final, query final, cached context, query context


class Bert(nn.Module):
    """BERT encoder with the parameter names of the Hugging Face checkpoint."""

    def __init__(self, cfg: dict):
        super().__init__()
        h, self.heads = cfg["hidden_size"], cfg["num_attention_heads"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        self.word = nn.Embedding(cfg["vocab_size"], h)
        self.position = nn.Embedding(cfg["max_position_embeddings"], h)
        self.token_type = nn.Embedding(cfg["type_vocab_size"], h)
        self.emb_norm = nn.LayerNorm(h, eps=self.eps)
        self.layers = nn.ModuleList(
            nn.ModuleDict({
                "q": nn.Linear(h, h), "k": nn.Linear(h, h), "v": nn.Linear(h, h),
                "o": nn.Linear(h, h), "norm1": nn.LayerNorm(h, eps=self.eps),
                "up": nn.Linear(h, cfg["intermediate_size"]),
                "down": nn.Linear(cfg["intermediate_size"], h), "norm2": nn.LayerNorm(h, eps=self.eps),
            })
            for _ in range(cfg["num_hidden_layers"]))

    def load_hf(self, weights: dict):
        def t(name):
            return torch.from_numpy(weights[name].copy())
        with torch.no_grad():
            self.word.weight.copy_(t("embeddings.word_embeddings.weight"))
            self.position.weight.copy_(t("embeddings.position_embeddings.weight"))
            self.token_type.weight.copy_(t("embeddings.token_type_embeddings.weight"))
            self.emb_norm.weight.copy_(t("embeddings.LayerNorm.weight"))
            self.emb_norm.bias.copy_(t("embeddings.LayerNorm.bias"))
            names = {
                "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                "o": "attention.output.dense", "norm1": "attention.output.LayerNorm",
                "up": "intermediate.dense", "down": "output.dense", "norm2": "output.LayerNorm",
            }
            for i, layer in enumerate(self.layers):
                for ours, theirs in names.items():
                    layer[ours].weight.copy_(t(f"encoder.layer.{i}.{theirs}.weight"))
                    layer[ours].bias.copy_(t(f"encoder.layer.{i}.{theirs}.bias"))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Hidden states after `upto` layers (all by default)."""
        b, n = ids.shape
        pos = torch.arange(n, device=ids.device)
        x = self.emb_norm(self.word(ids) + self.position(pos)[None] + self.token_type(torch.zeros_like(ids)))
        for layer in self.layers[:upto]:
            x = bert_layer(layer, x, mask, self.heads)
        return x

    def split_and_final(self, ids: torch.Tensor, mask: torch.Tensor, split: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The states after `split` layers and after all of them, in one pass."""
        x = self.forward(ids, mask, upto=split)
        mid = x
        for layer in self.layers[split:]:
            x = bert_layer(layer, x, mask, self.heads)
        return mid, x


def bert_layer(layer: nn.ModuleDict, x: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """One post-norm BERT layer; `mask` is [b, n] with 1 for tokens."""
    b, n, h = x.shape
    hd = h // heads
    bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * -1e4

    def split(t):
        return t.view(b, n, heads, hd).transpose(1, 2)
    q, k, v = split(layer["q"](x)), split(layer["k"](x)), split(layer["v"](x))
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1)
    ctx = (att @ v).transpose(1, 2).reshape(b, n, -1)
    x = layer["norm1"](x + layer["o"](ctx))
    return layer["norm2"](x + layer["down"](F.gelu(layer["up"](x))))


class JointHead(nn.Module):
    """A cross-encoder over the encoder's upper layers: the four segments' states after the
    first `split` layers (each text encoded alone, as the embedder does anyway) are tagged with
    their segment and run jointly through copies of the remaining layers, initialised from the
    encoder's own, then a learned first row gives the logit."""

    def __init__(self, bert: "Bert", split: int, heads: int = 12):
        super().__init__()
        import copy
        h = bert.word.weight.shape[1]
        self.heads = heads
        self.layers = nn.ModuleList(copy.deepcopy(layer) for layer in bert.layers[split:])
        for p in self.layers.parameters():
            p.requires_grad_(True)
        self.segment = nn.Parameter(torch.zeros(SEGMENTS, h))
        self.cls = nn.Parameter(torch.zeros(1, 1, h))
        self.out = nn.Linear(h + 2, 1)
        nn.init.normal_(self.segment, std=0.02)
        nn.init.normal_(self.cls, std=0.02)

    def project(self, states: torch.Tensor) -> torch.Tensor:
        return states

    def judge(self, segs, masks, cos_final, cos_context):
        b = segs[0].shape[0]
        xs = [self.cls.expand(b, -1, -1)] + [x + self.segment[i] for i, x in enumerate(segs)]
        ms = [torch.ones(b, 1, dtype=masks[0].dtype, device=masks[0].device)] + list(masks)
        x, m = torch.cat(xs, 1), torch.cat(ms, 1)
        for layer in self.layers:
            x = bert_layer(layer, x, m, self.heads)
        return self.out(torch.cat([x[:, 0], cos_final[:, None], cos_context[:, None]], -1))[:, 0]


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update `B @ A` (scaled by alpha / r);
    `merged()` folds the update into the weight for export."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.a = nn.Parameter(torch.randn(r, base.in_features) * (1.0 / math.sqrt(base.in_features)))
        self.b = nn.Parameter(torch.zeros(base.out_features, r))
        self.bias = nn.Parameter(base.bias.detach().clone())
        self.scale = alpha / r

    def forward(self, x):
        return F.linear(x, self.base.weight, self.bias) + (x @ self.a.t() @ self.b.t()) * self.scale

    def merged(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base.weight + (self.b @ self.a) * self.scale, self.bias


def add_lora(bert: Bert, r: int = 16, alpha: float = 32.0) -> list[nn.Parameter]:
    """Freezes the encoder but for low-rank updates of every linear layer and its LayerNorms;
    returns the trainable parameters."""
    for p in bert.parameters():
        p.requires_grad_(False)
    trainable = []
    for layer in bert.layers:
        for name in ("q", "k", "v", "o", "up", "down"):
            layer[name] = LoRALinear(layer[name], r, alpha)
            trainable += [layer[name].a, layer[name].b, layer[name].bias]
        for name in ("norm1", "norm2"):
            for p in layer[name].parameters():
                p.requires_grad_(True)
                trainable.append(p)
    return trainable


def lora_delta(bert: Bert) -> dict[str, torch.Tensor]:
    """What fine-tuning changed, in the checkpoint's names: low-rank factors, biases, norms."""
    names = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "o": "attention.output.dense", "up": "intermediate.dense", "down": "output.dense",
        "norm1": "attention.output.LayerNorm", "norm2": "output.LayerNorm",
    }
    out = {}
    for i, layer in enumerate(bert.layers):
        for ours, theirs in names.items():
            m = layer[ours]
            key = f"encoder.layer.{i}.{theirs}"
            if isinstance(m, LoRALinear):
                out[key + ".lora_a"] = (m.a * m.scale).detach().clone()
                out[key + ".lora_b"] = m.b.detach().clone()
                out[key + ".bias"] = m.bias.detach().clone()
            else:
                out[key + ".weight"] = m.weight.detach().clone()
                out[key + ".bias"] = m.bias.detach().clone()
    return out


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[..., None].to(states.dtype)
    pooled = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1)


class HeadLayer(nn.Module):
    """Pre-norm transformer layer written in plain operators (exports cleanly to ONNX)."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1)
        x = x + self.drop(self.o((att @ v).transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.down(F.gelu(self.up(self.norm2(x)))))


class PairHead(nn.Module):
    def __init__(self, hidden: int = 384, d: int = 128, layers: int = 2, heads: int = 4,
                 max_len: int = 256, dropout: float = 0.1):
        super().__init__()
        self.in_norm = nn.LayerNorm(hidden)
        self.proj = nn.Linear(hidden, d)
        self.segment = nn.Embedding(SEGMENTS, d)
        self.position = nn.Embedding(max_len, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.layers = nn.ModuleList(HeadLayer(d, heads, 2 * d, dropout) for _ in range(layers))
        self.out_norm = nn.LayerNorm(d)
        self.out = nn.Linear(d + 2, 1)
        nn.init.normal_(self.position.weight, std=0.02)
        nn.init.normal_(self.segment.weight, std=0.02)

    def project(self, states: torch.Tensor) -> torch.Tensor:
        """Token states [b, n, hidden] → projected states [b, n, d] (what an entry stores)."""
        return self.proj(self.in_norm(states))

    def judge(self, segs: list[torch.Tensor], masks: list[torch.Tensor],
              cos_final: torch.Tensor, cos_context: torch.Tensor) -> torch.Tensor:
        """Four projected segments and their masks (1 = token) → logit [b]."""
        b = segs[0].shape[0]
        xs, ms = [self.cls.expand(b, -1, -1)], [torch.ones(b, 1, dtype=masks[0].dtype, device=masks[0].device)]
        for i, (x, m) in enumerate(zip(segs, masks)):
            n = x.shape[1]
            xs.append(x + self.segment.weight[i] + self.position.weight[:n])
            ms.append(m)
        x, m = torch.cat(xs, 1), torch.cat(ms, 1)
        bias = (1.0 - m[:, None, None, :].to(x.dtype)) * -1e4
        for layer in self.layers:
            x = layer(x, bias)
        feats = torch.cat([self.out_norm(x[:, 0]), cos_final[:, None], cos_context[:, None]], -1)
        return self.out(feats)[:, 0]
