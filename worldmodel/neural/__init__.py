"""The learned world model: networks (net), their inputs (inputs), weights I/O (weights) and the WorldModel
that runs them (world). ``from worldmodel.neural import NeuralWorld`` works; torch is imported only then."""

from __future__ import annotations


def __getattr__(name: str):
    if name == "NeuralWorld":  # lazily: importing the package must not import torch
        from worldmodel.neural.world import NeuralWorld

        return NeuralWorld
    raise AttributeError(f"module 'worldmodel.neural' has no attribute {name!r}")


__all__ = ["NeuralWorld"]
