"""A style index: an encoder plus every artist's published prototype (and optionally artwork
embeddings), saved as JSON + npz (no pickle), queried by cosine similarity."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from fedstyle_secure.data.images import content_key
from fedstyle_secure.errors import ModelError
from fedstyle_secure.files import read_json_bounded, write_bytes_atomic
from fedstyle_secure.models.embed import embed_views, normalise_rows
from fedstyle_secure.models.factory import EncoderConfig, load_encoder, save_encoder
from fedstyle_secure.models.heads import StyleModel
from fedstyle_secure.models.inputs import TEST_TIME_VIEWS, build_input_bank
from fedstyle_secure.models.npz import read_npz, require_finite

INDEX_FORMAT = "fedstyle-index/1"
#: The fields of ``index.json`` (``test_time_views`` is 0 when absent, as in indexes written before it).
INDEX_FIELDS = frozenset({"format", "artists", "artwork_sources", "test_time_views"})
MAX_TEST_TIME_VIEWS = 16  # a loaded index may not ask for more views per query image
MAX_INDEX_BYTES = 1024 * 1024 * 1024  # an index's arrays, loaded (1 M artworks of 128 floats: 0.5 GB)
MAX_INDEX_JSON_BYTES = 256 * 1024 * 1024  # index.json: names and sources of 1 M artworks at ~200 bytes each


@dataclass(frozen=True)
class RankedArtist:
    artist: str
    score: float  # cosine similarity in [-1, 1]


@dataclass
class StyleIndex:
    """``prototypes (A, D)`` unit rows, one per name in ``artists``.  ``test_time_views``: augmented views
    averaged with each image's original when it is embedded (:func:`embed_views`); the prototypes were
    computed the same way (0 in an index saved before view averaging)."""

    artists: tuple[str, ...]
    prototypes: np.ndarray
    model: StyleModel
    config: EncoderConfig
    artwork_embeddings: np.ndarray | None = None
    artwork_labels: np.ndarray | None = None
    artwork_sources: tuple[str, ...] = ()
    test_time_views: int = TEST_TIME_VIEWS

    def embed_images(self, images: np.ndarray, cache_dir: Path | None = None) -> np.ndarray:
        """Embeddings of ``(N, S, S, 3)`` uint8 images with the index's encoder, averaged over the
        original and ``test_time_views`` augmented views (each a pure function of the image's content).
        ``cache_dir``: a feature cache to read and fill (artworks the platform already holds; never
        for buyers' images, which nothing stores)."""
        keys = [content_key(image) for image in images]
        bank = build_input_bank(images, keys, self.config.backbone, self.test_time_views, cache_dir=cache_dir)
        return embed_views(self.model, bank, views=self.test_time_views)

    def rank(self, embedding: np.ndarray, top_k: int) -> list[RankedArtist]:
        scores = normalise_rows(self.prototypes) @ (embedding / max(np.linalg.norm(embedding), 1e-12))
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [RankedArtist(self.artists[i], float(scores[i])) for i in order]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_encoder(self.model, self.config, directory)
        arrays = {"prototypes": self.prototypes.astype(np.float32)}
        if self.artwork_embeddings is not None:
            arrays["artwork_embeddings"] = self.artwork_embeddings.astype(np.float32)
            arrays["artwork_labels"] = np.asarray(self.artwork_labels, dtype=np.int64)
        np.savez(directory / "index.npz", **cast(dict[str, Any], arrays))  # keywords name arrays, not options
        meta = {
            "format": INDEX_FORMAT,
            "artists": list(self.artists),
            "artwork_sources": list(self.artwork_sources),
            "test_time_views": self.test_time_views,
        }
        # index.json marks a complete index: written last, atomically
        write_bytes_atomic(directory / "index.json", json.dumps(meta, indent=2).encode())

    @classmethod
    def load(cls, directory: Path) -> StyleIndex:
        """The index saved in ``directory``; :class:`ModelError` naming the file and field when anything
        is missing, malformed, non-finite, inconsistent or too large (an index may come from elsewhere)."""
        meta_path = directory / "index.json"
        if not meta_path.is_file():
            raise ModelError(f"{directory} is not a style index (no index.json); build one with `fedstyle index`")
        try:
            meta = read_json_bounded(meta_path, MAX_INDEX_JSON_BYTES)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read style index in {directory}: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise ModelError(f"{meta_path}: unknown format {found!r}")
        unknown = sorted(set(meta) - INDEX_FIELDS)
        if unknown:  # a misspelt field (``test_time_view``) would otherwise fall back to its default silently
            raise ModelError(f"{meta_path}: unknown field(s) {unknown[:5]}; expected {sorted(INDEX_FIELDS)}")
        views = meta.get("test_time_views", 0)
        if not isinstance(views, int) or isinstance(views, bool) or not 0 <= views <= MAX_TEST_TIME_VIEWS:
            raise ModelError(
                f"{meta_path}: test_time_views must be an integer in [0, {MAX_TEST_TIME_VIEWS}], got {views!r}"
            )
        artists = _names(meta.get("artists"), f"{meta_path}: artists", unique=True)
        sources = _names(meta.get("artwork_sources", []), f"{meta_path}: artwork_sources", unique=False)
        model, config = load_encoder(directory)
        arrays = read_npz(directory / "index.npz", MAX_INDEX_BYTES)
        prototypes = _rows(arrays, "prototypes", directory, len(artists), config.embedding_dim)
        if not np.all(np.linalg.norm(prototypes, axis=1) > 0):  # no direction: every query would score 0
            raise ModelError(f"{directory}/index.npz: prototypes holds a zero row")
        embeddings, labels = arrays.get("artwork_embeddings"), arrays.get("artwork_labels")
        if (embeddings is None) != (labels is None):
            raise ModelError(f"{directory}/index.npz: artwork_embeddings and artwork_labels come together")
        if embeddings is not None and labels is not None:
            embeddings = _rows(arrays, "artwork_embeddings", directory, None, config.embedding_dim)
            if labels.shape != (len(embeddings),) or labels.dtype.kind not in "iu":
                raise ModelError(f"{directory}/index.npz: artwork_labels must be {len(embeddings)} integers")
            if len(labels) and (labels.min() < 0 or labels.max() >= len(artists)):
                raise ModelError(f"{directory}/index.npz: artwork_labels must index the {len(artists)} artists")
        return cls(
            artists=artists,
            prototypes=prototypes,
            model=model,
            config=config,
            artwork_embeddings=embeddings,
            artwork_labels=labels,
            artwork_sources=sources,
            test_time_views=views,
        )


def _names(value: object, what: str, *, unique: bool) -> tuple[str, ...]:
    """A list of non-empty strings (distinct if ``unique``) from an index's JSON, else ModelError."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ModelError(f"{what} must be a list of non-empty strings")
    if not all(v.isprintable() for v in value):  # a query prints them: no terminal escapes or line breaks
        raise ModelError(f"{what} holds a name with control characters")
    if unique and len(set(value)) != len(value):
        raise ModelError(f"{what} lists a name twice")
    return tuple(value)


def _rows(arrays: dict[str, np.ndarray], name: str, directory: Path, count: int | None, width: int) -> np.ndarray:
    """Array ``name`` of an index: finite float rows of the encoder's ``width`` (``count`` of them if given)."""
    what = f"{directory}/index.npz: {name}"
    if name not in arrays:
        raise ModelError(f"{what} is missing")
    array = arrays[name]
    if array.ndim != 2 or array.dtype.kind != "f" or array.shape[1] != width:
        raise ModelError(f"{what} must be float rows of width {width} (the encoder's), got {array.dtype} {array.shape}")
    if count is not None and len(array) != count:
        raise ModelError(f"{what}: {len(array)} rows for {count} artists")
    require_finite(array, what)
    return array


def build_index(
    model: StyleModel,
    config: EncoderConfig,
    artists: tuple[str, ...],
    prototypes: np.ndarray,
    artwork_embeddings: np.ndarray | None = None,
    artwork_labels: np.ndarray | None = None,
    artwork_sources: tuple[str, ...] = (),
) -> StyleIndex:
    encoder_only = StyleModel(model.encoder, None, config.embedding_dim)
    return StyleIndex(
        artists=artists,
        prototypes=normalise_rows(prototypes),
        model=encoder_only.eval(),
        config=config,
        artwork_embeddings=artwork_embeddings,
        artwork_labels=artwork_labels,
        artwork_sources=artwork_sources,
    )
