"""A character-level tokenizer saved as a real ``PreTrainedTokenizerFast`` with a chat template.

Every printable ASCII character and the newline is one token; ``\\boxed{`` is one added token
(the testbed's answer marker); role markers and the end-of-turn token are special tokens.
The chat template renders ``<|user|>37+48*3-9<|end|><|assistant|>``; a completion ends with
``<|end|>``, which is also the EOS token.
"""

from __future__ import annotations

from pathlib import Path

PAD, EOS, UNK = "<|pad|>", "<|end|>", "<|unk|>"
ROLES = ("<|system|>", "<|user|>", "<|assistant|>")
BOX = "\\boxed{"
CHARS = ["\n"] + [chr(c) for c in range(32, 127)]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def build_tokenizer():
    """Build the testbed tokenizer (a ``transformers.PreTrainedTokenizerFast``)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, EOS, UNK, *ROLES]
    vocab = {tok: i for i, tok in enumerate(specials + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=list(ROLES),
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    tok.add_tokens([BOX])  # one token for the answer marker, decoded as text
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_tokenizer(path: str | Path):
    tok = build_tokenizer()
    tok.save_pretrained(str(path))
    return tok
