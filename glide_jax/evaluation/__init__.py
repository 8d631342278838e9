"""Grading generated samples: :mod:`.shapes_eval` scores captioned-shapes images against their captions
(numpy only); :mod:`.run_shapes` samples a pipeline on shapes prompts and aggregates those scores."""
