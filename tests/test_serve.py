"""`forge serve` driven by the official `openai` client: answers equal Forge's own greedy decoding,
streaming equals non-streaming, bad requests get OpenAI-style 4xx bodies, a full queue answers
429 and 16 concurrent clients each get their own answer. The llama-cpp engine (when
llama-cpp-python is installed) answers with the torch engine's greedy text; `--engine` errors
need no llama_cpp."""

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
import torch
from typer.testing import CliRunner

from forgelib.cli import app
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


# -- engines -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served_llama_cpp(served, tiny_trained):
    """The tiny model served by the llama-cpp engine (F32 GGUF) next to the torch engine's server."""
    pytest.importorskip("llama_cpp")
    from forgelib.serve_engines import LlamaCppEngine

    model, tokenizer = load_model(tiny_trained[0])
    server = ModelServer(model, tokenizer, model_id=MODEL_ID, engine=LlamaCppEngine(model, tokenizer, gguf_type="f32"))
    httpd = make_server(server, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    server.close()


def test_llama_cpp_engine_logits_match_torch_and_greedy_text_equals_the_torch_engine(served, served_llama_cpp):
    torch_server, torch_url, prompts = served
    llama_server, llama_url = served_llama_cpp
    assert llama_server.engine.n_vocab == len(llama_server.tokenizer)
    for prompt in prompts[:4]:  # the same next-token logits up to float rounding (F32 weights)
        ids = torch_server.tokenizer(prompt)["input_ids"]
        torch_server.engine.reset()
        llama_server.engine.reset()
        want, got = torch_server.engine.feed(ids), llama_server.engine.feed(ids)
        assert got.shape == want.shape and float((got - want).abs().max()) < 0.05
    for prompt in prompts[:12]:
        want = client(torch_url).completions.create(model=MODEL_ID, prompt=prompt, max_tokens=12, temperature=0)
        got = client(llama_url).completions.create(model=MODEL_ID, prompt=prompt, max_tokens=12, temperature=0)
        assert got.choices[0].text == want.choices[0].text
        assert got.choices[0].finish_reason == want.choices[0].finish_reason
        assert got.usage.completion_tokens == want.usage.completion_tokens


def test_llama_cpp_engine_streams_stops_and_decodes_exactly_max_tokens(served, served_llama_cpp):
    torch_server, _, prompts = served
    _, url = served_llama_cpp
    api = client(url)
    for prompt in prompts[:3]:
        want = greedy(torch_server, prompt, 12)
        chunks = list(api.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=12, temperature=0, stream=True))
        assert "".join(c.choices[0].text for c in chunks) == want and chunks[-1].choices[0].finish_reason
        deltas = list(api.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": prompt}],
                                                  max_tokens=12, temperature=0, stream=True))
        assert "".join(d.choices[0].delta.content or "" for d in deltas) == want
    prompt = next(p for p in prompts if len(greedy(torch_server, p, 12)) >= 3)
    want = greedy(torch_server, prompt, 12)
    got = api.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=12, temperature=0, stop=[want[2]])
    assert got.choices[0].text == want[: want.index(want[2])] and got.choices[0].finish_reason == "stop"
    code, answer = raw(url, "/v1/completions", json.dumps(
        {"model": MODEL_ID, "prompt": prompts[0], "max_tokens": 9, "temperature": 0, "ignore_eos": True}).encode())
    assert code == 200 and answer["usage"]["completion_tokens"] == 9
    seeded = [api.completions.create(model=MODEL_ID, prompt=prompts[0], max_tokens=10, temperature=1.5, seed=7)
              .choices[0].text for _ in range(2)]
    assert seeded[0] == seeded[1]


@pytest.fixture(scope="module")
def specialized_dir(tiny_trained, tmp_path_factory):
    """The tiny model with one random SVF expert: a model that adapts per prompt."""
    from forgelib.models.hf import save_model
    from forgelib.specialize import svf
    from forgelib.specialize.model import encode_side_files

    model, tokenizer = load_model(tiny_trained[0])
    factors = svf.compute_svd(model)
    experts = {"string": {n: torch.ones(f.s.shape) for n, f in factors.items()}}
    dispatcher = {n: torch.zeros(f.s.shape) for n, f in factors.items()}
    side = encode_side_files({"families": ["string"], "labels": {"string": "s"}, "max_mult": 2.0,
                              "weights": list(factors)}, experts, dispatcher)
    out = tmp_path_factory.mktemp("specialized") / "model"
    save_model(model, tokenizer, out, {"name": "tiny specialized"})
    for name, data in side.items():
        (out / name).write_bytes(data)
    return out


@pytest.mark.parametrize("args, names", [
    (["--engine", "vllm"], ["--engine", "torch, llama-cpp"]),
    (["--engine", "llama-cpp", "--gguf-type", "q5_k"], ["--gguf-type", "q8_0"]),
    (["--gguf-type", "int3"], ["--gguf-type", "f16"]),
])
def test_cli_rejects_an_unknown_engine_or_gguf_type(tiny_trained, args, names):
    result = CliRunner().invoke(app, ["serve", str(tiny_trained[0]), "--port", "0", *args])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert all(name in result.stderr for name in names), result.stderr


def test_cli_llama_cpp_refuses_a_specialized_model_and_names_the_way_out(specialized_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # refused before llama_cpp is needed
    result = CliRunner().invoke(app, ["serve", str(specialized_dir), "--port", "0", "--engine", "llama-cpp"])
    assert result.exit_code == 2
    assert "specialized" in result.stderr and "--engine torch" in result.stderr, result.stderr


def test_cli_llama_cpp_without_the_package_says_how_to_install_it(tiny_trained, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp raises ImportError
    result = CliRunner().invoke(app, ["serve", str(tiny_trained[0]), "--port", "0", "--engine", "llama-cpp"])
    assert result.exit_code == 2
    assert "pip install llama-cpp-python" in result.stderr and "--engine torch" in result.stderr, result.stderr


def test_cli_serves_with_the_llama_cpp_engine_and_says_so(tiny_trained):
    pytest.importorskip("llama_cpp")
    model_dir, _ = tiny_trained
    proc = subprocess.Popen([sys.executable, "-m", "forgelib.cli", "serve", str(model_dir), "--port", "0",
                             "--model-name", "m", "--engine", "llama-cpp", "--gguf-type", "q8_0"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        found = None
        while found is None:
            line = proc.stderr.readline()
            assert line, "forge serve exited before serving"
            found = re.search(r"serving 'm' at http://127.0.0.1:(\d+)/v1 with engine llama-cpp \(GGUF q8_0", line)
        url = f"http://127.0.0.1:{found.group(1)}"
        code, answer = raw(url, "/v1/completions", json.dumps(
            {"model": "m", "prompt": "abc", "max_tokens": 5, "temperature": 0, "ignore_eos": True}).encode())
        assert code == 200 and answer["usage"]["completion_tokens"] == 5
    finally:
        proc.terminate()
        proc.wait(30)
