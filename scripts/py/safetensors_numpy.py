"""Reads safetensors checkpoints into numpy arrays, bfloat16 included.

The safetensors package's numpy loader cannot return bfloat16 (numpy has no such
type), and many Hugging Face checkpoints ship in it, so the format (an 8-byte
little-endian header length, a JSON header, then raw little-endian tensors) is read
here directly and bfloat16 is widened to float32 exactly.
"""

import json
import os
import struct

import numpy as np

DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def load_file(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        shape = info["shape"]
        if info["dtype"] == "BF16":
            # bfloat16 is the top half of a float32: shift it into place.
            wide = raw.view("<u2").astype(np.uint32) << 16
            tensors[name] = wide.view(np.float32).reshape(shape)
        elif info["dtype"] in DTYPES:
            tensors[name] = raw.view(np.dtype(DTYPES[info["dtype"]]).newbyteorder("<")).reshape(shape)
        else:
            raise SystemExit(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        # Copied out of the memory map into plain arrays: numpy's matrix products on
        # memmap views run several times slower (and unaligned ones miss BLAS).
        tensors[name] = np.array(tensors[name], order="C")
    return tensors


def load_dir(model_dir: str) -> dict[str, np.ndarray]:
    """Loads model.safetensors, or every shard named by model.safetensors.index.json."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    tensors = {}
    for shard in shards:
        tensors.update(load_file(os.path.join(model_dir, shard)))
    return tensors
