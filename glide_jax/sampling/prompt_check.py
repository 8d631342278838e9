"""What a sampling request says about its prompts before it runs: one warning line per prompt, at most.

A prompt can be accepted but read differently from what the user meant: empty,
made of words the model's vocabulary does not have, or longer than its text
context (the tail is cut off). Each prompt's problems are put into one message,
so the CLI prints one ``warning:`` line per prompt (through
:func:`glide_jax.errors.user_warnings`) rather than a Python warning with a
source line. The tokenizer's own :class:`~glide_jax.tokenizers.TokenTruncationWarning`
stays for code that calls a tokenizer directly; :func:`encoding_quietly` keeps it
from repeating what these messages already said.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator, List, Optional, Sequence

from glide_jax.tokenizers import TokenTruncationWarning


def _quoted(words: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(word) for word in words[:limit])
    return shown + (f" and {len(words) - limit} more" if len(words) > limit else "")


def _pieces(count: int) -> str:
    return f"{count} piece" + ("" if count == 1 else "s")


def prompt_message(prompt: str, tokenizer, text_ctx: Optional[int]) -> Optional[str]:
    """The one warning ``prompt`` deserves with this tokenizer and text context, or None.

    ``text_ctx`` is the number of tokens the model reads (None: no text input to overflow).
    """
    shown = prompt if len(prompt) <= 80 else prompt[:77] + "..."
    if not prompt.strip():
        return f"prompt {prompt!r} is empty: the image is sampled without a caption"
    count_unknown = getattr(tokenizer, "count_unknown", None)
    known, unknown_pieces = count_unknown(prompt) if count_unknown is not None else (1, 0)
    if unknown_pieces and not known:
        return (f"prompt {shown!r} has no word the model's vocabulary knows ({_pieces(unknown_pieces)} unknown): "
                "the image is sampled as if the caption were empty")
    n_tokens = len(tokenizer.encode(prompt)) if text_ctx else 0
    cut = f"its {n_tokens} tokens are cut to the first {text_ctx}" if text_ctx and n_tokens > text_ctx else ""
    unknown_words = getattr(tokenizer, "unknown_words", None)
    words = unknown_words(prompt) if unknown_words is not None else []
    if words:
        noun = "word" if len(words) == 1 else "words"
        message = (f"the model does not know the {noun} {_quoted(words)} of prompt {shown!r} (its vocabulary, "
                   "learnt from its training captions, does not have them); it reads them as letter fragments "
                   "it was not trained on, so they are ignored at best and drawn as noise at worst")
        if unknown_pieces:
            message += f" ({_pieces(unknown_pieces)} the model's vocabulary does not know)"
        return message + (f"; {cut}" if cut else "")
    if unknown_pieces:
        message = (f"prompt {shown!r} has {_pieces(unknown_pieces)} the model's vocabulary does not know; "
                   "the model reads each as one 'unknown' token")
        return message + (f"; {cut}" if cut else "")
    if cut:
        return f"prompt {shown!r} is too long for the model: {cut} (the rest of the prompt is ignored)"
    return None


def text_context(config) -> Optional[int]:
    """Tokens a diffusion model's text transformer reads, or None (no text input, or not a U-Net config)."""
    unet = getattr(config, "unet", None)
    return unet.text.text_ctx if unet is not None and unet.text.width else None


def prompt_messages(prompts: Sequence[str], tokenizer, text_ctx: Optional[int]) -> List[str]:
    """One message per distinct prompt that has a problem (see :func:`prompt_message`)."""
    messages = (prompt_message(prompt, tokenizer, text_ctx) for prompt in dict.fromkeys(prompts))
    return [message for message in messages if message is not None]


@contextlib.contextmanager
def encoding_quietly() -> Iterator[None]:
    """Within the block, tokenizers do not warn about cut prompts: :func:`prompt_messages` has said it once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TokenTruncationWarning)
        yield
