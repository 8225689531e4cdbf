"""GGUF `llama` (SentencePiece) vocabularies: a tiny SentencePiece BPE model trained here, written to GGUF the way
llama.cpp's converter writes one (pieces, scores, token types), must encode and decode as SentencePiece itself does."""

from __future__ import annotations

import re

import pytest

spm = pytest.importorskip("sentencepiece")
gguf = pytest.importorskip("gguf")

from conftest import CORPUS  # noqa: E402
from lamina_inference_torch.tokenizer import load_tokenizer  # noqa: E402
from lamina_inference_torch.weights import read_gguf_metadata  # noqa: E402
from tokenizers.decoders import DecodeStream  # noqa: E402

USER_DEFINED = ["<|im_start|>", "<|im_end|>"]
TRAINING = [
    *CORPUS,
    "SentencePiece treats the input as a raw stream, spaces included: ▁ marks them.",
    "Numbers like 2026, 3.14159 and 1,000,000 split into digits.",
    "Über straße, déjà vu, façade, coöperate, señor, smörgåsbord.",
] * 5
TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces, double  spaces and a trailing one ",
    "numbers 12345, 3.14159 and 1,000,000",
    "unicode: café naïve Über straße 日本語 ✓ 🎉",
    "rare letters fall back to bytes: ᚠᚢᚦ Ω ₿ 𝔘",
    "tabs\tand\nnew\n\nlines",
    "x",
    "",
]


def train(folder, add_dummy_prefix: bool):
    prefix = folder / "spm"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=400,
        character_coverage=0.98,  # the rarest characters are left to byte fallback
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        add_dummy_prefix=add_dummy_prefix,
        user_defined_symbols=USER_DEFINED,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_file=f"{prefix}.model")


def write_vocabulary(path, processor, add_dummy_prefix: bool) -> None:
    """What llama.cpp's `_set_vocab_sentencepiece` writes: pieces, scores and token types, BOS/EOS/UNK ids."""
    types = gguf.TokenType
    pieces, scores, kinds = [], [], []
    for index in range(processor.get_piece_size()):
        piece = processor.id_to_piece(index)
        pieces.append(piece)
        scores.append(processor.get_score(index))
        if processor.is_unknown(index):
            kinds.append(types.UNKNOWN)
        elif processor.is_control(index):
            kinds.append(types.CONTROL)
        elif processor.is_byte(index):
            kinds.append(types.BYTE)
        elif processor.is_unused(index):
            kinds.append(types.UNUSED)
        elif piece in USER_DEFINED:
            kinds.append(types.USER_DEFINED)
        else:
            kinds.append(types.NORMAL)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(kinds)
    writer.add_bos_token_id(processor.bos_id())
    writer.add_eos_token_id(processor.eos_id())
    writer.add_unk_token_id(processor.unk_id())
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(add_dummy_prefix)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module", params=[True, False], ids=["space-prefix", "no-space-prefix"])
def vocabularies(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("spm")
    processor = train(folder, request.param)
    path = folder / "vocab-only.gguf"
    write_vocabulary(path, processor, request.param)
    return processor, load_tokenizer(path, read_gguf_metadata(path))


def test_encodes_and_decodes_as_sentencepiece_does(vocabularies):
    processor, ours = vocabularies
    byte_pieces = {i for i in range(processor.get_piece_size()) if processor.is_byte(i)}
    fell_back = False
    for text in TEXTS:
        expected = processor.encode(text)
        assert ours.encode(text) == expected, text
        assert ours.decode(expected) == processor.decode(expected) == text
        fell_back = fell_back or bool(byte_pieces & set(expected))
        # Token by token, as the engine streams: the pieces join up to the same text.
        stream = DecodeStream(skip_special_tokens=True)
        assert "".join(stream.step(ours.tokenizer, token) or "" for token in expected) == text, text
    assert fell_back, "no test text exercised byte fallback"


def test_special_tokens_split_the_text_as_llama_cpp_does(vocabularies):
    """A chat prompt: special tokens are matched whole, and each stretch of text between them is tokenized on its
    own, with its own space prefix where the vocabulary has one (llama.cpp's rule; SentencePiece, which never sees
    special tokens in text, would prefix only the start)."""
    processor, ours = vocabularies
    prompt = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    expected = []
    for part in re.split(f"({'|'.join(map(re.escape, USER_DEFINED))})", prompt):
        if part in USER_DEFINED:
            expected.append(processor.piece_to_id(part))
        elif part:
            expected += processor.encode(part)
    assert ours.encode(prompt) == expected
    assert ours.encode("<|im_end|>") == [processor.piece_to_id("<|im_end|>")]


def test_bos_and_stop_tokens_come_from_the_vocabulary(vocabularies):
    processor, ours = vocabularies
    assert ours.encode_prompt("Hello") == [processor.bos_id(), *processor.encode("Hello")]
    assert processor.eos_id() in ours.stop_token_ids
    assert ours.special_tokens["bos_token"] == "<s>" and ours.special_tokens["eos_token"] == "</s>"
