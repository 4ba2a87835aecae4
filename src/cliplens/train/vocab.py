"""Word-level vocabularies: building one for a new model, and giving a fine-tuned model the words it lacks.

A word-level tokenizer (the demo model's, and every model cliplens trains from scratch) maps a word it
has never seen to ``<unk>``. Fine-tuning on captions with new words first gives each its own id: one of
the vocabulary's *spare slots* (``<spare0>``, ``<spare1>``, ...: entries no text can reach, reserved as
BERT reserves ``[unused]`` tokens) while any are left, else a row appended to the embedding. A new word's
row starts as a copy of the ``<unk>`` row, so the model about to be fine-tuned reads every text exactly
as the original did; that starting point is also what weight-space ensembling interpolates from (see
:func:`align_token_embedding`), and spare slots let a LoRA adapter train new words without resizing the
base model it is applied to.
"""

from __future__ import annotations

import re

import torch

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")  # eos must not be id 2: transformers' legacy CLIP pooling
SPARE_SLOTS = 64
SPARE = re.compile(r"<spare\d+>")


def _fast_tokenizer(backend, like=None, context_length: int | None = None):
    from transformers import PreTrainedTokenizerFast

    if like is None:
        return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                       unk_token="<unk>", model_max_length=context_length)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=like.bos_token, eos_token=like.eos_token,
                                   pad_token=like.pad_token, unk_token=like.unk_token,
                                   model_max_length=like.model_max_length)


def build_word_tokenizer(captions: list[str], context_length: int, spare: int = SPARE_SLOTS):
    """A lower-cased word-level tokenizer over the captions' vocabulary, with ``spare`` slots for words a
    later fine-tune brings, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(captions, trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS)))
    _add_spare(tok, spare)
    bos, eos = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", bos), ("<eos>", eos)]
    )
    return _fast_tokenizer(tok, context_length=context_length)


def _add_spare(backend, spare: int) -> None:
    from tokenizers import models

    vocab = backend.get_vocab(with_added_tokens=False)
    first = max(vocab.values()) + 1
    vocab.update({f"<spare{i}>": first + i for i in range(spare)})  # "<" splits off: no text reaches them
    backend.model = models.WordLevel(vocab, unk_token="<unk>")


def with_spare_slots(model, tokenizer, spare: int = SPARE_SLOTS):
    """A word-level model and tokenizer given ``spare`` slots (rows copied from ``<unk>``); it reads every
    text exactly as before. How the bundled demo model got its slots."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    _add_spare(backend, spare)
    extended = _fast_tokenizer(backend, like=tokenizer)
    align_token_embedding(model, tokenizer, extended)
    return extended


def is_word_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and type(backend.model).__name__ == "WordLevel"


def caption_words(tokenizer, captions: list[str]) -> list[str]:
    """The distinct words of the captions as a word-level tokenizer splits them, in first-seen order."""
    backend = tokenizer.backend_tokenizer
    normalise = backend.normalizer.normalize_str if backend.normalizer is not None else (lambda text: text)
    return list(dict.fromkeys(w for c in captions for w, _ in backend.pre_tokenizer.pre_tokenize_str(normalise(c))))


def spare_ids(tokenizer) -> list[int]:
    """The ids of a word-level vocabulary's unused spare slots, lowest first."""
    if not is_word_level(tokenizer):
        return []
    return sorted(i for w, i in tokenizer.backend_tokenizer.get_vocab(with_added_tokens=False).items()
                  if SPARE.fullmatch(w))


def new_words(tokenizer, captions: list[str]) -> list[str]:
    """The captions' words a word-level tokenizer does not know (none for BPE and SentencePiece tokenizers)."""
    if not is_word_level(tokenizer):
        return []
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=False)
    return [w for w in caption_words(tokenizer, captions) if w not in vocab]


def with_words(tokenizer, words: list[str]):
    """A copy of a word-level tokenizer that knows ``words`` too: spare slots first, then new ids at the end."""
    from tokenizers import Tokenizer, models

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    vocab = backend.get_vocab(with_added_tokens=False)
    by_id = {i: w for w, i in vocab.items()}
    slots = spare_ids(tokenizer)
    for n, word in enumerate(words):
        if n < len(slots):
            del vocab[by_id[slots[n]]]
            vocab[word] = slots[n]
        else:
            vocab[word] = len(by_id) + n - len(slots)
    backend.model = models.WordLevel(vocab, unk_token=tokenizer.unk_token)
    return _fast_tokenizer(backend, like=tokenizer)


def vocab_size(tokenizer) -> int:
    """Rows the token embedding needs: the highest id the tokenizer can give, plus one."""
    return max(tokenizer.get_vocab().values()) + 1


def token_embedding(model) -> torch.nn.Embedding:
    """The text tower's token embedding (CLIP's ``text_model.embeddings.token_embedding``, else the model's own)."""
    text = getattr(model, "text_model", model)
    embeddings = getattr(text, "embeddings", None)
    found = getattr(embeddings, "token_embedding", None) or getattr(embeddings, "word_embeddings", None)
    return found if found is not None else text.get_input_embeddings()


def _set_token_embedding(model, embedding: torch.nn.Embedding) -> None:
    embeddings = getattr(model, "text_model", model).embeddings
    name = "token_embedding" if hasattr(embeddings, "token_embedding") else "word_embeddings"
    setattr(embeddings, name, embedding)


def align_token_embedding(model, old_tokenizer, new_tokenizer) -> list[int]:
    """Make ``model`` (whose rows follow ``old_tokenizer``) read ids of ``new_tokenizer``: a token both know
    keeps its row, a token only the new one knows gets the ``<unk>`` row (the row the old tokenizer sent it
    to); the embedding grows or shrinks to the new vocabulary. Returns the ids whose rows were set from
    ``<unk>``. Tokenizers with equal vocabularies leave the model as it is."""
    old_vocab, new_vocab = old_tokenizer.get_vocab(), new_tokenizer.get_vocab()
    if old_vocab == new_vocab:
        return []
    old = token_embedding(model)
    unk = old_vocab.get(old_tokenizer.unk_token) if old_tokenizer.unk_token is not None else None
    size = vocab_size(new_tokenizer)
    fresh = []
    with torch.no_grad():
        default = old.weight[unk] if unk is not None else old.weight.mean(0)
        weight = default.expand(size, -1).clone()
        for word, i in new_vocab.items():
            if word in old_vocab and old_vocab[word] < old.num_embeddings:  # an unused spare slot too
                weight[i] = old.weight[old_vocab[word]]
            else:
                fresh.append(i)
    embedding = torch.nn.Embedding(size, old.embedding_dim, dtype=old.weight.dtype, device=old.weight.device,
                                   padding_idx=old.padding_idx)
    with torch.no_grad():
        embedding.weight.copy_(weight)
    _set_token_embedding(model, embedding)
    text_config = getattr(model.config, "text_config", model.config)
    text_config.vocab_size = size
    return sorted(fresh)


def extend_word_vocab(model, tokenizer, captions: list[str]):
    """Give a word-level tokenizer the captions' new words and the model rows for them (see the module's note).

    Returns the new tokenizer and the new words; other tokenizers (BPE, SentencePiece) cover any text and
    are returned unchanged with no new words.
    """
    words = new_words(tokenizer, captions)
    if not words:
        return tokenizer, []
    extended = with_words(tokenizer, words)
    align_token_embedding(model, tokenizer, extended)
    return extended, words
