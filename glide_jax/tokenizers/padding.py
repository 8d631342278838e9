"""How tokenizers turn prompts into fixed-length rows: truncation warnings and GLIDE's padding mask.

Every tokenizer cuts a prompt that does not fit its context to the first
tokens that do, as the references do, but says so with a
:class:`TokenTruncationWarning` instead of silently.
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np

from glide_jax.errors import InputWarning


class TokenTruncationWarning(InputWarning):
    """A prompt had more tokens than the text context holds; the tail was dropped.

    An :class:`~glide_jax.errors.InputWarning`, so the command line prints it as one ``warning:`` line."""


def warn_truncated(n_tokens: int, limit: int, prompt: Optional[str] = None) -> None:
    """Warn that ``n_tokens`` tokens were cut to ``limit`` (naming the prompt if known)."""
    if prompt is None:
        subject = "a token sequence"
    else:
        shown = prompt if len(prompt) <= 80 else prompt[:77] + "..."
        subject = f"prompt {shown!r}"
    warnings.warn(
        f"{subject} has {n_tokens} tokens but only {limit} fit in the text context; "
        f"keeping the first {limit}",
        TokenTruncationWarning,
        stacklevel=3,
    )


def check_prompt_list(prompts: Sequence[str]) -> None:
    """Reject a bare string passed where a list of prompts is expected."""
    if isinstance(prompts, str):
        raise TypeError("encode_batch expects a sequence of prompts, not a single string")


class MaskPaddingMixin:
    """GLIDE's padding convention for a tokenizer with ``encode`` and ``pad_token``:
    fixed-length ids plus a boolean mask that is True on real tokens."""

    def padded_tokens_and_mask(
        self, tokens: Sequence[int], text_ctx: int, *, prompt: Optional[str] = None
    ) -> Tuple[List[int], List[bool]]:
        """``tokens`` cut or padded (with :attr:`pad_token`) to ``text_ctx``, and the mask
        that is True on real tokens. Cutting warns, naming ``prompt`` when given."""
        if len(tokens) > text_ctx:
            warn_truncated(len(tokens), text_ctx, prompt)
        kept = list(tokens[:text_ctx])
        padding = text_ctx - len(kept)
        return kept + [self.pad_token] * padding, [True] * len(kept) + [False] * padding

    def encode_batch(self, prompts: Sequence[str], text_ctx: int) -> Tuple[np.ndarray, np.ndarray]:
        """Encode and pad every prompt: int32 tokens ``[B, text_ctx]`` and bool mask ``[B, text_ctx]``."""
        check_prompt_list(prompts)
        tokens = np.empty((len(prompts), text_ctx), np.int32)
        mask = np.empty((len(prompts), text_ctx), bool)
        for row, prompt in enumerate(prompts):
            tokens[row], mask[row] = self.padded_tokens_and_mask(
                self.encode(prompt), text_ctx, prompt=prompt
            )
        return tokens, mask
