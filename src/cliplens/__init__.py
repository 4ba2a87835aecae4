"""cliplens: CLIP-family image–text models for classification, captions, search, ranking and evaluation.

The public API below is what the command line, the HTTP service and the web page use.
"""

from __future__ import annotations

from .classify import Classification, LabelScore, classify
from .embed import ImageEmbeddings, embed_images, embed_texts, write_image_embeddings, write_text_embeddings
from .errors import CliplensError, DataError, ImageLoadError, ModelLoadError, ModelNotFoundError, UsageError
from .images import expand_paths, load_image
from .models import (
    DEFAULT_MODEL, Encoder, ImagePreprocessor, ModelInfo, TextTruncatedWarning, list_models, load_model,
    release_models, resolve_model_dir,
)
from .scores import cosine, label_probabilities

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL", "Classification", "CliplensError", "DataError", "Encoder", "ImageEmbeddings",
    "ImageLoadError", "ImagePreprocessor", "LabelScore", "ModelInfo", "ModelLoadError", "ModelNotFoundError",
    "TextTruncatedWarning", "UsageError", "__version__", "classify", "cosine", "embed_images", "embed_texts",
    "expand_paths", "label_probabilities", "list_models", "load_image", "load_model", "release_models",
    "resolve_model_dir", "write_image_embeddings", "write_text_embeddings",
]
