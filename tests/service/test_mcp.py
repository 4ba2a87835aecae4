"""`cliplens mcp` driven by the official MCP client SDK, over stdio and streamable HTTP: the tools, their
schemas, results equal to the library's, errors as tool errors, and HTTP's key and base64-only images."""

from __future__ import annotations

import base64
import json
import sys

import anyio
import numpy as np
import pytest

import cliplens
from cliplens.bench.serve import free_port
from cliplens.inputs.demo_data import generate

mcp = pytest.importorskip("mcp")
pytestmark = pytest.mark.slow  # server processes

from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

TOOLS = ["caption", "classify", "embed", "rank", "search"]


def _run(session, *args):
    """``anyio.run`` in a thread of its own: a test run may hold an event loop in this one (Playwright's)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, session, *args).result()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mcp-images")
    samples = list(generate(3, seed=5))
    for i, sample in enumerate(samples):
        sample.image.save(folder / f"{i}.png")
    return folder, samples


def _stdio(*extra) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "cliplens.cli", "mcp", "--model", "demo",
                                                               "--backend", "torch", *extra])


def test_stdio_tools_answer_as_the_library_does(pictures, demo_index, demo_model):
    folder, samples = pictures
    path = str(folder / "0.png")
    labels = [samples[0].scene.label, "green star", "yellow triangle"]

    async def session():
        async with Client(_stdio("--index", str(demo_index))) as client:
            listed = (await client.list_tools()).tools
            assert sorted(t.name for t in listed) == TOOLS
            schema = next(t for t in listed if t.name == "classify").input_schema
            assert set(schema["required"]) == {"image", "labels"} and schema["properties"]["labels"]["type"] == "array"
            answers = {
                "classify": await client.call_tool("classify", {"image": path, "labels": labels}),
                "caption": await client.call_tool("caption", {"image": path}),
                "rank": await client.call_tool("rank", {"prompt": labels[0], "images": [str(folder / f"{i}.png")
                                                                                         for i in range(3)]}),
                "embed": await client.call_tool("embed", {"texts": ["a red circle"], "images": [path]}),
                "search": await client.call_tool("search", {"query": "a photo of a blue square", "top": 3}),
                "missing": await client.call_tool("classify", {"image": str(folder / "nope.png"), "labels": labels}),
            }
            return answers

    answers = _run(session)
    assert not any(answers[name].is_error for name in TOOLS)
    got = answers["classify"].structured_content
    want = cliplens.Classifier(labels, demo_model).classify(path).to_dict()
    assert [x["label"] for x in got["labels"]] == [x["label"] for x in want["labels"]]
    assert np.allclose([x["probability"] for x in got["labels"]], [x["probability"] for x in want["labels"]],
                       atol=1e-5)
    assert got["none_of_these"] == pytest.approx(want["none_of_these"], abs=1e-5)
    assert answers["caption"].structured_content["llm"] == cliplens.Captioner(demo_model).caption(path).llm()
    ranked = answers["rank"].structured_content["results"]
    assert [r["index"] for r in ranked] == [r.index for r in cliplens.rank_images(
        labels[0], [str(folder / f"{i}.png") for i in range(3)], demo_model).results]
    embedded = answers["embed"].structured_content
    assert np.allclose(embedded["texts"][0]["embedding"], demo_model.encode_texts(["a red circle"])[0], atol=1e-5)
    assert np.allclose(embedded["images"][0]["embedding"], demo_model.encode_images([path])[0], atol=1e-5)
    found = answers["search"].structured_content
    assert len(found["results"]) == 3 and not found["results"][0]["path"].startswith("/")  # relative to the folder
    assert answers["missing"].is_error and "no such file" in answers["missing"].content[0].text
    assert json.loads(answers["classify"].content[0].text)["labels"] == got["labels"]  # text mirrors structure


def test_http_needs_the_key_and_takes_images_as_data_only(pictures, demo_model):
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    import socket
    import subprocess
    import time

    folder, samples = pictures
    port = free_port()
    data = base64.b64encode((folder / "0.png").read_bytes()).decode()
    process = subprocess.Popen([sys.executable, "-m", "cliplens.cli", "mcp", "--model", "demo", "--backend", "torch",
                                "--http", "--port", str(port), "--api-key", "k3y"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/mcp"

        async def session(key: str):
            transport = streamable_http_client(url, http_client=create_mcp_http_client(
                headers={"Authorization": f"Bearer {key}"}))
            async with Client(transport) as client:
                ok = await client.call_tool("classify", {"image": "data:image/png;base64," + data,
                                                         "labels": ["red circle", "blue cross"]})
                path = await client.call_tool("classify", {"image": str(folder / "0.png"), "labels": ["a", "b"]})
                return ok, path

        ok, path = _run(session, "k3y")
        want = cliplens.Classifier(["red circle", "blue cross"], demo_model).classify(folder / "0.png")
        assert not ok.is_error and ok.structured_content["labels"][0]["label"] == want.top.label
        assert path.is_error and "base64" in path.content[0].text  # a path on the server is never read
        with pytest.raises(Exception):  # the wrong key: 401, which the client raises
            _run(session, "wrong")
    finally:
        process.terminate()
        process.wait(timeout=30)
