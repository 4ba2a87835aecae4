"""The HTTP API in process (FastAPI's TestClient): each endpoint against the library's own answer,
merged batches, limits, the API key, CORS, timeouts, broken uploads and property-based fuzzing."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
# Imported at collection, before any test starts threads: pytest rewrites schemathesis's modules on import,
# and CPython 3.11 can fail with "AST constructor recursion depth mismatch" when that races another thread.
schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("schemathesis.specs.openapi.schemas")  # from_asgi imports it lazily otherwise
from fastapi.testclient import TestClient  # noqa: E402

TEST_HOSTS = ["testserver"]  # the name TestClient's requests carry (see HostMiddleware)

import cliplens  # noqa: E402
from cliplens.bench.serve import png_bytes  # noqa: E402
from cliplens.curate import rank_vectors  # noqa: E402
from cliplens.inputs.demo_data import generate  # noqa: E402
from cliplens.service import ServiceConfig, create_app  # noqa: E402
from cliplens.service.batching import EncoderWorker  # noqa: E402
from cliplens.text.prompts import LabelWarning  # noqa: E402
from image_corpus import CORPUS  # noqa: E402

LABELS = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
EXAMPLES = cliplens.__path__[0] + "/examples"


@pytest.fixture(scope="module")
def shapes() -> list[tuple[str, bytes]]:
    """Demo images (their training caption, PNG bytes)."""
    return [(sample.caption, png_bytes(sample.image)) for sample in generate(12, seed=11)]


@pytest.fixture(scope="module")
def index_dir(demo_index):
    return demo_index


@pytest.fixture(scope="module")
def client(demo_model, index_dir):
    app = create_app(ServiceConfig(index=str(index_dir), model="demo", backend="torch", api_key="",
                                   allowed_hosts=TEST_HOSTS),
                     encoder=demo_model)
    with TestClient(app) as test_client:
        yield test_client


def _form(image: bytes, name: str = "image.png", **fields) -> dict:
    return {"files": {"image": (name, image, "image/png")}, "data": fields}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error", "message"} and body["message"]
    return body["message"]


# --- endpoints give the library's answers ------------------------------------------------------------

def test_classify_multipart_and_json_match_the_library(client, demo_model):
    image = Path(f"{EXAMPLES}/two-red-circles.png").read_bytes()
    expected = cliplens.Classifier(LABELS, demo_model).classify(image).to_dict()
    by_form = client.post("/v1/classify", **_form(image, "two-red-circles.png", labels=LABELS))
    by_json = client.post("/v1/classify", json={"image": _b64(image), "labels": LABELS})
    assert by_form.status_code == 200 and by_json.status_code == 200, by_form.text + by_json.text
    for body in (by_form.json(), by_json.json()):
        assert [s["label"] for s in body["labels"]] == [s["label"] for s in expected["labels"]]
        assert body["labels"][0]["label"] == "a red circle"
        assert np.allclose([s["probability"] for s in body["labels"]], [s["probability"] for s in expected["labels"]],
                           atol=1e-5)
        assert body["none_of_these"] == pytest.approx(expected["none_of_these"], abs=1e-5)
        assert body["model"] == "demo" and set(expected) <= set(body)
    assert by_form.json()["image"] == "two-red-circles.png" and by_json.json()["image"] == "image"


def test_classify_says_none_of_these_when_no_label_fits(client):
    image = Path(f"{EXAMPLES}/blue-star.png").read_bytes()
    body = client.post("/v1/classify", **_form(image, labels=["a red circle", "a green triangle"])).json()
    assert body["none_of_these"] >= 0.5 and "star" in body["looks_like"]


def test_classify_template_and_multi_label_options(client):
    image = Path(f"{EXAMPLES}/two-red-circles.png").read_bytes()
    verbatim = client.post("/v1/classify", **_form(image, labels=LABELS, template="none")).json()
    multi = client.post("/v1/classify", json={"image": _b64(image), "labels": LABELS, "multi_label": True}).json()
    assert verbatim["labels"][0]["label"] == "a red circle"
    assert sum(s["probability"] for s in multi["labels"]) != pytest.approx(1.0)  # independent, not a softmax
    _error(client.post("/v1/classify", **_form(image, labels=LABELS, templates="/etc/passwd")), 422)


def test_caption_matches_the_library(client, demo_model):
    image = Path(f"{EXAMPLES}/three-yellow-triangles.png").read_bytes()
    expected = cliplens.Captioner(demo_model).caption(image)
    body = client.post("/v1/caption", **_form(image, "tri.png")).json()
    assert body["caption"] == expected.caption and "triangle" in body["caption"]
    assert body["llm"] == expected.llm() and body["image"] == "tri.png"
    assert body["banks"] == expected.to_dict()["banks"]
    only = client.post("/v1/caption", json={"image": _b64(image), "banks": ["demo_colours"]}).json()
    assert list(only["banks"]) == ["demo_colours"]
    assert "unknown bank" in _error(client.post("/v1/caption", json={"image": _b64(image), "banks": ["/tmp/x.txt"]}), 422)


def test_rank_orders_uploads_like_the_library(client, demo_model, shapes):
    prompt = "a red circle"
    images = [data for _, data in shapes]
    expected = rank_vectors(prompt, demo_model.encode_images(images), [str(i) for i in range(len(images))], demo_model)
    order = [int(r.path) for r in expected.results]
    files = [("images", (f"shape-{i}.png", data, "image/png")) for i, data in enumerate(images)]
    body = client.post("/v1/rank", files=files, data={"prompt": prompt, "top": "5"}).json()
    assert [r["index"] for r in body["results"]] == order[:5]
    assert [r["path"] for r in body["results"]] == [f"shape-{i}.png" for i in order[:5]]
    assert "red" in shapes[order[0]][0]
    by_json = client.post("/v1/rank", json={"prompt": prompt, "images": [_b64(d) for d in images],
                                            "names": [f"n{i}" for i in range(len(images))]}).json()
    assert [r["index"] for r in by_json["results"]] == order
    assert np.allclose([r["score"] for r in by_json["results"]], [r.score for r in expected.results], atol=1e-5)


def test_embed_images_and_texts(client, demo_model, shapes):
    image = shapes[0][1]
    body = client.post("/v1/embed", files=[("images", ("a.png", image, "image/png"))],
                       data={"texts": ["a red circle", "a blue square"]}).json()
    assert body["dim"] == demo_model.embed_dim and len(body["images"]) == 1 and len(body["texts"]) == 2
    vector = np.array(body["images"][0]["embedding"])
    assert np.allclose(vector, demo_model.encode_images([image])[0], atol=1e-5)
    assert np.allclose(np.array(body["texts"][1]["embedding"]), demo_model.encode_texts(["a blue square"])[0], atol=1e-5)
    assert "give images, texts or both" in _error(client.post("/v1/embed", json={}), 422)


def test_search_the_index_by_text_and_image_with_thumbnails(client, index_dir):
    body = client.post("/v1/search", json={"query": "a red circle", "top": 5}).json()
    assert len(body["results"]) == 5
    expected = cliplens.search_index("a red circle", index_dir, top=5, model="demo")
    photos = cliplens.PhotoIndex(index_dir)
    relative = [photos.relative_path(h.path) for h in expected.hits]
    photos.close()
    assert [r["path"] for r in body["results"]] == relative  # never where the indexed folder is on the server
    assert all(not Path(r["path"]).is_absolute() and r["path"].startswith("indexed-photos") for r in body["results"])
    assert {k: v for k, v in body.items() if k != "results"} == {"query": "a red circle", "score_kind": "margin",
                                                                 "near_miss": None}
    for row, hit in zip(body["results"], expected.to_dict()["results"]):  # the CLI's --json fields, plus the URL
        assert row == hit | {"path": row["path"], "thumbnail": f"/v1/thumbnails/{hit['id']}"}
    thumb = client.get(body["results"][0]["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
    first = Path(expected.hits[0].path).read_bytes()
    by_image = client.post("/v1/search", files={"image": ("q.png", first, "image/png")}, data={"top": "3"}).json()
    assert by_image["results"][0]["path"] == body["results"][0]["path"]
    _error(client.get("/v1/thumbnails/999999"), 404)


def test_search_filters_by_metadata_and_carries_it(client, index_dir):
    everything = client.post("/v1/search", json={"query": "a red circle", "top": 3}).json()["results"]
    assert all(r["taken_source"] == "file" and r["taken"] and r["camera"] is None for r in everything)
    year = everything[0]["taken"][:4]  # generated files: dated by their modification time
    same = client.post("/v1/search", json={"query": "a red circle", "top": 3, "after": year, "before": year}).json()
    assert [r["path"] for r in same["results"]] == [r["path"] for r in everything]
    later = client.post("/v1/search", json={"query": "a red circle", "after": str(int(year) + 1)}).json()
    assert later["results"] == []
    alone = client.post("/v1/search", json={"camera": "leica"}).json()  # filters alone
    assert alone["results"] == [] and alone["score_kind"] == "none"
    dated = client.post("/v1/search", json={"after": year, "top": 2}).json()["results"]
    assert len(dated) == 2 and all(r["similarity"] is None and r["taken"][:4] == year for r in dated)
    assert "after" in _error(client.post("/v1/search", json={"query": "x", "after": "June"}), 400)
    assert "near" in _error(client.post("/v1/search", json={"query": "x", "near": "here"}), 400)


def test_more_like_this_by_id_leaves_the_file_out(client, index_dir):
    first = client.post("/v1/search", json={"query": "a red circle", "top": 1}).json()["results"][0]
    more = client.post("/v1/search", json={"like": first["id"], "top": 3}).json()
    assert len(more["results"]) == 3 and first["id"] not in [r["id"] for r in more["results"]]
    assert more["query"] == f"like #{first['id']}" and not any(Path(r["path"]).is_absolute() for r in more["results"])
    assert "like" in _error(client.post("/v1/search", json={"like": 10**12}), 400)


def test_search_with_a_minimum_match_answers_nothing_for_what_no_image_shows(client, index_dir):
    kept = client.post("/v1/search", json={"query": "a red circle", "top": 5, "min_match": 0.5}).json()
    assert kept["results"] and all(r["match"] >= 0.5 for r in kept["results"]) and kept["near_miss"] is None
    with pytest.warns(LabelWarning):  # the demo model cannot read "dog"
        none = client.post("/v1/search", json={"query": "a dog", "top": 5, "min_match": 0.5}).json()
    assert none["results"] == [] and none["near_miss"]["match"] == 0.0
    assert not Path(none["near_miss"]["path"]).is_absolute() and none["near_miss"]["thumbnail"].startswith("/v1/")
    assert "min_match" in _error(client.post("/v1/search", json={"query": "a red circle", "min_match": 2}), 422)
    by_image = client.post("/v1/search", **_form(png_bytes(Image.new("RGB", (64, 64), (200, 0, 0))), top="3",
                                                  min_match="0.5"))
    assert "one text" in _error(by_image, 400)


def test_search_never_reads_server_files(client, index_dir, tmp_path):
    """A query naming an image file on the server is words, not that file (as the CLI would read it)."""
    secret = tmp_path / "secret.png"
    Image.new("RGB", (64, 64), (200, 0, 0)).save(secret)
    body = client.post("/v1/search", json={"query": str(secret), "top": 3}).json()
    assert body["query"] == str(secret)
    as_words = cliplens.load_model("demo", backend="torch").encode_texts([str(secret)])
    assert len(body["results"]) == 3 and as_words.shape[0] == 1
    assert client.get("/v1/thumbnails/-1").status_code in (404, 422)
    assert client.get("/static/../../pyproject.toml").status_code == 404


def test_models_health_and_metrics(client):
    models = client.get("/v1/models").json()
    assert models["models"][0]["id"] == "demo" and models["index"]["files"] == 40
    assert client.get("/healthz").json() == {"status": "ok", "model": "demo"}
    image = Path(f"{EXAMPLES}/blue-star.png").read_bytes()
    assert client.post("/v1/classify", **_form(image, labels=LABELS)).status_code == 200
    text = client.get("/metrics").text
    assert 'cliplens_requests_total{route="/v1/classify",status="200"}' in text
    assert "cliplens_encoder_batch_images_bucket" in text and 'cliplens_model_info{model="demo"} 1.0' in text


def test_openapi_documents_every_endpoint_with_both_body_kinds(client):
    spec = client.get("/openapi.json").json()
    for path in ("/v1/classify", "/v1/caption", "/v1/rank", "/v1/embed", "/v1/search"):
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        assert set(content) == {"multipart/form-data", "application/json"}
    assert "/v1/models" in spec["paths"] and "/healthz" in spec["paths"] and "/metrics" in spec["paths"]


def test_web_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "cliplens" in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200


# --- bad requests: 4xx with a message, and the service keeps serving -----------------------------------

@pytest.mark.parametrize("name,build,expected", CORPUS, ids=[c[0] for c in CORPUS])
def test_every_broken_image_answers_422_with_its_reason(client, name, build, expected):
    response = client.post("/v1/classify", **_form(build(), name, labels=LABELS))
    if expected == "ok":
        assert response.status_code == 200, response.text
    else:
        message = _error(response, 422)
        assert message.startswith(name + ":") and expected.lower() in message.lower()
    assert client.get("/healthz").status_code == 200


def test_request_mistakes_name_the_field(client):
    image = Path(f"{EXAMPLES}/blue-star.png").read_bytes()
    assert "labels" in _error(client.post("/v1/classify", files={"image": ("a.png", image, "image/png")}), 422)
    assert "image" in _error(client.post("/v1/classify", data={"labels": ["x"]}), 422)
    assert "image" in _error(client.post("/v1/classify", json={"labels": ["x"]}), 422)
    assert "base64" in _error(client.post("/v1/classify", json={"image": "%%%", "labels": ["x"]}), 422)
    assert "JSON" in _error(client.post("/v1/classify", content=b"{nope", headers={"content-type": "application/json"}), 400)
    assert "multipart/form-data" in _error(client.post("/v1/classify", content=b"x", headers={"content-type": "text/plain"}), 415)
    assert "prompt" in _error(client.post("/v1/rank", json={"prompt": "", "images": [_b64(image)]}), 422)
    assert "top" in _error(client.post("/v1/rank", json={"prompt": "x", "images": [_b64(image)], "top": 0}), 422)
    assert "extra" in _error(client.post("/v1/classify", json={"image": _b64(image), "labels": ["x"], "path": "/etc"}), 422).lower()
    _error(client.get("/v1/nothing-here"), 404)
    _error(client.get("/v1/classify"), 405)


def test_uploads_over_the_limit_answer_413(demo_model):
    app = create_app(ServiceConfig(model="demo", max_upload_mb=0.05, api_key="", allowed_hosts=TEST_HOSTS), encoder=demo_model)
    big = np.random.default_rng(0).integers(0, 255, (300, 300, 3), np.uint8)
    data = png_bytes(Image.fromarray(big))
    assert len(data) > 0.05 * 1024 * 1024
    with TestClient(app) as client:
        assert "upload limit" in _error(client.post("/v1/classify", **_form(data, labels=LABELS)), 413)

        def chunks():  # no Content-Length: the limit is enforced while the body streams
            yield b'{"labels": ["x"], "image": "'
            for _ in range(40):
                yield b"A" * 4096
            yield b'"}'

        streamed = client.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"})
        assert "upload limit" in _error(streamed, 413)
        assert client.post("/v1/classify", **_form(Path(f"{EXAMPLES}/blue-star.png").read_bytes(),
                                                    labels=LABELS)).status_code == 200


def test_images_over_the_pixel_limit_answer_422(demo_model):
    app = create_app(ServiceConfig(model="demo", max_pixels=100 * 100, api_key="", allowed_hosts=TEST_HOSTS), encoder=demo_model)
    with TestClient(app) as client:
        data = png_bytes(Image.new("RGB", (200, 200), (255, 0, 0)))
        message = _error(client.post("/v1/classify", **_form(data, "big.png", labels=LABELS)), 422)
        assert message.startswith("big.png:") and "40000" in message.replace(",", "")


def test_api_key_is_required_except_for_health_and_the_page(demo_model, monkeypatch):
    image = Path(f"{EXAMPLES}/blue-star.png").read_bytes()
    monkeypatch.setenv("CLIPLENS_API_KEY", "s3cret")
    app = create_app(ServiceConfig(model="demo", allowed_hosts=TEST_HOSTS), encoder=demo_model)  # the key from the environment
    with TestClient(app) as client:
        assert "API key" in _error(client.post("/v1/classify", **_form(image, labels=LABELS)), 401)
        assert "not this service's key" in _error(client.get("/v1/models", headers={"Authorization": "Bearer nope"}), 401)
        _error(client.get("/metrics"), 401)
        assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.post("/v1/classify", headers={"X-API-Key": "s3cret"}, **_form(image, labels=LABELS)).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200


def test_cors_is_off_unless_configured(demo_model):
    headers = {"Origin": "https://photos.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(ServiceConfig(model="demo", api_key="", allowed_hosts=TEST_HOSTS), encoder=demo_model)) as client:
        assert "access-control-allow-origin" not in client.options("/v1/classify", headers=headers).headers
    config = ServiceConfig(model="demo", api_key="k", cors_origins=["https://photos.example"], allowed_hosts=TEST_HOSTS)
    with TestClient(create_app(config, encoder=demo_model)) as client:
        preflight = client.options("/v1/classify", headers=headers)
        assert preflight.headers["access-control-allow-origin"] == "https://photos.example"


def test_slow_requests_answer_504_and_the_service_recovers(demo_model):
    app = create_app(ServiceConfig(model="demo", request_timeout=0.3, api_key="", allowed_hosts=TEST_HOSTS), encoder=demo_model)
    image = Path(f"{EXAMPLES}/blue-star.png").read_bytes()
    with TestClient(app) as client:
        client.post("/v1/classify", **_form(image, labels=LABELS))  # label embeddings built
        app.state.engine.worker.submit(lambda: time.sleep(1.0))  # the model is busy for a second
        assert "0.3 s" in _error(client.post("/v1/classify", **_form(image, labels=LABELS)), 504)
        time.sleep(1.0)
        assert client.post("/v1/classify", **_form(image, labels=LABELS)).status_code == 200


# --- dynamic batching ------------------------------------------------------------------------------------

def test_concurrent_requests_are_merged_into_batches_with_the_right_rows(demo_model, shapes):
    batches = []
    worker = EncoderWorker(demo_model, max_batch=8, max_wait_ms=50, on_batch=lambda n, s: batches.append(n))
    prepared = [demo_model.prepare(Image.open(io.BytesIO(data)).convert("RGB")) for _, data in shapes]
    expected = demo_model.encode_prepared(prepared)
    worker.submit(lambda: time.sleep(0.3))  # requests pile up while the model is busy
    futures = [worker.submit_images([item]) for item in prepared]
    results = [future.result(30) for future in futures]
    worker.close()
    assert np.allclose(np.concatenate(results), expected, atol=1e-5)
    assert sum(batches) == len(prepared) and max(batches) == 8 and len(batches) == 2


def test_scoring_jobs_between_images_do_not_split_the_batch(demo_model, shapes):
    batches, order = [], []
    worker = EncoderWorker(demo_model, max_batch=32, on_batch=lambda n, s: batches.append(n))
    prepared = [demo_model.prepare(Image.open(io.BytesIO(data)).convert("RGB")) for _, data in shapes[:6]]
    worker.submit(lambda: time.sleep(0.3))
    futures = []
    for i, item in enumerate(prepared):
        futures.append(worker.submit_images([item]))
        futures.append(worker.submit(lambda i=i: order.append(i)))  # another request's scoring
    for future in futures:
        future.result(30)
    worker.close()
    assert batches == [6] and order == list(range(6))


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on(demo_model):
    worker = EncoderWorker(demo_model, max_batch=4)
    bad = worker.submit_images([np.zeros((3, 3), np.uint8)])  # not a prepared image
    with pytest.raises(Exception):
        bad.result(30)
    assert worker.submit(lambda: 41 + 1).result(30) == 42
    worker.close()


def test_a_stopped_worker_refuses_jobs_at_once_rather_than_leaving_them_waiting(demo_model):
    from cliplens.service.batching import WorkerStopped

    worker = EncoderWorker(demo_model, max_batch=4)
    queued = worker.submit(lambda: (time.sleep(0.2), 7)[1])  # queued before the stop: it still runs
    worker.close()
    assert queued.result(0) == 7
    started = time.perf_counter()
    for job in (lambda: worker.submit(lambda: 1), lambda: worker.submit_images([object()])):
        with pytest.raises(WorkerStopped, match="stopped"):
            job()
    assert time.perf_counter() - started < 1
    worker.close()  # twice is harmless


def _classify_once(test_client, image: bytes):
    return test_client.post("/v1/classify", json={"image": _b64(image), "labels": ["a red circle", "a blue star"]})


def test_a_second_lifespan_ending_leaves_the_first_serving(demo_model, index_dir, shapes):
    """Two servers (or a test harness beside a test client) may start one app's lifespan twice; when one ends,
    the other serves on, with the index still open. Before, the app kept the ended engine: its stopped
    worker left every later request waiting for ever (how the OpenAPI fuzzing left the test client)."""
    app = create_app(ServiceConfig(index=str(index_dir), model="demo", backend="torch", api_key="",
                                   allowed_hosts=TEST_HOSTS), encoder=demo_model)
    image = shapes[0][1]
    with TestClient(app) as first:
        with TestClient(app) as second:
            assert _classify_once(second, image).status_code == 200
        answer = _classify_once(first, image)
        assert answer.status_code == 200, answer.text
        assert first.post("/v1/search", json={"query": "a red circle", "top": 2}).status_code == 200  # index open
        app.state.engine.close()  # a request that arrives while the service shuts down is told so, at once
        refused = _classify_once(first, image)
        assert refused.status_code == 503 and "shutting down" in refused.json()["message"]


def test_classify_and_rank_can_ignore_the_text_in_the_image(client):
    pytest.importorskip("rapidocr_onnxruntime")
    from cliplens.inputs.demo_data import hijacked_label

    sample = next(s for s in generate(10, seed=43, size=224, words=1.0) if hijacked_label(s.scene) != s.scene.label)
    image = png_bytes(sample.image)
    labels = [sample.scene.label, hijacked_label(sample.scene), "a green star"]
    body = client.post("/v1/classify", **_form(image, labels=labels, ignore_text="true")).json()
    assert "text_covered" in body, body
    assert body["text_covered"] == 1 and body["text_found"] and body["labels"][0]["label"] == sample.scene.label
    plain = client.post("/v1/classify", **_form(image, labels=labels)).json()
    assert "text_covered" not in plain or plain["text_covered"] is None
    ranked = client.post("/v1/rank", files={"images": ("a.png", image, "image/png")},
                         data={"prompt": sample.scene.label, "ignore_text": "true"}).json()
    assert ranked["results"][0]["text_covered"] == 1


def test_caption_reads_or_ignores_the_text_in_the_image(client):
    pytest.importorskip("rapidocr_onnxruntime")
    sample = next(s for s in generate(10, seed=43, size=224, words=1.0))
    image = png_bytes(sample.image)
    read = client.post("/v1/caption", **_form(image, read_text="true")).json()
    assert read["text_found"] and read["text_covered"] == 0
    for labels in read["banks"].values():
        assert all(c["typographic_suspect"] for c in labels if c["label"] == sample.scene.word)
    covered = client.post("/v1/caption", **_form(image, ignore_text="true")).json()
    assert covered["text_covered"] == len(covered["text_found"]) >= 1
    plain = client.post("/v1/caption", **_form(image)).json()
    assert plain.get("text_found") is None


# --- property-based: nothing the schema allows makes the service fail ---------------------------------

def test_fuzzing_from_the_openapi_document_finds_no_5xx(client):
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    failures = []
    for operation in schema.get_all_operations():
        operation = operation.ok()

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call()
            if response.status_code == 421:
                failures.append(f"{case.method} {case.path}: the test's host was refused")
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path}: {response.status_code} {response.text[:200]}")
            elif response.status_code >= 400:
                body = response.json()
                if case.path == "/v1/embeddings" and isinstance(body, dict):  # OpenAI's error shape
                    body = body.get("error")
                if not (isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]):
                    failures.append(f"{case.method} {case.path}: error without a message: {response.text[:200]}")

        check()
    assert not failures, "\n".join(failures[:10])
