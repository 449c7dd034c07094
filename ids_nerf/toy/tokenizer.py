"""Offline CLIP tokenizer: builds ``vocab.json`` + ``merges.txt`` from the BPE file that open_clip_torch ships.

The vocabulary is constructed exactly as CLIP's ``SimpleTokenizer`` does it: the 256 byte-level symbols, the same
symbols with ``</w>``, one token per merge (the first 48,894 merges of ``bpe_simple_vocab_16e6.txt.gz``), then
``<|startoftext|>`` and ``<|endoftext|>`` -- 49,408 tokens, the vocabulary of Stable Diffusion 1.x's text encoder.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from ids_nerf.errors import UserError

#: Number of merges used by CLIP (49152 - 256 - 2); the vocabulary then has 49,408 entries.
N_MERGES = 49152 - 256 - 2
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def open_clip_bpe_path() -> Path:
    """Path of the BPE merges file shipped inside the ``open_clip_torch`` package (found without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise UserError("open_clip_torch is not installed; it ships the CLIP BPE vocabulary (run scripts/setup.sh).")
    path = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise UserError(f"open_clip_torch is installed but {path} is missing; reinstall open_clip_torch.")
    return path


def write_clip_tokenizer_files(out_dir: str | Path, bpe_path: str | Path | None = None) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and tokenizer configs loadable by ``CLIPTokenizer.from_pretrained``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bpe = Path(bpe_path) if bpe_path is not None else open_clip_bpe_path()
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab.extend("".join(m) for m in merges)
    vocab.extend([BOS_TOKEN, EOS_TOKEN])
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,  # Stable Diffusion 1.x pads with <|endoftext|>
        "do_lower_case": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return out
