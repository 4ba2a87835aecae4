"""cliplens: CLIP-family image–text models for classification, captions, search, ranking and evaluation.

The public API below is what the command line, the HTTP service and the web page use.
"""

from __future__ import annotations

from .audit import AuditResult, ClassSet, audit, read_class_set
from .bank_calibration import BankFit, calibrate_bank
from .banks import LabelBank, builtin_bank_names, read_bank, resolve_banks
from .calibration import Calibration, CalibrationRun, calibrate
from .caption import Caption, CaptionLabel, Captioner, caption
from .classify import Classification, Classifier, LabelScore, classify
from .dream import Dream, dream
from .curate import PairScores, Ranking, clip_scores, copy_ranked, rank_images
from .embed import ImageEmbeddings, embed_images, embed_texts, write_image_embeddings, write_text_embeddings
from .evaluate import EvalResult, evaluate
from .errors import CliplensError, DataError, ImageLoadError, ModelLoadError, ModelNotFoundError, UsageError
from .images import expand_paths, load_image
from .models import (
    DEFAULT_MODEL, Encoder, ImagePreprocessor, ModelInfo, TextTruncatedWarning, list_models, load_model,
    release_models, resolve_model_dir,
)
from .prompts import DEFAULT_TEMPLATE, LabelWarning, read_labels_file, resolve_templates
from .reports import write_audit_report, write_eval_report
from .scores import cosine, label_probabilities

__version__ = "0.1.0"

# Photo search (FAISS, SQLite) loads on first use, so commands that do not search start faster.
_INDEX_API = {"DuplicateGroup", "IndexRun", "ModelMismatchError", "PhotoIndex", "SearchResult", "update_index",
              "search_index"}


def __getattr__(name: str):
    if name in _INDEX_API:
        from . import index

        return index.search if name == "search_index" else getattr(index, name)
    raise AttributeError(f"module 'cliplens' has no attribute {name!r}")

__all__ = [
    "AuditResult", "ClassSet", "EvalResult", "audit", "evaluate", "read_class_set", "write_audit_report",
    "write_eval_report", "Dream", "dream",
    "BankFit", "Caption", "CaptionLabel", "Captioner", "LabelBank", "builtin_bank_names", "calibrate_bank", "caption",
    "read_bank", "resolve_banks",
    "PairScores", "Ranking", "clip_scores", "copy_ranked", "rank_images",
    "DuplicateGroup", "IndexRun", "ModelMismatchError", "PhotoIndex", "SearchResult", "search_index", "update_index",
    "DEFAULT_MODEL", "DEFAULT_TEMPLATE", "Calibration", "CalibrationRun", "Classification", "Classifier", "CliplensError", "DataError", "Encoder", "ImageEmbeddings",
    "ImageLoadError", "ImagePreprocessor", "LabelScore", "LabelWarning", "ModelInfo", "ModelLoadError", "ModelNotFoundError",
    "TextTruncatedWarning", "UsageError", "__version__", "calibrate", "classify", "cosine", "embed_images", "embed_texts",
    "expand_paths", "label_probabilities", "list_models", "load_image", "load_model", "read_labels_file", "release_models",
    "resolve_model_dir", "resolve_templates", "write_image_embeddings", "write_text_embeddings",
]
