"""reports.serve: the API in-process on the trained tiny BERT, the CLI's refusals, and the real server
driven by Debian's Chromium."""

from __future__ import annotations

import asyncio
import csv
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from fastapi.testclient import TestClient

from reports.serve.__main__ import main, warning_for_host
from reports.serve.app import MAX_BODY_BYTES, build_app
from reports.serve.batcher import MicroBatcher
from reports.serve.card import model_card
from reports.serve.classifier import Classifier
from reports.serve.schemas import MAX_TEXTS
from search.objective import Objective
from search.storage import open_storage
from search.tracking import RunLink
from studies.spaces import FloatRange
from trainers.errors import ConfigError
from trainers.models import load_trained_classifier
from trainers.prepare import prepare_task

STUDY = "serve-lora"
RUN_URL = "https://wandb.ai/someone/toxitune/runs/{number}"
CHROMIUM = Path("/usr/bin/chromium")


class LinkedTracker:
    """A tracker whose runs are online: each has a page."""

    def start_trial(self, number, config, params):
        return RunLink(f"someone/toxitune/{number}", RUN_URL.format(number=number))

    def log_eval(self, record):
        pass

    def finish_trial(self, state, summary):
        pass


@pytest.fixture(scope="module")
def storage_url(trained_checkpoint, toy_data, tmp_path_factory) -> str:
    """A study of two LoRA trials, each tracked online, in a SQLite file."""
    from trainers.config import DataConfig, TeacherConfig, TrainConfig

    folder = tmp_path_factory.mktemp("studies")
    url = f"sqlite:///{folder}/studies.db"
    base = TrainConfig(
        method="lora",
        data=DataConfig(dataset=str(toy_data), max_length=32),
        teacher=TeacherConfig(name=str(trained_checkpoint)),
        epochs=1,
        batch_size=16,
        patience=0,
    )
    task = prepare_task(base, cache_dir=folder / "cache", progress=False)
    study = optuna.create_study(study_name=STUDY, storage=url, direction="maximize")
    objective = Objective(
        base=base, space={"lr": FloatRange(1e-4, 1e-3, log=True)}, task=task, tracker=LinkedTracker(), progress=False
    )  # fmt: skip
    study.optimize(objective, n_trials=2, catch=(optuna.TrialPruned,))
    return url


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """An experiment folder with a report (a page and a figure) and a file beside it that is not served."""
    folder = tmp_path_factory.mktemp("experiment")
    report = folder / "report"
    report.mkdir()
    (report / "index.html").write_text("<html><body><h1>The verdict</h1><img src='figure.png'></body></html>")
    (report / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "secret.txt").write_text("not for the web")
    (report / "link").symlink_to(folder / "secret.txt")
    return folder


@pytest.fixture(scope="module")
def classifier(trained_checkpoint) -> Classifier:
    return Classifier(trained_checkpoint)


