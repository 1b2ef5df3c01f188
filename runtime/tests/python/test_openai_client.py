"""The official `openai` Python client against the runtime serving the real SmolLM2 model.

Run by `make test-runtime-python`: MODELFLEET_RUNTIME_BIN names the binary and
MODELFLEET_MODEL_PATH the GGUF from `make model`. A missing model fails (this suite is required).
"""

import os
import socket
import subprocess
import tempfile
import time
import urllib.request

import openai
import pytest

MODEL = "smollm2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def base_url():
    binary = os.environ["MODELFLEET_RUNTIME_BIN"]
    model = os.environ["MODELFLEET_MODEL_PATH"]
    assert os.path.isfile(model), f"{model} is missing: run `make model`"
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [binary, "serve", "--model-uri", model, "--served-name", MODEL,
             "--host", "127.0.0.1", "--port", str(port), "--threads", "2",
             "--context-length", "1024", "--cache-dir", tmp,
             "--termination-message-path", os.path.join(tmp, "termination-log")],
            # Sleeping, not spinning, OpenMP threads share two busy cores fairly.
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, f"runtime exited with {proc.returncode}"
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "runtime not ready"
            time.sleep(0.1)
        yield url + "/v1"
        proc.terminate()
        assert proc.wait(timeout=30) == 0


@pytest.fixture()
def client(base_url):
    # The runtime needs no key; the client insists on one.
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)


def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_completion(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=12, temperature=0)
    assert "Paris" in r.choices[0].text
    assert r.usage.completion_tokens == 12
    assert r.choices[0].finish_reason == "length"


def test_chat(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        max_tokens=40,
        temperature=0,
    )
    assert r.choices[0].message.role == "assistant"
    assert "Paris" in r.choices[0].message.content


def test_chat_streaming_matches(client):
    kwargs = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=30,
        temperature=0,
    )
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == full
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_completion_streaming_matches(client):
    kwargs = dict(model=MODEL, prompt="Once upon a time", max_tokens=20, temperature=0)
    full = client.completions.create(**kwargs).choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kwargs))
    assert streamed == full


def test_errors_surface_as_openai_exceptions(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="x", temperature=3)
    assert "temperature: must be between 0 and 2" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")
