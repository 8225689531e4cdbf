"""Converted weights kept on disk, so that a restart maps in a second what took a minute to read and convert.

One safetensors file per model (and settings) holds exactly the tensors the decoder runs on (`prepare_tensors`:
int8/int4 weights with their scales, float16 copies, norms, embeddings), the model's config and its tokenizer
(a GGUF's vocabulary takes seconds to parse). Its metadata names the source (each file's size, mtime and a hash
of its first and last megabytes, where a GGUF keeps its header), the conversion version, the settings and the
torch version; any difference makes it stale. A SHA-256 over the metadata and every tensor's bytes is checked on
every load, so a damaged file is rebuilt, never used. Files are written to a temporary name and renamed into
place, so a crash mid-write leaves no file that looks complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from lamina_inference_torch.tokenizer import TextTokenizer
from lamina_inference_torch.weights import ModelConfig

log = logging.getLogger("lamina.torch")

FORMAT = "lamina-inference-torch-converted"
# Bump whenever prepare_tensors, the GGUF reader or the tokenizer conversion would produce something different.
VERSION = 3
_EDGE = 8 << 20  # bytes hashed at each end of a source file: a GGUF's header (metadata, vocabulary) comes first
_FOLDER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
)


@dataclasses.dataclass
class Converted:
    config: ModelConfig
    tensors: dict[str, torch.Tensor]
    tokenizer: TextTokenizer


def source_identity(path: Path) -> list[dict[str, Any]]:
    """Size, mtime and a hash of both ends of every file the model is read from."""
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors")) + [path / n for n in _FOLDER_FILES]
    identity = []
    for file in files:
        if not file.exists():
            continue
        stat = file.stat()
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            digest.update(handle.read(_EDGE))
            if stat.st_size > 2 * _EDGE:
                handle.seek(-_EDGE, os.SEEK_END)
            digest.update(handle.read())
        identity.append(
            {"name": file.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
        )
    return identity


def cache_key(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": VERSION,
        "torch": torch.__version__,
        "settings": settings,
        "source": source_identity(path),
    }


def cache_file(cache_dir: Path, name: str, tag: str) -> Path:
    """Where the model `name` converted with the settings `tag` is kept: a folder per model, which holds only
    the file for the latest settings."""
    return cache_dir / name / f"{tag}.safetensors"


def load(file: Path, key: dict[str, Any]) -> Converted | None:
    """The converted model in `file` if it is there, intact and made from the same source with the same
    settings; otherwise None (and the reason is logged)."""
    if not file.exists():
        log.info("no converted weights at %s yet: converting", file)
        return None
    try:
        with file.open("rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
            metadata = header.pop("__metadata__", None) or {}
            if metadata.get("format") != FORMAT or json.loads(metadata.get("key", "null")) != key:
                log.info("converted weights at %s are stale (source, settings or version changed): converting", file)
                return None
            tensors = _read_tensors(handle, header)
        if _digest(metadata, tensors) != metadata.get("digest"):
            raise ValueError("checksum mismatch")
        for name, owner in json.loads(metadata["aliases"]).items():
            tensors[name] = tensors[owner]
        return Converted(
            _config_from(json.loads(metadata["config"]), tensors.pop("rope_freq_factors", None)),
            tensors,
            _tokenizer_from(json.loads(metadata["tokenizer"])),
        )
    except Exception as error:  # any damage (truncation, bad header, flipped bits) means: convert again
        log.warning("converted weights at %s are damaged (%s: %s): converting again", file, type(error).__name__, error)
        return None


_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I8": torch.int8,
    "U8": torch.uint8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "BOOL": torch.bool,
}


def _read_tensors(handle: BinaryIO, header: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Read a safetensors file's tensors into memory of their own. Not safetensors' memory map: the pages of a
    map stay resident, counted in the process's RSS, as long as any tensor of the file lives, so the float16
    copies (half the file) would stay resident after packing frees them."""
    start = handle.tell()
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        tensor = torch.empty(entry["shape"], dtype=_DTYPES[entry["dtype"]])
        if tensor.numel() * tensor.element_size() != end - begin:
            raise ValueError(f"{name}: {end - begin} bytes for {entry['shape']} {entry['dtype']}")
        if end > begin:
            handle.seek(start + begin)
            if handle.readinto(memoryview(tensor.reshape(-1).view(torch.uint8).numpy())) != end - begin:
                raise ValueError(f"{name}: the file ends inside it")
        tensors[name] = tensor
    return tensors


def save(file: Path, key: dict[str, Any], converted: Converted) -> None:
    """Write atomically; remove this model's files for other settings, and leftovers of interrupted writes."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tensors = dict(converted.tensors)
    if converted.config.rope_freq_factors is not None:
        tensors["rope_freq_factors"] = converted.config.rope_freq_factors
    # A tied LM head kept unquantized is the embedding tensor itself: store it once.
    aliases, first = {}, {}
    for name in sorted(tensors):
        owner = first.setdefault((tensors[name].data_ptr(), tensors[name].dtype, tensors[name].shape), name)
        if owner != name:
            aliases[name] = owner
    tensors = {name: tensor.contiguous() for name, tensor in tensors.items() if name not in aliases}
    config = {k: v for k, v in dataclasses.asdict(converted.config).items() if k != "rope_freq_factors"}
    metadata = {
        "format": FORMAT,
        "key": json.dumps(key, sort_keys=True),
        "config": json.dumps(config, sort_keys=True),
        "tokenizer": json.dumps(_tokenizer_state(converted.tokenizer), sort_keys=True),
        "aliases": json.dumps(aliases, sort_keys=True),
    }
    metadata["digest"] = _digest(metadata, tensors)
    for other in file.parent.iterdir():
        if other != file and (not other.name.endswith(".partial") or not _writer_alive(other)):
            other.unlink(missing_ok=True)
    partial = file.with_name(f"{file.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, str(partial), metadata=metadata)
        os.replace(partial, file)
    finally:
        partial.unlink(missing_ok=True)


def _writer_alive(partial: Path) -> bool:
    try:
        os.kill(int(partial.name.rsplit(".", 2)[-2]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _digest(metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(json.dumps({k: v for k, v in metadata.items() if k != "digest"}, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)}".encode())
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def _config_from(raw: dict[str, Any], rope_freq_factors: torch.Tensor | None) -> ModelConfig:
    return ModelConfig(**raw, rope_freq_factors=rope_freq_factors)


def _tokenizer_state(tokenizer: TextTokenizer) -> dict[str, Any]:
    return {
        "tokenizer": tokenizer.tokenizer.to_str(),
        "chat_template": tokenizer.chat_template,
        "stop_token_ids": sorted(tokenizer.stop_token_ids),
        "special_tokens": tokenizer.special_tokens,
        "add_bos_id": tokenizer.add_bos_id,
    }


def _tokenizer_from(state: dict[str, Any]) -> TextTokenizer:
    return TextTokenizer(
        Tokenizer.from_str(state["tokenizer"]),
        state["chat_template"],
        set(state["stop_token_ids"]),
        state["special_tokens"],
        state["add_bos_id"],
    )
