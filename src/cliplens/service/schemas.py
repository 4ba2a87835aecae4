"""Request and response bodies of the HTTP API, as pydantic models (they make the OpenAPI document).

Every image-taking endpoint reads either ``multipart/form-data`` (image files in ``image`` or
``images``, other fields as form fields, lists as repeated fields) or JSON with base64 images. The
``*Params`` models hold the fields both forms share; the JSON bodies add the base64 images.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from .. import DEFAULT_TEMPLATE

B64 = "base64 of the image file's bytes (a data: URL is accepted too)"

# Every list and every text in a request has a bound, so no one request can hold the model (or the memory)
# for long: each is met by a 422 naming the field. The service's own settings (max_labels, max_images)
# may lower the label and image counts further.
MAX_TEXT_CHARS = 1_000  # a label, prompt, query or text to embed (a model reads 64-77 tokens of it at most)
MAX_LABELS = 1_000
MAX_TEXTS = 256  # texts to embed in one request
MAX_NEGATIVES = 16
MAX_BANKS = 16
MAX_IMAGES = 64

Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassifyParams(_Strict):
    labels: list[Text] = Field(min_length=1, max_length=MAX_LABELS, description="Candidate labels (at least one).")
    template: Text = Field(DEFAULT_TEMPLATE, description="Prompt with {} for the label; 'none' for verbatim labels.")
    templates: Optional[Text] = Field(None, description="A named prompt ensemble instead: imagenet, imagenet-7 or none.")
    multi_label: bool = Field(False, description="Independent probability per label (several may fit).")
    ignore_text: bool = Field(False, description="Cover the text an OCR engine finds in the image before encoding it "
                                                 "(the defence against typographic attacks; needs the ocr extra).")


class ClassifyJson(ClassifyParams):
    image: str = Field(description=B64)


class CaptionParams(_Strict):
    banks: Optional[list[Text]] = Field(None, max_length=MAX_BANKS,
                                        description="Built-in bank names (default: the model's banks).")
    keep_typographic: bool = Field(False, description="Keep labels that look read from text in the image.")
    read_text: bool = Field(False, description="Read the text in the image with an OCR engine: a label written "
                                               "there is a typographic suspect (needs the ocr extra).")
    ignore_text: bool = Field(False, description="Also cover that text before encoding the image.")


class CaptionJson(CaptionParams):
    image: str = Field(description=B64)


class RankParams(_Strict):
    prompt: Text = Field(min_length=1, description="What the images should show.")
    negative: list[Text] = Field(default_factory=list, max_length=MAX_NEGATIVES, description="What they should not show.")
    top: Optional[int] = Field(None, ge=1, description="Keep the best N.")
    ignore_text: bool = Field(False, description="Cover the text an OCR engine finds in the image before encoding it "
                                                 "(the defence against typographic attacks; needs the ocr extra).")


class RankJson(RankParams):
    images: list[str] = Field(min_length=1, max_length=MAX_IMAGES, description="Images, " + B64)
    names: Optional[list[Text]] = Field(None, max_length=MAX_IMAGES, description="A name per image, echoed in the results.")


class EmbedParams(_Strict):
    texts: list[Text] = Field(default_factory=list, max_length=MAX_TEXTS, description="Texts to embed.")


class EmbedJson(EmbedParams):
    images: list[str] = Field(default_factory=list, max_length=MAX_IMAGES, description="Images, " + B64)
    names: Optional[list[Text]] = Field(None, max_length=MAX_IMAGES, description="A name per image, echoed in the results.")


class SearchParams(_Strict):
    query: Optional[Text] = Field(None, description='Text, or arithmetic on texts: "horse" + "stripes" - "brown".')
    top: int = Field(10, ge=1, le=1000, description="How many results (at most).")
    threshold: Optional[float] = Field(None, description="Only results whose score is at least this.")
    min_match: Optional[float] = Field(None, ge=0, le=1, description=(
        "Only images that show the query with at least this probability (a query of one text); a query that "
        "nothing shows then has no results, and near_miss names the closest."))
    after: Optional[Text] = Field(None, description="Only photos taken in or after this date: YYYY, YYYY-MM or "
                                                    "YYYY-MM-DD (the photo's own local time).")
    before: Optional[Text] = Field(None, description="Only photos taken in or before this date (as after).")
    camera: Optional[Text] = Field(None, description="Only photos from a camera whose make or model holds this "
                                                     "text (any case).")
    near: Optional[Text] = Field(None, description='Only photos taken near this place: "LAT,LON" in decimal '
                                                   "degrees.")
    within_km: Optional[float] = Field(None, gt=0, le=20037, description="How near, with near (default 1 km).")
    kind: Optional[Literal["photo", "video"]] = Field(None, description="Only photos, or only videos' scenes.")
    contains_text: Optional[Text] = Field(None, description="Only photos whose text (read when the index was built "
                                                            "with --ocr) contains these words (any case and spacing).")
    like: Optional[int] = Field(None, ge=0, le=2**63 - 1, description="More like this indexed file: its id (as "
                                                                       "results give it); the file itself is left out.")


class SearchJson(SearchParams):
    image: Optional[str] = Field(None, description="Search by an example image: " + B64)


# --- responses --------------------------------------------------------------------------------------

class ErrorBody(BaseModel):
    error: str = Field(description="What kind of error: bad_request, unauthorized, too_large, bad_image, ...")
    message: str = Field(description="What was wrong, for a person.")


class LabelScoreOut(BaseModel):
    label: str
    probability: float
    similarity: float


class ClassificationOut(BaseModel):
    image: str
    model: str
    labels: list[LabelScoreOut]
    none_of_these: float = Field(description="Calibrated probability that none of the labels is the answer: "
                                             "1 − (1 − no_label_fits) × (1 − out_of_distribution).")
    no_label_fits: float = Field(description="The label side: the best label scores well below the image's best "
                                             "caption from a reference vocabulary.")
    out_of_distribution: Optional[float] = Field(
        None, description="The image side: the image lies outside the world of the calibration's images (blank, "
                          "noise, texture, another domain). Null without a calibration that has this detector.")
    looks_like: Optional[str] = Field(None, description="The reference caption the image matches best.")
    text_covered: Optional[int] = Field(None, description="With ignore_text: how many text regions were covered.")
    text_found: Optional[list[str]] = Field(None, description="With ignore_text: the text they held.")


class CaptionLabelOut(BaseModel):
    label: str
    score: float
    typographic_suspect: bool


class CaptionOut(BaseModel):
    image: str
    caption: str
    llm: str = Field(description="The caption as a line for a chat: [Image Attached: ...].")
    out_of_distribution: Optional[float] = Field(
        None, description="How likely the image is from outside the model's calibrated world; when it is, the "
                          "banks' labels are not vouched for and the caption is empty.")
    banks: dict[str, list[CaptionLabelOut]]
    text_found: Optional[list[str]] = Field(None, description="With read_text or ignore_text: the text read.")
    text_covered: Optional[int] = Field(None, description="With ignore_text: how many text regions were covered.")


SCORE_KIND = ("What the scores are: 'similarity' (cosine with the query) or 'margin' (that cosine less the "
              "image's best cosine with a negative prompt and/or its best reference caption).")


class RankedOut(BaseModel):
    path: str = Field(description="The image's name (its upload file name, or the name given).")
    index: int = Field(description="The image's position in the request.")
    score: float = Field(description="What the images are ranked by (see score_kind).")
    similarity: float = Field(description="The image's cosine with the prompt.")
    text_covered: Optional[int] = Field(None, description="With ignore_text: how many text regions were covered.")
    text_found: Optional[list[str]] = Field(None, description="With ignore_text: the text they held.")


class RankingOut(BaseModel):
    prompt: str
    score_kind: str = Field(description=SCORE_KIND)
    results: list[RankedOut]


class EmbeddedOut(BaseModel):
    name: str
    embedding: list[float]


class EmbeddingsOut(BaseModel):
    model: str
    dim: int
    images: list[EmbeddedOut]
    texts: list[EmbeddedOut]


class SearchHitOut(BaseModel):
    path: str
    id: int = Field(description="The file's id in the index (a video's scene has its own).")
    kind: str = Field("photo", description="photo, or video: the hit is then the file and the moment (time).")
    time: Optional[float] = Field(None, description="A video's scene: when it starts, in seconds.")
    until: Optional[float] = Field(None, description="A video's scene: when it ends, in seconds.")
    text: Optional[str] = Field(None, description="With contains_text: the text read in the photo.")
    score: float = Field(description="What the results are ranked by (see score_kind).")
    similarity: Optional[float] = Field(None, description="The file's cosine with the query (null for filters "
                                                          "alone).")
    match: Optional[float] = Field(None, description="The probability that the image shows the query (queries of "
                                                     "one text; null otherwise).")
    taken: Optional[str] = Field(None, description="When the photo was taken (ISO 8601, its own local time, with "
                                                   "the offset when the camera wrote one).")
    taken_source: Optional[str] = Field(None, description="Where taken comes from: exif, or file (its "
                                                          "modification time).")
    camera: Optional[str] = Field(None, description="The camera's make and model.")
    lat: Optional[float] = Field(None, description="Where it was taken (GPS), when known.")
    lon: Optional[float] = None
    thumbnail: str = Field(description="URL of the file's thumbnail on this service (a video's: the frame at time).")


class SearchOut(BaseModel):
    query: str
    score_kind: str = Field(description=SCORE_KIND)
    results: list[SearchHitOut]
    near_miss: Optional[SearchHitOut] = Field(None, description="With min_match and no result: the image that "
                                                               "came closest.")


class ModelOut(BaseModel):
    id: str
    family: str
    embed_dim: int
    context_length: int
    score_kind: str
    backend: str
    precision: str
    device: str


class ModelsOut(BaseModel):
    models: list[ModelOut]
    index: Optional[dict] = Field(None, description="The configured index: its file count and model.")


class HealthOut(BaseModel):
    status: str
    model: str
