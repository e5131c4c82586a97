"""The two digests transferkit identifies things by: a file's bytes, and a module's weights."""

from __future__ import annotations

import hashlib
import os


def file_digest(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """blake2b-128 hex digest of a file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def bytes_digest(data: bytes) -> str:
    """blake2b-128 hex digest of ``data`` (the same digest as :func:`file_digest` of a file holding it)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def state_dict_digest(module, *parts: object) -> str:
    """blake2b-128 hex digest of a module's class name, its state_dict (names, shapes, bytes) and ``parts``.

    Two modules with the same digest compute the same function; bf16 or fp32 tensors hash by their bytes.
    """
    import torch

    h = hashlib.blake2b(digest_size=16)
    h.update(type(module).__name__.encode())
    for part in parts:
        h.update(b"\0" + str(part).encode())
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