@pytest.fixture(scope="module")
def client(classifier, storage_url, experiment):
    app = build_app(
        classifier=classifier, storage=open_storage(storage_url, create=False), report=experiment / "report"
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_a_text_gets_the_models_label_and_a_probability_per_class(client, trained_checkpoint):
    texts = ["you are dumb and awful", "a good day"]
    answers = client.post("/api/predict", json={"texts": texts}).json()
    model = load_trained_classifier(trained_checkpoint)
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(trained_checkpoint)(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**batch).logits.softmax(dim=-1)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    for answer, probabilities in zip(answers, expected.tolist(), strict=True):
        assert list(answer["scores"]) == labels
        assert [answer["scores"][label] for label in labels] == pytest.approx(probabilities, abs=1e-5)
        assert answer["label"] == labels[int(np.argmax(probabilities))]
    assert {answer["label"] for answer in answers} == set(labels), "the trained model tells them apart"
    one = client.post("/api/predict", json={"text": texts[0]}).json()
    assert one["label"] == answers[0]["label"]
    assert one["scores"] == pytest.approx(answers[0]["scores"], abs=1e-5)


def test_a_text_longer_than_the_model_reads_is_truncated_not_refused(client, classifier):
    long = " ".join(["hate"] * (classifier.max_length * 20))
    response = client.post("/api/predict", json={"text": long})
    assert response.status_code == 200
    assert response.json()["label"] == client.post("/api/predict", json={"text": long[:200]}).json()["label"]


def _streamed(body: bytes):
    yield body  # a generator has no length, so the body goes out chunked, with no Content-Length


@pytest.mark.parametrize(
    ("content", "headers", "status", "detail"),
    [
        ({}, None, 422, 'give either "text" \\(a string\\) or "texts"'),
        ({"texts": None}, None, 422, 'give either "text"'),
        ({"text": 3}, None, 422, "^text: Input should be a valid string"),
        ({"texts": ["fine", 7]}, None, 422, "^texts.1: Input should be a valid string"),
        ({"text": ""}, None, 422, "^text: empty text$"),
        ({"text": " \n\t"}, None, 422, "^text: empty text$"),
        ({"texts": ["fine", ""]}, None, 422, "^texts.1: empty text$"),
        ({"texts": []}, None, 422, "^texts: List should have at least 1 item"),
        ({"texts": ["a"] * (MAX_TEXTS + 1)}, None, 422, f"^texts: List should have at most {MAX_TEXTS} items"),
        ({"text": "a", "texts": ["b"]}, None, 422, 'give either "text"'),
        ({"txt": "a"}, None, 422, "^txt: Extra inputs are not permitted"),
        (["a"], None, 422, "Input should be a valid dictionary"),
        (b'{"text": "a"', {"content-type": "application/json"}, 422, "^invalid JSON at character 12: "),
        (b'{"texts": ["ok", "a\\ud800"]}', {"content-type": "application/json"}, 422, r"^texts.1: not valid Unicode \(a lone surrogate at character 1\)$"),
        (b'{"text": "\xff"}', {"content-type": "application/json"}, 400, "error parsing the body"),
        (b"[" * 100_000 + b"]" * 100_000, {"content-type": "application/json"}, 400, "error parsing the body"),
        (b"", {"content-type": "application/json"}, 422, '^no body; send a JSON object with "text" or "texts"'),
        (b'{"text": "a"}', {"content-type": "text/plain"}, 415, r"Content-Type: application/json \(got text/plain\)"),
        (b"text=a", {"content-type": "application/x-www-form-urlencoded"}, 415, "got application/x-www-form-urlencoded"),
        (b'{"text": "a"}', {}, 415, r"\(got none\)"),
        (b'{"text": "' + b"a" * MAX_BODY_BYTES + b'"}', {"content-type": "application/json"}, 413, "the body is over 1,048,576 bytes"),
        ("streamed", {"content-type": "application/json"}, 413, "the body is over 1,048,576 bytes"),
    ],
)  # fmt: skip
def test_bad_input_is_a_4xx_that_says_what_was_wrong(client, content, headers, status, detail):
    if content == "streamed":
        content = _streamed(b'{"text": "' + b"a" * MAX_BODY_BYTES + b'"}')
    if isinstance(content, dict | list):
        response = client.post("/api/predict", json=content)
    else:
        response = client.post("/api/predict", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert re.search(detail, response.json()["detail"]), response.json()
    assert "Traceback" not in response.text
    assert client.get("/healthz").json()["status"] == "ok", "the server is still up"


def test_an_error_inside_the_model_is_a_json_500_without_a_traceback(classifier, monkeypatch):
    def broken(texts):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(classifier, "predict", broken)
    with TestClient(build_app(classifier=classifier), raise_server_exceptions=False) as client:
        response = client.post("/api/predict", json={"text": "a"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; the server's log has the details"}


def test_concurrent_requests_share_batches_and_never_run_the_model_at_once():
    running, most, sizes = 0, 0, []
    lock = threading.Lock()

    def predict(texts):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        sizes.append(len(texts))
        with lock:
            running -= 1
        return [text.upper() for text in texts]

    async def clients():
        batcher = MicroBatcher(predict, max_texts=8)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher([f"a{i}", f"b{i}"]) for i in range(20)))
        finally:
            await batcher.stop()

    answers = asyncio.run(clients())
    assert answers == [[f"A{i}", f"B{i}"] for i in range(20)], "each caller gets its own answers, in order"
    assert most == 1, "the model never runs twice at once"
    assert sum(sizes) == 40 and max(sizes) <= 8
    assert len(sizes) < 20, "requests that waited were batched together"


def test_a_failed_batch_fails_its_requests_and_the_next_batch_runs():
    calls = []

    def predict(texts):
        calls.append(texts)
        if len(calls) == 1:
            raise ValueError("bad batch")
        return texts

    async def two_rounds():
        batcher = MicroBatcher(predict)
        await batcher.start()
        try:
            with pytest.raises(ValueError, match="bad batch"):
                await batcher(["x"])
            return await batcher(["y"])
        finally:
            await batcher.stop()

    assert asyncio.run(two_rounds()) == ["y"]


def test_the_model_card_reads_either_kind_of_metrics_json(trained_checkpoint, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_checkpoint, run / "model")
    classifier = Classifier(run / "model")
    card = model_card(classifier)
    assert (card.method, card.test, card.layers) == (None, {}, 4)
    assert card.parameters == sum(p.numel() for p in classifier.model.parameters())
    assert card.size_bytes == sum(p.stat().st_size for p in (run / "model").iterdir())

    (run / "metrics.json").write_text(
        json.dumps({"method": "odd", "test": {"macro_f1": 0.81, "accuracy": 0.9}})
    )
    card = model_card(classifier)
    assert card.method == "odd"
    assert {name: (m.mean, m.ci95, m.n) for name, m in card.test.items()} == {
        "accuracy": (0.9, None, 1),
        "macro_f1": (0.81, None, 1),
    }

    summary = {"mean": 0.8, "ci95": 0.02, "values": [0.78, 0.8, 0.82], "n": 3}
    candidates = [
        {"trial": 4, "config": {"method": "lora"}, "test": {"macro_f1": summary}},
        {"trial": 7, "config": {"method": "even"}, "test": {"macro_f1": {**summary, "mean": 0.5}}},
    ]
    (run / "metrics.json").write_text(json.dumps({"winner": 4, "candidates": candidates}))
    card = model_card(classifier)
    assert card.method == "lora"
    assert {name: (m.mean, m.ci95, m.n) for name, m in card.test.items()} == {"macro_f1": (0.8, 0.02, 3)}


def test_the_dashboard_shows_each_trials_wandb_link_and_changes_nothing(client, storage_url):
    [summary] = client.get("/api/studies").json()["study_summaries"]
    assert summary["study_name"] == STUDY
    study = client.get(f"/api/studies/{summary['study_id']}").json()
    for trial in study["trials"]:
        attrs = {attr["key"]: attr["value"] for attr in trial["user_attrs"]}
        assert attrs["wandb_url"] == RUN_URL.format(number=trial["number"])
    assert client.get("/dashboard/").status_code == 200
    for method, path in [("DELETE", f"/api/studies/{summary['study_id']}"), ("POST", "/api/studies")]:
        response = client.request(method, path, json={"study_name": "new", "directions": ["maximize"]})
        assert response.status_code == 405
        assert "read-only" in response.json()["detail"]
    assert optuna.get_all_study_names(storage_url) == [STUDY]


def test_the_report_is_served_and_nothing_beside_it(client):
    assert "The verdict" in client.get("/report/").text
    assert client.get("/report/figure.png").content.startswith(b"\x89PNG")
    for path in (
        "/report/link",
        "/report/..%2fsecret.txt",
        "/report/%2e%2e/secret.txt",
        "/report/%2e%2e%2fsecret.txt",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "not for the web" not in response.text


def test_docs_holds_the_schema_and_fetches_nothing_from_elsewhere(client):
    page = client.get("/docs").text
    assert not re.search(r"https?://", page)
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/api/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/PredictRequest")
    assert {"text", "texts"} <= schema["components"]["schemas"]["PredictRequest"]["properties"].keys()
    for asset in re.findall(r"(?:src|href)=['\"]([^'\"]+)", page):
        assert client.get(asset).status_code == 200, asset


def test_a_server_without_a_model_sends_visitors_to_its_parts(storage_url, experiment):
    storage = open_storage(storage_url, create=False)
    for parts, landing in [
        ({"storage": storage}, "/dashboard/"),
        ({"report": experiment / "report"}, "/report/"),
    ]:
        with TestClient(build_app(**parts), follow_redirects=False) as client:
            assert client.get("/").headers["location"] == landing
            response = client.post("/api/predict", json={"text": "a"})
            assert response.status_code == 404 and "--model" in response.json()["detail"]


@pytest.mark.parametrize(
    ("host", "warns"), [("127.0.0.1", False), ("localhost", False), ("::1", False), ("0.0.0.0", True), ("10.1.2.3", True)]
)  # fmt: skip
def test_listening_beyond_this_machine_warns(host, warns):
    warning = warning_for_host(host)
    assert (warning is not None) == warns
    if warns:
        assert warning.startswith(f"warning: listening on {host}: anyone")


def _model_with(trained_checkpoint: Path, folder: Path, change) -> Path:
    shutil.copytree(trained_checkpoint, folder)
    change(folder)
    return folder


def _pickle_only(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def _remote_code(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text("raise SystemExit('ran remote code')")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give at least one of --model, --storage or --experiment"),
        (["--model", "MISSING"], "--model MISSING: no such folder"),
        (["--model", "PICKLE"], r"--model PICKLE: only pickle weights \(pytorch_model.bin\)"),
        (
            ["--model", "REMOTE"],
            r"--model REMOTE: config.json maps to code shipped in the folder \(auto_map\)",
        ),
        (["--model", "BARE"], r"--model BARE: not a trained classifier \(config.json names BertModel\)"),
        (["--storage", "sqlite:///MISSING.db"], "no database MISSING.db"),
        (
            ["--storage", "postgresql://me:hunter2@127.0.0.1:1/db"],
            r"cannot open storage 'postgresql://me:\*\*\*@",
        ),
        (["--experiment", "MISSING"], "--experiment MISSING: no report/index.html"),
        (
            ["--experiment", "MISSING", "--port", "70000"],
            "a port is a number from 0 to 65535, but got '70000'",
        ),
    ],
)
def test_bad_parts_are_refused_before_the_server_listens(
    trained_checkpoint, tiny_checkpoint, tmp_path, args, message, capsys
):
    folders = {
        "MISSING": str(tmp_path / "missing"),
        "PICKLE": str(_model_with(trained_checkpoint, tmp_path / "pickle", _pickle_only)),
        "REMOTE": str(_model_with(trained_checkpoint, tmp_path / "remote", _remote_code)),
        "BARE": str(tiny_checkpoint),
    }
    args = [re.sub("|".join(folders), lambda m: folders[m[0]], arg) for arg in args]
    message = re.sub("|".join(folders), lambda m: re.escape(folders[m[0]]), message)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises((ConfigError, SystemExit)) as raised:
        main([*args, "--port", "0"])
    said = str(raised.value) if raised.type is ConfigError else capsys.readouterr().err
    assert re.search(message, said), said
    assert "hunter2" not in said
    assert sorted(tmp_path.rglob("*")) == before, "nothing left behind"


def test_a_refused_model_is_one_line_and_exit_code_2(trained_checkpoint, tmp_path):
    model = _model_with(trained_checkpoint, tmp_path / "remote", _remote_code)
    result = subprocess.run(
        [sys.executable, "-m", "reports.serve", "--model", str(model), "--port", "0"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --model ") and "auto_map" in lines[0], (
        result.stderr
    )
    assert "ran remote code" not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def server(trained_checkpoint, storage_url, experiment):
    """``python -m reports.serve`` with every part, on a free port of 127.0.0.1: its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "reports.serve", "--model", str(trained_checkpoint), "--storage", storage_url,
         "--experiment", str(experiment), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    ready, _, _ = select.select([process.stdout], [], [], 180)
    line = process.stdout.readline() if ready else ""
    match = re.search(r"at (http://127\.0\.0\.1:\d+/) \(Ctrl-C stops\)$", line.strip())
    if match is None:
        process.kill()
        pytest.fail(f"the server did not start: {line!r} {process.communicate()[1]}")
    assert "the demo, the studies of sqlite:///" in line and "the report" in line
    yield match[1]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "path",
    [
        "/report/../secret.txt",
        "/report/../../../../etc/passwd",
        "/report/..%2fsecret.txt",
        "/report/%2e%2e/secret.txt",
        "/report/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/report/..%5csecret.txt",
        "/report/%252e%252e/secret.txt",
        "/report//etc/passwd",
        "/report/link",
    ],
)
def test_path_traversal_out_of_the_report_gets_404(server, path):
    host, port = re.match(r"http://([^:]+):(\d+)/", server).groups()
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", path)  # sent as written: http.client leaves dots and escapes alone
    response = connection.getresponse()
    body = response.read().decode(errors="replace")
    assert response.status == 404, (path, body[:200])
    assert "not for the web" not in body and "root:" not in body


def _screenshot_is_not_blank(tab, path: Path) -> None:
    from PIL import Image

    tab.screenshot(path=str(path), full_page=True)
    pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert pixels.std() > 20, f"{path.name} shows a page, not a blank screen"


def test_the_pages_work_in_chromium(server, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        try:
            tab = browser.new_page(viewport={"width": 1100, "height": 900}, accept_downloads=True)
            elsewhere = []
            tab.on(
                "request",
                lambda request: None if request.url.startswith(server) else elsewhere.append(request.url),
            )
            tab.goto(server)
            tab.wait_for_selector("#model-facts dt")
            tab.fill("#text", "you are dumb and awful")
            tab.click("#classify")
            tab.wait_for_selector("#answer:not([hidden])")
            label = tab.inner_text("#label")
            bars = {
                bar.get_attribute("data-label"): float(bar.get_attribute("data-probability"))
                for bar in tab.query_selector_all("#bars .bar")
            }
            assert label == max(bars, key=bars.get)
            assert sum(bars.values()) == pytest.approx(1.0, abs=1e-4)
            assert tab.inner_text(f'#bars .bar[data-label="{label}"] .value').endswith("%")
            _screenshot_is_not_blank(tab, tmp_path / "demo.png")

            tab.click("#batch-classify")
            tab.wait_for_selector("#batch-table:not([hidden]) tbody tr")
            with tab.expect_download() as download:
                tab.click("#download-csv")
            rows = list(csv.DictReader(open(download.value.path(), newline="")))
            assert [row["text"] for row in rows] == tab.input_value("#batch-text").splitlines()
            assert {row["label"] for row in rows} <= set(bars)
            assert elsewhere == [], "the demo fetches nothing from anywhere else"

            tab.goto(server + "dashboard/")
            tab.wait_for_selector(f"text={STUDY}", timeout=60_000)
            _screenshot_is_not_blank(tab, tmp_path / "dashboard.png")
        finally:
            browser.close()


def test_a_busy_port_is_refused_in_one_line(experiment):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(
            ConfigError, match=rf"^cannot listen on 127\.0\.0\.1:{port} \(Address already in use\)$"
        ):
            main(["--experiment", str(experiment), "--port", str(port)])


def test_without_the_serve_extra_the_command_says_how_to_get_it(experiment, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what a core install, without the extra, has
    with pytest.raises(
        ConfigError, match=r"needs the serve extra \(uvicorn is missing\): pip install -e '\.\[serve\]'"
    ):
        main(["--experiment", str(experiment), "--port", "0"])
