"""Artworks as arrays: image folders and decoding limits, synthetic artists, per-artist splits,
augmentations and the on-disk array cache.  Depends only on :mod:`fedstyle_secure.errors`.

Public API: :mod:`.images` (``load_image_folder``, ``ArtworkSet``, ``decode_image``),
:mod:`.split` (``split_per_artist``), :mod:`.synth` (``generate_artworks``), :mod:`.augment`,
:mod:`.array_cache` (``ArrayCache``).
"""
