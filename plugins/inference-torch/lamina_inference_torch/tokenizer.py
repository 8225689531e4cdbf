"""Tokenizer, chat template and stop tokens, from a Hugging Face folder or from GGUF metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

# Tokens that end an assistant turn in the chat templates of the Llama-family models we know.
_END_OF_TURN = {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>", "<end_of_turn>"}

# llama.cpp's GGUF token types.
_TOKEN_NORMAL, _TOKEN_UNKNOWN, _TOKEN_CONTROL, _TOKEN_USER_DEFINED = 1, 2, 3, 4

# Pre-tokenizer regexes llama.cpp associates with a `tokenizer.ggml.pre` name (same patterns as the HF tokenizers).
_LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass
class TextTokenizer:
    tokenizer: Tokenizer
    chat_template: str | None
    stop_token_ids: set[int]
    special_tokens: dict[str, str] = field(default_factory=dict)  # bos_token/eos_token/... -> text, for templates
    add_bos_id: int | None = None  # prepended to raw (non-chat) prompts when the model wants a BOS

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_prompt(self, text: str) -> list[int]:
        ids = self.encode(text)
        if self.add_bos_id is not None and (not ids or ids[0] != self.add_bos_id):
            ids.insert(0, self.add_bos_id)
        return ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special)

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, extra: dict[str, Any] | None = None
    ) -> str:
        if not self.chat_template:
            raise ValueError("this model has no chat template; use the completions endpoint")
        return render_chat_template(self.chat_template, messages, tools, self.special_tokens, extra)


def render_chat_template(
    template: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    special_tokens: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> str:
    """Render the way transformers' apply_chat_template does (same environment, globals and filters)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])

    def raise_exception(message: str) -> None:
        raise ValueError(f"chat template: {message}")

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render(
        messages=messages, tools=tools, add_generation_prompt=True, **special_tokens, **(extra or {})
    )


def load_tokenizer(path: Path, gguf_metadata: dict[str, Any] | None) -> TextTokenizer:
    folder = path if path.is_dir() else path.parent
    if path.is_dir() or gguf_metadata is None:
        return _from_folder(folder)
    return _from_gguf(gguf_metadata)


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def _from_folder(folder: Path) -> TextTokenizer:
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.exists():
        raise ValueError(f"{folder}: no tokenizer.json")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    config: dict[str, Any] = {}
    if (folder / "tokenizer_config.json").exists():
        config = json.loads((folder / "tokenizer_config.json").read_text())
    template = config.get("chat_template")
    if (folder / "chat_template.jinja").exists():
        template = (folder / "chat_template.jinja").read_text()
    if isinstance(template, list):  # named templates: take the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
    special = {
        key: _token_text(config[key])
        for key in ("bos_token", "eos_token", "unk_token", "pad_token")
        if _token_text(config.get(key)) is not None
    }
    stop_ids = _stop_ids(tokenizer, special.get("eos_token"))
    for gen_config in (folder / "generation_config.json", folder / "config.json"):
        if gen_config.exists():
            eos = json.loads(gen_config.read_text()).get("eos_token_id")
            stop_ids.update([eos] if isinstance(eos, int) else eos or [])
    bos = special.get("bos_token")
    add_bos = config.get("add_bos_token", False) and bos is not None
    return TextTokenizer(
        tokenizer, template, stop_ids, special, tokenizer.token_to_id(bos) if add_bos and bos else None
    )


def _stop_ids(tokenizer: Tokenizer, eos_token: str | None) -> set[int]:
    stop_ids = set()
    for token in _END_OF_TURN | ({eos_token} if eos_token else set()):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            stop_ids.add(token_id)
    return stop_ids


