"""cliplens: CLIP-family image–text models for classification, captions, search, ranking and evaluation.

The public API below is what the command line, the HTTP service and the web page use. The package is
layered along the river of its data (inputs → models → text and vectors → answers → interfaces, with
the pure maths of ``scores`` and the ``files`` and ``errors`` every layer shares at its foot); the
layers are checked by the import-linter contract in ``pyproject.toml``.
"""

from __future__ import annotations

from .audit import AuditImages, AuditResult, ClassSet, audit, read_audit_images, read_class_set
from .calibrate import CalibrationRun, calibrate
from .caption import BankFit, Caption, CaptionLabel, Captioner, calibrate_bank, caption
from .classify import Classification, Classifier, LabelScore, classify
from .curate import PairScores, Ranking, clip_scores, copy_ranked, rank_images, rank_vectors
from .dream import (DEFAULT_GUIDANCE as DEFAULT_DREAM_GUIDANCE, GUIDANCE as DREAM_GUIDANCE, Dream,
                    check_options as check_dream_options, dream, save_gif)
from .errors import (CliplensError, DataError, ImageLoadError, ModelLoadError, ModelNotFoundError, OutputError,
                     UsageError)
from .evaluate import CaptionedSet, EvalResult, LabelledSet, evaluate, read_eval_dataset
from .files import atomic_write, check_output_file, check_output_folder, display_path
from .inputs.demo_data import DEMO_LABELS, NEW_SHAPE_LABELS, NEW_SHAPES, write_demo_data
from .inputs.demo_data import SHAPES as DEMO_SHAPES
from .inputs.images import expand_paths, load_image
from .inputs.pairs import Pair, read_pairs
from .inputs.ocr import TextRegion, cover_image_text, read_text
from .inputs.video import load_video_frame
from .inputs.wordlists import imagenet_classes, read_labels_file
from .models import (DEFAULT_MODEL, Encoder, ImagePreprocessor, ModelInfo, TextTruncatedWarning, list_models,
                     load_model, merge_lora, pull_model, release_models, resolve_model_dir)
from .reports import write_audit_report, write_eval_report, write_train_report
from .scores.calibration import CALIBRATION_FILE, Calibration
from .scores.probabilities import cosine, label_probabilities
from .text.banks import LabelBank, builtin_bank_names, default_bank_names, read_bank, resolve_banks
from .text.prompts import (DEFAULT_TEMPLATE, LabelWarning, TemplateSet, parse_template_sets, resolve_templates,
                           template_set_names)
from .vectors.batches import ImageEmbeddings, embed_images, embed_texts
from .vectors.layout import write_image_embeddings, write_text_embeddings

__version__ = "0.1.0"

# Loaded on first use, so that commands which need neither start faster: photo search (FAISS, SQLite) and
# training (torch, which the ONNX runtime never imports).
_LAZY = {
    "DuplicateGroup": "index", "IndexDamagedError": "index", "IndexRun": "index", "ModelMismatchError": "index",
    "PhotoIndex": "index", "SearchFilter": "index", "parse_position": "index",
    "SearchResult": "index", "update_index": "index", "search_index": "index", "index_errors": "index",
    "export_index": "index", "import_index": "index",
    "TrainConfig": "train", "TrainResult": "train", "train_model": "train", "check_train_config": "train",
}
_RENAMED = {"search_index": "search", "train_model": "train", "check_train_config": "check_config"}  # where the module's own name is the module's


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        module = import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, _RENAMED.get(name, name))
    raise AttributeError(f"module 'cliplens' has no attribute {name!r}")


__all__ = [
    # classification, calibration, captions
    "CALIBRATION_FILE", "Calibration", "CalibrationRun", "Classification", "Classifier", "LabelScore", "calibrate", "classify",
    "BankFit", "Caption", "CaptionLabel", "Captioner", "LabelBank", "builtin_bank_names", "calibrate_bank",
    "caption", "default_bank_names", "read_bank", "resolve_banks",
    # ranking, scoring, synthesis
    "PairScores", "Ranking", "clip_scores", "copy_ranked", "rank_images", "rank_vectors",
    "DEFAULT_DREAM_GUIDANCE", "DREAM_GUIDANCE", "Dream", "check_dream_options", "dream", "save_gif",
    # photo search
    "DuplicateGroup", "IndexDamagedError", "IndexRun", "ModelMismatchError", "PhotoIndex", "SearchFilter", "SearchResult",
    "export_index", "import_index", "index_errors", "parse_position", "search_index", "update_index",
    # evaluation and audits
    "AuditImages", "AuditResult", "CaptionedSet", "ClassSet", "EvalResult", "LabelledSet", "audit", "evaluate",
    "read_audit_images", "read_class_set", "read_eval_dataset", "write_audit_report", "write_eval_report",
    # models, embeddings, prompts
    "DEFAULT_MODEL", "Encoder", "ImagePreprocessor", "ModelInfo", "TextTruncatedWarning", "list_models",
    "load_model", "merge_lora", "pull_model", "release_models", "resolve_model_dir",
    "ImageEmbeddings", "embed_images", "embed_texts", "write_image_embeddings", "write_text_embeddings",
    "DEFAULT_TEMPLATE", "LabelWarning", "TemplateSet", "cosine", "label_probabilities", "parse_template_sets",
    "resolve_templates", "template_set_names",
    # inputs and files
    "DEMO_LABELS", "DEMO_SHAPES", "NEW_SHAPES", "NEW_SHAPE_LABELS", "Pair", "expand_paths", "imagenet_classes", "load_image", "load_video_frame", "read_labels_file",
    "read_pairs", "TextRegion", "cover_image_text", "read_text",
    "write_demo_data", "atomic_write", "check_output_file", "check_output_folder", "display_path",
    # training
    "TrainConfig", "TrainResult", "check_train_config", "train_model", "write_train_report",
    # errors
    "CliplensError", "DataError", "ImageLoadError", "ModelLoadError", "ModelNotFoundError", "OutputError",
    "UsageError",
    "__version__",
]
