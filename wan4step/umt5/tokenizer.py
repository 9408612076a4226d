"""UMT5's sentencepiece tokenizer with Wan2.1's prompt cleaning.

Wan2.1 (and LightX2V) tokenize `whitespace_clean(basic_clean(text))`
(ftfy.fix_text, html.unescape twice, strip, runs of whitespace -> one space),
append `</s>` (id 1), truncate to 512 and pad with `<pad>` (id 0). The
sentencepiece model comes from, in order: a folder the user picked, the
checkpoint itself (Comfy-Org files embed `spiece_model`; llama.cpp GGUFs carry
the vocabulary as metadata), or a `google/umt5-xxl` folder beside the file
(how LightX2V ships it).

sentencepiece models are protobuf messages; the few fields needed to rebuild
one from GGUF metadata (and to read one back for the tiny GGUF writer) are
encoded by hand below, so no `protobuf` package is needed.
"""

from __future__ import annotations

import html
import logging
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import FormatError, MissingFileError, WrongModelError
from .model import WAN_TEXT_LEN

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2  # T5 / UMT5 convention
TOKENIZER_SUBDIRS = ("google/umt5-xxl", "umt5-xxl", "umt5_xxl", "tokenizer", ".")
SPIECE_FILE = "spiece.model"
TOKENIZER_FIX = (
    "download spiece.model from the 'google/umt5-xxl' folder of the LightX2V model repo "
    "(or huggingface.co/google/umt5-xxl) into ComfyUI/models/text_encoders/google/umt5-xxl/, "
    "then pick it in the node's 'tokenizer' input (or leave 'auto')."
)


_warned_ftfy: list[bool] = []


def clean_text(text: str) -> str:
    """Wan2.1's prompt cleaning (`whitespace_clean(basic_clean(text))`).

    ftfy (a requirement) only repairs mojibake; where an install lacks it, prompts are used as
    typed (the same tokens for any correctly encoded text) with one warning, never a failed job."""
    try:
        import ftfy
    except ImportError:
        if not _warned_ftfy:
            _warned_ftfy.append(True)
            logging.getLogger("wan4step").warning(
                "wan4step: the 'ftfy' package is missing (pip install ftfy); prompts are not repaired for "
                "mojibake, which changes nothing for correctly encoded text")
    else:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


# -- minimal protobuf (sentencepiece ModelProto) ------------------------------------------
# ModelProto: pieces=1 {piece=1 str, score=2 float, type=3 enum}, trainer_spec=2, normalizer_spec=3.
# TrainerSpec: model_type=3, vocab_size=4, byte_fallback=35, unk_id=40, bos_id=41, eos_id=42, pad_id=43.
# NormalizerSpec: name=1, precompiled_charsmap=2, add_dummy_prefix=3, remove_extra_whitespaces=4,
# escape_whitespaces=5.  Piece types: 1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE
# (llama.cpp's GGUF token types use the same numbers).


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32 -> 10-byte two's complement, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(num: int, wire: int) -> bytes:
    return _varint(num << 3 | wire)


def _len_field(num: int, payload: bytes) -> bytes:
    return _key(num, 2) + _varint(len(payload)) + payload


