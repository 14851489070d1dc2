"""Callbacks of our own, mirroring fastai.callback.*: each exists because fastai's lacks something named in it."""
