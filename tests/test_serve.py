"""`forge serve` driven by the official `openai` client: answers equal Forge's own greedy decoding,
streaming equals non-streaming, bad requests get OpenAI-style 4xx bodies, a full queue answers
429 and 16 concurrent clients each get their own answer."""

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from forgelib.data.tasks import load_tasks
from forgelib.eval.generate import greedy_answers
from forgelib.models.hf import load_model
from forgelib.serve import ModelServer, make_server

MODEL_ID = "tiny"


@pytest.fixture(scope="module")
def served(tiny_trained, tiny_data):
    model_dir, _ = tiny_trained
    model, tokenizer = load_model(model_dir)
    server = ModelServer(model, tokenizer, model_id=MODEL_ID, max_pending=32)
    httpd = make_server(server, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    prompts = [r["prompt"] for t in load_tasks(tiny_data).values() for r in t["test"]][:24]
    yield server, url, prompts
    httpd.shutdown()
    httpd.server_close()


def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def greedy(server, prompt, n):
    return greedy_answers(server.model, server.tokenizer, [prompt], max_new_tokens=n)[0]


def test_completion_equals_forge_greedy_and_stream_equals_non_stream(served):
    server, url, prompts = served
    api = client(url)
    for prompt in prompts[:4]:
        want = greedy(server, prompt, 12)
        got = api.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=12, temperature=0)
        assert got.choices[0].text == want
        assert got.choices[0].finish_reason in ("stop", "length")
        assert got.usage.prompt_tokens == len(server.tokenizer(prompt)["input_ids"])
        chunks = list(api.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=12, temperature=0, stream=True))
        assert "".join(c.choices[0].text for c in chunks) == want
        assert chunks[-1].choices[0].finish_reason == got.choices[0].finish_reason
        chat = api.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": prompt}],
                                           max_tokens=12, temperature=0)
        assert chat.choices[0].message.content == want
        deltas = list(api.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": prompt}],
                                                  max_tokens=12, temperature=0, stream=True))
        assert deltas[0].choices[0].delta.role == "assistant"
        assert "".join(d.choices[0].delta.content or "" for d in deltas) == want


def test_stop_string_ends_the_text_before_it(served):
    server, url, prompts = served
    prompt = next(p for p in prompts if len(greedy(server, p, 12)) >= 3)
    want = greedy(server, prompt, 12)
    stop = want[2]
    got = client(url).completions.create(model=MODEL_ID, prompt=prompt, max_tokens=12, temperature=0, stop=[stop])
    assert got.choices[0].text == want[: want.index(stop)]
    assert got.choices[0].finish_reason == "stop"


def test_sampling_is_seeded(served):
    _, url, prompts = served
    api = client(url)
    runs = [api.completions.create(model=MODEL_ID, prompt=prompts[0], max_tokens=10, temperature=1.5, seed=s).choices[0].text
            for s in (7, 7, 8, 9, 10)]
    assert runs[0] == runs[1]


def raw(url, path, body: bytes | None, method="POST"):
    request = urllib.request.Request(url + path, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("body, status, param", [
    (b"{not json", 400, None),
    (json.dumps({"model": MODEL_ID}).encode(), 400, "prompt"),
    (json.dumps({"prompt": "ab"}).encode(), 400, "model"),
    (json.dumps({"model": "other", "prompt": "ab"}).encode(), 404, "model"),
    (json.dumps({"model": MODEL_ID, "prompt": "ab", "max_tokens": 0}).encode(), 400, "max_tokens"),
    (json.dumps({"model": MODEL_ID, "prompt": "ab", "max_tokens": 10**6}).encode(), 400, "max_tokens"),
    (json.dumps({"model": MODEL_ID, "prompt": "ab", "temperature": -1}).encode(), 400, "temperature"),
    (json.dumps({"model": MODEL_ID, "prompt": "ab" * 100}).encode(), 400, "prompt"),
])
def test_bad_requests_get_openai_error_bodies(served, body, status, param):
    _, url, _ = served
    code, answer = raw(url, "/v1/completions", body)
    assert code == status
    assert set(answer["error"]) == {"message", "type", "param", "code"} and answer["error"]["message"]
    assert answer["error"]["param"] == param


def test_routes_models_health_and_unknown_paths(served):
    _, url, _ = served
    assert raw(url, "/health", None, "GET") == (200, {"status": "ok", "model": MODEL_ID})
    assert [m.id for m in client(url).models.list().data] == [MODEL_ID]
    assert raw(url, "/v1/nothing", None, "GET")[0] == 404
    assert raw(url, "/v1/chat/completions", json.dumps({"model": MODEL_ID, "messages": []}).encode())[0] == 400
    with pytest.raises(openai.NotFoundError):
        client(url).completions.create(model="nope", prompt="ab", max_tokens=2)


def test_beyond_the_pending_limit_answers_429_and_the_admitted_are_served(served):
    server, url, prompts = served
    server.max_pending = 2
    body = json.dumps({"model": MODEL_ID, "prompt": prompts[0], "max_tokens": 4, "temperature": 0}).encode()
    results = []
    try:
        with server.lock:  # the model is busy: admitted requests wait in line
            threads = [threading.Thread(target=lambda: results.append(raw(url, "/v1/completions", body))) for _ in range(2)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 30
            while server._pending < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            code, answer = raw(url, "/v1/completions", body)
            assert code == 429 and answer["error"]["code"] == "rate_limit_exceeded"
        for t in threads:
            t.join(60)
    finally:
        server.max_pending = 32
    assert [code for code, _ in results] == [200, 200]


def test_16_concurrent_clients_each_get_their_own_answer(served):
    server, url, prompts = served
    api = client(url)
    wanted = {p: greedy(server, p, 8) for p in prompts[:16]}

    def ask(prompt):
        return prompt, api.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=8, temperature=0).choices[0].text

    with ThreadPoolExecutor(16) as pool:
        answers = dict(pool.map(ask, list(wanted)))
    assert answers == wanted


def test_cli_serves_and_rejects_a_broken_model(tiny_trained, tmp_path):
    model_dir, _ = tiny_trained
    broken = subprocess.run([sys.executable, "-m", "forgelib.cli", "serve", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=120)
    assert broken.returncode == 2 and broken.stderr.startswith("error: ") and "Traceback" not in broken.stderr
    proc = subprocess.Popen([sys.executable, "-m", "forgelib.cli", "serve", str(model_dir), "--port", "0",
                             "--model-name", "m"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        found = None
        while found is None:
            line = proc.stderr.readline()
            assert line, "forge serve exited before serving"
            found = re.search(r"serving 'm' at http://127.0.0.1:(\d+)/v1", line)
        port = int(found.group(1))
        assert raw(f"http://127.0.0.1:{port}", "/health", None, "GET") == (200, {"status": "ok", "model": "m"})
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.stdout.read() == ""  # stdout carries nothing: logs go to stderr


def test_ignore_eos_decodes_exactly_max_tokens(served):
    _, url, prompts = served
    code, answer = raw(url, "/v1/completions", json.dumps(
        {"model": MODEL_ID, "prompt": prompts[0], "max_tokens": 9, "temperature": 0, "ignore_eos": True}).encode())
    assert code == 200 and answer["usage"]["completion_tokens"] == 9
    assert answer["choices"][0]["finish_reason"] == "length"