def _parse(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    out, i = [], 0
    while i < len(buf):
        tag, i = _read_varint(buf, i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            val, i = _read_varint(buf, i)
        elif wire == 2:
            n, i = _read_varint(buf, i)
            val, i = buf[i:i + n], i + n
        elif wire == 5:
            val, i = buf[i:i + 4], i + 4
        elif wire == 1:
            val, i = buf[i:i + 8], i + 8
        else:
            raise FormatError(f"not a sentencepiece model (protobuf wire type {wire})")
        out.append((num, wire, val))
    return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        if i >= len(buf):
            raise FormatError("not a sentencepiece model (truncated protobuf)")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _int32(n: int) -> int:
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >= 1 << 63 else n


@dataclass
class SpieceSpec:
    """The parts of a sentencepiece model that GGUF metadata can carry."""

    pieces: list[tuple[str, float, int]]
    precompiled_charsmap: bytes = b""
    normalizer_name: str = "identity"
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True
    unk_id: int = UNK_ID
    bos_id: int = -1
    eos_id: int = EOS_ID
    pad_id: int = PAD_ID
    byte_fallback: bool = False

    def serialize(self) -> bytes:
        out = bytearray()
        for piece, score, typ in self.pieces:
            body = _len_field(1, piece.encode("utf-8")) + _key(2, 5) + struct.pack("<f", score) + _key(3, 0) + _varint(typ)
            out += _len_field(1, body)
        trainer = (_key(3, 0) + _varint(1) + _key(4, 0) + _varint(len(self.pieces))
                   + _key(35, 0) + _varint(int(self.byte_fallback))
                   + _key(40, 0) + _varint(self.unk_id) + _key(41, 0) + _varint(self.bos_id)
                   + _key(42, 0) + _varint(self.eos_id) + _key(43, 0) + _varint(self.pad_id))
        out += _len_field(2, trainer)
        norm = _len_field(1, self.normalizer_name.encode())
        if self.precompiled_charsmap:
            norm += _len_field(2, self.precompiled_charsmap)
        norm += (_key(3, 0) + _varint(int(self.add_dummy_prefix)) + _key(4, 0) + _varint(int(self.remove_extra_whitespaces))
                 + _key(5, 0) + _varint(int(self.escape_whitespaces)))
        out += _len_field(3, norm)
        return bytes(out)

    @classmethod
    def parse(cls, proto: bytes) -> SpieceSpec:
        spec = cls(pieces=[])
        for num, _wire, val in _parse(proto):
            if num == 1:
                piece, score, typ = "", 0.0, 1
                for n2, _w2, v2 in _parse(val):
                    if n2 == 1:
                        piece = v2.decode("utf-8")
                    elif n2 == 2:
                        score = struct.unpack("<f", v2)[0]
                    elif n2 == 3:
                        typ = v2
                spec.pieces.append((piece, score, typ))
            elif num == 2:
                ids = {40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}
                for n2, _w2, v2 in _parse(val):
                    if n2 in ids:
                        setattr(spec, ids[n2], _int32(v2))
                    elif n2 == 35:
                        spec.byte_fallback = bool(v2)
            elif num == 3:
                for n2, _w2, v2 in _parse(val):
                    if n2 == 1:
                        spec.normalizer_name = v2.decode()
                    elif n2 == 2:
                        spec.precompiled_charsmap = bytes(v2)
                    elif n2 == 3:
                        spec.add_dummy_prefix = bool(v2)
                    elif n2 == 4:
                        spec.remove_extra_whitespaces = bool(v2)
                    elif n2 == 5:
                        spec.escape_whitespaces = bool(v2)
        return spec


def spiece_from_gguf(meta: dict, path: Path | None = None) -> bytes:
    """Rebuild the sentencepiece model llama.cpp's converter stored as GGUF metadata."""
    if meta.get("model") not in (None, "t5"):
        raise WrongModelError(f"the GGUF's tokenizer is of kind {meta.get('model')!r}", path=path,
                              expected="a T5 (sentencepiece unigram) tokenizer", fix=TOKENIZER_FIX)
    tokens, scores, types = meta["tokens"], meta.get("scores"), meta.get("token_type")
    scores = scores or [0.0] * len(tokens)
    types = types or [1] * len(tokens)
    if not (len(tokens) == len(scores) == len(types)):
        raise FormatError("the GGUF's tokenizer metadata is inconsistent", path=path,
                          found=f"{len(tokens)} tokens, {len(scores)} scores, {len(types)} token types", fix=TOKENIZER_FIX)
    charsmap = meta.get("precompiled_charsmap") or b""
    spec = SpieceSpec(
        pieces=[(t, float(s), int(k)) for t, s, k in zip(tokens, scores, types, strict=True)],
        precompiled_charsmap=bytes(charsmap),
        normalizer_name="nmt_nfkc" if charsmap else "identity",
        add_dummy_prefix=bool(meta.get("add_space_prefix", True)),
        remove_extra_whitespaces=bool(meta.get("remove_extra_whitespaces", True)),
        unk_id=int(meta["unknown_token_id"]) if meta.get("unknown_token_id") is not None else UNK_ID,
        eos_id=int(meta["eos_token_id"]) if meta.get("eos_token_id") is not None else EOS_ID,
        pad_id=int(meta["padding_token_id"]) if meta.get("padding_token_id") is not None else PAD_ID,
        bos_id=-1,
    )
    return spec.serialize()


# -- the tokenizer -------------------------------------------------------------------------


class UMT5Tokenizer:
    """Cleaned text -> sentencepiece ids + `</s>`, truncated/padded to `length` (512)."""

    def __init__(self, model_proto: bytes, source: str = "memory", clean: bool = True) -> None:
        import sentencepiece

        self.model_proto = bytes(model_proto)
        self.source = source
        self.clean = clean
        try:
            self.sp = sentencepiece.SentencePieceProcessor(model_proto=self.model_proto)
        except (RuntimeError, OSError) as exc:
            raise FormatError("the tokenizer is not a valid sentencepiece model", path=source,
                              found=str(exc)[:160], fix=TOKENIZER_FIX) from None
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else EOS_ID
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else PAD_ID

    @property
    def num_pieces(self) -> int:
        return self.sp.get_piece_size()

    def ids(self, text: str, length: int = WAN_TEXT_LEN) -> list[int]:
        text = clean_text(text) if self.clean else text
        return self.sp.encode(text)[: length - 1] + [self.eos_id]

    def __call__(self, texts: str | Sequence[str], length: int = WAN_TEXT_LEN) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [B, length] long, mask [B, length] long) as Wan's HF tokenizer returns them."""
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), length), dtype=torch.long)
        for i, t in enumerate(texts):
            row = self.ids(t, length)
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask

    def check_vocab(self, vocab_size: int, model_path: Path | str | None = None) -> None:
        if self.num_pieces > vocab_size:
            raise WrongModelError(
                f"the tokenizer has {self.num_pieces} pieces but the model's embedding has only {vocab_size} rows",
                path=model_path,
                expected=f"a tokenizer of at most {vocab_size} pieces (UMT5: google/umt5-xxl, 256300 pieces)",
                found=f"tokenizer from {self.source}",
                fix="the tokenizer belongs to another model; " + TOKENIZER_FIX,
            )