def _from_gguf(meta: dict[str, Any]) -> TextTokenizer:
    kind = meta.get("tokenizer.ggml.model")
    if kind not in ("gpt2", "llama"):
        raise ValueError(
            f"GGUF tokenizer model {kind!r} is not supported (byte-level BPE 'gpt2' and SentencePiece 'llama' are)"
        )
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    types: list[int] = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    if kind == "llama":
        tokenizer = _sentencepiece_tokenizer(tokens, list(meta["tokenizer.ggml.scores"]), types, meta)
    else:
        merges = [tuple(merge.split(" ", 1)) for merge in meta.get("tokenizer.ggml.merges", [])]
        vocab = {token: index for index, token in enumerate(tokens)}
        pre = meta.get("tokenizer.ggml.pre", "default")
        tokenizer = Tokenizer(models.BPE(vocab, merges, ignore_merges=pre in {"llama-bpe", "llama3"}))
        tokenizer.pre_tokenizer = _gguf_pre_tokenizer(pre)
        tokenizer.decoder = decoders.ByteLevel()
    added = [
        AddedToken(token, special=kind_ == _TOKEN_CONTROL, normalized=False)
        for token, kind_ in zip(tokens, types, strict=True)
        if kind_ in (_TOKEN_CONTROL, _TOKEN_USER_DEFINED)
    ]
    tokenizer.add_tokens(added)

    def token(key: str) -> str | None:
        index = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[index] if index is not None and 0 <= index < len(tokens) else None

    special = {f"{name}_token": token(name) for name in ("bos", "eos", "unknown", "padding") if token(name)}
    special = {key.replace("unknown", "unk").replace("padding", "pad"): value for key, value in special.items()}
    stop_ids = _stop_ids(tokenizer, special.get("eos_token"))
    for key in ("eos", "eot", "eom"):
        if meta.get(f"tokenizer.ggml.{key}_token_id") is not None:
            stop_ids.add(int(meta[f"tokenizer.ggml.{key}_token_id"]))
    add_bos = meta.get("tokenizer.ggml.add_bos_token", False) and "bos_token" in special
    return TextTokenizer(
        tokenizer,
        meta.get("tokenizer.chat_template"),
        stop_ids,
        special,
        int(meta["tokenizer.ggml.bos_token_id"]) if add_bos else None,
    )


def _gguf_pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre in {"llama-bpe", "llama3", "smaug-bpe", "dbrx"}:
        split = pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated")
        return pre_tokenizers.Sequence([split, byte_level])
    if pre in {"qwen2", "deepseek-r1-qwen"}:
        split = pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated")
        return pre_tokenizers.Sequence([split, byte_level])
    if pre in {"smollm", "starcoder", "refact"}:
        # SmolLM/StarCoder: every digit is its own token, then GPT-2's byte-level split.
        return pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    return pre_tokenizers.ByteLevel(add_prefix_space=False)


def _sentencepiece_tokenizer(
    tokens: list[str], scores: list[float], types: list[int], meta: dict[str, Any]
) -> Tokenizer:
    """A SentencePiece BPE vocabulary (llama.cpp's `llama` model: pieces, scores, types; `▁` for a space, `<0xXX>`
    byte pieces for what the vocabulary lacks) as a `tokenizers` BPE. SentencePiece merges the adjacent pair whose
    joined piece scores highest; a BPE whose merges are ranked by that score does the same."""
    vocab = {token: index for index, token in enumerate(tokens)}
    mergeable = {
        token: score for token, score, kind in zip(tokens, scores, types, strict=True) if kind == _TOKEN_NORMAL
    }
    merges = [
        (piece[:cut], piece[cut:])
        for piece in mergeable
        for cut in range(1, len(piece))
        if piece[:cut] in vocab and piece[cut:] in vocab
    ]
    merges.sort(key=lambda pair: (-mergeable[pair[0] + pair[1]], vocab[pair[0]], vocab[pair[1]]))
    unknown = next((token for token, kind in zip(tokens, types, strict=True) if kind == _TOKEN_UNKNOWN), None)
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token=unknown, fuse_unk=True, byte_fallback=True))
    add_space = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    # Spaces become `▁`; with a space prefix, each stretch of text between special tokens starts with one, as in
    # llama.cpp (and Hugging Face's Llama tokenizers), where SentencePiece itself prefixes only the whole input.
    space = normalizers.Replace(" ", "▁")
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), space]) if add_space else space
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tokenizer.decoder = decoders.Sequence([*steps, decoders.Strip(" ", 1, 0)] if add_space else steps)
    return tokenizer
