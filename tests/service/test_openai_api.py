"""The OpenAI embeddings API of `cliplens serve`, driven by the official `openai` client against a live server:
texts and images (data: URIs), float and base64, the key as the client sends it, and errors as its exceptions."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from cliplens.bench.serve import ServerProcess
from cliplens.inputs.demo_data import generate

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow  # a real server process

KEY = "sk-test-cliplens"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    log = tmp_path_factory.mktemp("openai-log") / "serve.log"
    with ServerProcess(["--model", "demo", "--backend", "torch"], env={"CLIPLENS_API_KEY": KEY}, log=log) as server:
        yield server


def _data_uri(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_texts_and_images_equal_the_librarys_vectors(live, demo_model):
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=KEY)
    texts = ["a red circle", "two blue squares on a white background"]
    answer = client.embeddings.create(model="demo", input=texts)
    got = np.array([d.embedding for d in answer.data], np.float32)
    assert [d.index for d in answer.data] == [0, 1] and answer.model == "demo"
    assert np.allclose(got, demo_model.encode_texts(texts), atol=1e-5)
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == int(demo_model.token_ids(texts)[1].sum()) > 0
    packed = client.embeddings.create(model="demo", input=texts, encoding_format="base64")
    unpacked = np.array([np.frombuffer(base64.b64decode(d.embedding), "<f4") for d in packed.data])
    assert np.array_equal(unpacked, got)
    images = [s.image for s in generate(2, seed=8)]
    pictures = client.embeddings.create(model="demo", input=[_data_uri(i) for i in images],
                                        extra_body={"modality": "image"})
    assert np.allclose(np.array([d.embedding for d in pictures.data]), demo_model.encode_images(images), atol=1e-5)
    assert pictures.usage.prompt_tokens == 0


def test_errors_come_back_as_the_clients_exceptions(live):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=live.url + "/v1", api_key="wrong").embeddings.create(model="demo", input="x")
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=KEY)
    with pytest.raises(openai.NotFoundError, match="text-embedding-3-small"):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError, match="data: URIs"):
        client.embeddings.create(model="demo", input=["https://example.com/cat.jpg"], extra_body={"modality": "image"})
    with pytest.raises(openai.BadRequestError, match="input"):
        client.embeddings.create(model="demo", input=["data:image/png;base64,AAAA"], extra_body={"modality": "image"})
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="demo", input="x", dimensions=8)


def test_a_live_service_without_a_key_takes_any(tmp_path, demo_model):
    with ServerProcess(["--model", "demo", "--backend", "torch"], env={"CLIPLENS_API_KEY": ""},
                       log=tmp_path / "serve.log") as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="anything")
        answer = client.embeddings.create(model="demo", input="a green star")
        assert np.allclose(answer.data[0].embedding, demo_model.encode_texts(["a green star"])[0], atol=1e-5)
