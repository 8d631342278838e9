"""Train a SentencePiece tokenizer on a caption file, for a GLIDE text encoder trained from scratch.

Usage: ``python -m tools.train_tokenizer --captions captions.txt --out tok/captions --vocab-size 16000``
writes ``tok/captions.model`` and ``tok/captions.vocab``; load the model with
``glide_jax.tokenizers.get_tokenizer("sentencepiece:tok/captions.model")``.
"""

import argparse

from glide_jax.tokenizers.spm import SentencePieceTokenizer, train_sentencepiece


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", required=True, help="UTF-8 text file, one caption per line")
    parser.add_argument("--out", required=True, help="output prefix; writes PREFIX.model and PREFIX.vocab")
    parser.add_argument("--vocab-size", type=int, required=True)
    parser.add_argument("--model-type", default="unigram", choices=["unigram", "bpe", "char", "word"])
    parser.add_argument("--keep-case", action="store_true", help="do not case-fold (GLIDE lower-cases)")
    parser.add_argument("--character-coverage", type=float, default=0.9995)
    parser.add_argument("--max-sentences", type=int, default=5_000_000, help="captions sampled for training")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    model_file = train_sentencepiece(
        args.captions,
        args.out,
        args.vocab_size,
        model_type=args.model_type,
        lowercase=not args.keep_case,
        character_coverage=args.character_coverage,
        max_sentences=args.max_sentences,
    )
    tokenizer = SentencePieceTokenizer(model_file)
    print(f"wrote {model_file} ({tokenizer.n_vocab} pieces, pad id {tokenizer.pad_token})")


if __name__ == "__main__":
    main()
