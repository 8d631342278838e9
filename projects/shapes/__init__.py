"""The embedded captioned-shapes models: their configs, evaluation, relation probe, restating and export.

See ``projects/shapes/README.md`` for what the models are, how each shipped
model is reproduced and what they reach.
"""