def read_tokenizer_dir(folder: str | Path) -> bytes:
    folder = Path(folder)
    spm = folder / SPIECE_FILE
    if spm.is_file():
        return spm.read_bytes()
    has_json = (folder / "tokenizer.json").is_file()
    raise MissingFileError(
        f"no {SPIECE_FILE} in the tokenizer folder",
        path=folder,
        expected=f"{folder / SPIECE_FILE} (the sentencepiece model of google/umt5-xxl)",
        found="only tokenizer.json (a fast-tokenizer export without the sentencepiece model)" if has_json
        else ("an empty or missing folder" if not folder.is_dir() else ", ".join(sorted(p.name for p in folder.iterdir())[:6]) or "nothing"),
        fix=TOKENIZER_FIX,
    )


def find_tokenizer_dir(model_path: str | Path) -> Path | None:
    """A `google/umt5-xxl`-style folder beside the model file (or one level up)."""
    model_path = Path(model_path)
    for base in (model_path.parent, model_path.parent.parent):
        for sub in TOKENIZER_SUBDIRS:
            if (base / sub / SPIECE_FILE).is_file():
                return base / sub
    return None


def resolve_tokenizer(model_path: str | Path, *, folder: str | Path | None = None, embedded: bytes | None = None,
                      gguf_meta: dict | None = None, vocab_size: int | None = None) -> UMT5Tokenizer:
    """Pick the tokenizer: an explicit folder, else the file's own, else a folder beside it."""
    if folder is not None:
        tok = UMT5Tokenizer(read_tokenizer_dir(folder), source=str(folder))
    elif embedded is not None:
        tok = UMT5Tokenizer(embedded, source=f"{Path(model_path).name} (embedded spiece_model)")
    elif gguf_meta is not None:
        tok = UMT5Tokenizer(spiece_from_gguf(gguf_meta, Path(model_path)), source=f"{Path(model_path).name} (GGUF metadata)")
    else:
        found = find_tokenizer_dir(model_path)
        if found is None:
            model_path = Path(model_path)
            raise MissingFileError(
                "no tokenizer for this text encoder",
                path=model_path,
                expected=f"a tokenizer inside the file (Comfy-Org files embed one) or "
                f"{model_path.parent / 'google' / 'umt5-xxl' / SPIECE_FILE} beside it",
                found="neither",
                fix=TOKENIZER_FIX,
            )
        tok = UMT5Tokenizer(read_tokenizer_dir(found), source=str(found))
    if vocab_size is not None:
        tok.check_vocab(vocab_size, model_path)
    return tok
