"""Geometry-aware memory: keyframe bank, retrieval by co-visibility in the fused map, cache render.

Public API::

    from memory import GeometricMemory, MemoryConfig, render_cache, agreement
    scene = Scene(model, SceneConfig(...), memory=GeometricMemory(MemoryConfig(retrieval_rule="ours")))
    # or: scenes.factory.make_scene("procedural", memory=MemoryConfig(retrieval_rule="worldmem"))
"""

from memory.bank import GeometricMemory, MemoryConfig
from memory.cache import render_cache, render_map_cache
from memory.metrics import agreement

__all__ = ["GeometricMemory", "MemoryConfig", "agreement", "render_cache", "render_map_cache"]
