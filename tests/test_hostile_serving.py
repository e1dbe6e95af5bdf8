"""Hostile input to the server: a burst of large images, extreme aspect ratios, oversized and half-sent
requests, options that are not numbers, a port in use. Each server runs in a process group of its own."""

import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from isolated import memory_mb, png, reset_peak_memory, serving
from tiny_models import tiny_onnx

from cats_model.errors import UserError
from cats_model.serve.__main__ import main, options_from, parse_args
from cats_model.serve.app import DECODERS
from cats_model.serve.batcher import Batcher
from cats_model.serve.options import ServeOptions


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx")


def post(url: str, *images: tuple[str, bytes]) -> httpx.Response:
    return httpx.post(f"{url}/predict", files=[("file", image) for image in images], timeout=300)


def test_a_burst_of_large_images_leaves_the_server_answering_with_its_memory_back(model):
    big = png(4000, 4000)  # 16 Mpx in 50 kB
    with serving(model) as (url, process):
        assert post(url, ("small.png", png(64, 64))).status_code == 200  # warm
        reset_peak_memory(process.pid)  # the peak of loading the model is no part of it
        baseline = memory_mb(process.pid)
        assert post(url, ("big.png", big)).status_code == 200
        one = memory_mb(process.pid, "VmHWM") - baseline  # what decoding one large image takes
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: post(url, (f"big{i}.png", big)), range(8)))
        burst = memory_mb(process.pid, "VmHWM") - baseline
        after = memory_mb(process.pid) - baseline

        # A few hundred bytes of extreme aspect ratio cost what the output needs (the whole image resized to
        # the model's shorter side would be 37 x 3.7M pixels: half a gigabyte).
        tall = post(url, ("tall.png", png(1, 100_000)), ("wide.png", png(100_000, 1)))
        over_budget = post(url, *[(f"big{i}.png", big) for i in range(7)])  # 7 x 16 Mpx > 100 Mpx
        peak = memory_mb(process.pid, "VmHWM") - baseline
        health = httpx.get(f"{url}/health").json()
    assert [a.status_code for a in answers] == [200] * 8
    print(f"\none 16 Mpx PNG: +{one:.0f} MiB; 8 at once: peak +{burst:.0f} MiB, then +{after:.0f} MiB")
    # Decoding is bounded by the semaphore: 8 requests at once cost about what DECODERS images cost.
    assert burst < (DECODERS + 2) * one
    assert after < one / 2  # the memory of the burst went back to the system
    assert tall.status_code == 200 and [r["name"] for r in tall.json()["results"]] == ["tall.png", "wide.png"]
    assert over_budget.status_code == 413
    assert over_budget.json()["error"].startswith("the images hold 112 megapixels to decode; at most 100")
    assert peak < burst + one / 2 and health["status"] == "ok"  # neither cost more than the burst


def test_oversized_and_half_sent_requests_are_cut_off(model):
    with serving(model, "--idle-timeout-s", "1") as (url, _):
        huge = httpx.get(f"{url}/health", headers={"x-padding": "a" * 64 * 1024})
        assert huge.status_code == 431 and "16 KiB" in huge.json()["error"]

        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=60) as half_head:
            half_head.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            assert half_head.recv(1024) == b""  # closed by the server, not by this socket's timeout
        with socket.create_connection((host, int(port)), timeout=60) as half_body:
            half_body.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 1000\r\n\r\n--b\r\n"
            )
            answer = b""
            while not answer.endswith(b"}"):  # the JSON error ends the answer
                answer += half_body.recv(4096) or b"}"
        assert answer.startswith(b"HTTP/1.1 408") and b"stopped arriving for 1 s" in answer
        assert httpx.get(f"{url}/health").status_code == 200


def test_an_answer_refusing_a_request_reaches_a_client_that_is_still_sending(model):
    """The server answers a request too large before reading all of it, and closes: the answer must not be lost
    to the reset of a socket closed with unread input (the client's system drops what it has not read yet)."""
    with serving(model, "--max-megabytes", "1") as (url, _):
        # A head of 1 MiB: the server has read a part of it (over the 16 KiB limit, unfinished) when it answers.
        huge = httpx.get(f"{url}/health", headers={"x-padding": "a" * 2**20})
        assert huge.status_code == 431 and "16 KiB" in huge.json()["error"]
        # A body over the limit is refused on its declared length, before it is read.
        large = httpx.post(f"{url}/predict", content=b"x" * 8 * 2**20, headers={"content-type": "image/png"})
        assert large.status_code == 413 and "1 MiB allowed" in large.json()["error"]
        assert httpx.get(f"{url}/health").status_code == 200


@pytest.mark.parametrize(
    "args, sentence",
    [
        (["--max-wait-ms", "nan"], "--max-wait-ms must be a number in [0, 1000], got nan"),
        (["--max-wait-ms", "inf"], "--max-wait-ms must be a number in [0, 1000], got inf"),
        (["--max-megabytes", "nan"], "--max-megabytes must be a number in (0, 1024], got nan"),
        (["--max-megabytes", "inf"], "--max-megabytes must be a number in (0, 1024], got inf"),
        (["--max-batch-size", "0"], "--max-batch-size must be an integer in [1, 4096], got 0"),
        (["--idle-timeout-s", "nan"], "--idle-timeout-s must be a number in (0, 3600], got nan"),
    ],
)
def test_serve_options_that_are_not_finite_numbers_are_one_line(model, args, sentence):
    with pytest.raises(UserError) as error:
        options_from(parse_args([str(model), *args]))
    assert str(error.value) == sentence
    with pytest.raises(UserError):
        ServeOptions(**{args[0].removeprefix("--").replace("-", "_"): float(args[1])})


def test_serving_options_from_a_settings_file_are_checked_as_the_command_line_is():
    where = "modal.yml serve.options"
    with pytest.raises(UserError) as error:
        ServeOptions.from_settings({"max_wait_ms": float("nan")}, where)
    assert str(error.value) == f"{where}.max_wait_ms must be a number in [0, 1000], got nan"
    with pytest.raises(UserError) as error:
        ServeOptions.from_settings({"max_file": 32}, where)
    assert str(error.value).startswith(
        f"{where}.max_file is not a serving option (did you mean {where}.max_files?)"
    )
    assert "\n" not in str(error.value)
    assert ServeOptions.from_settings({"max_files": 32}, where) == ServeOptions(max_files=32)


def test_the_batcher_refuses_a_wait_that_is_not_a_number():
    with pytest.raises(ValueError):
        Batcher(list, max_batch_size=1, max_wait_ms=float("nan"))


def test_a_port_in_use_is_one_line_with_a_port_hint(model, capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            main([str(model), "--port", str(port)])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""  # no "serving ... at" before the error
    assert err == (
        f"error: port {port} on 127.0.0.1 is already in use (another server?): stop it, or choose another with "
        "--port N\n"
    )


def test_an_opt_in_token_keeps_out_who_does_not_send_it(model, monkeypatch):
    from fastapi.testclient import TestClient

    from cats_model.inference import load_model
    from cats_model.serve.app import create_app
    from cats_model.serve.token import TOKEN_ENV

    token = "correct-horse-battery-staple"
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(UserError, match=f"{TOKEN_ENV} holds 5 characters: use 16 or more"):
        create_app(load_model(model))
    monkeypatch.setenv(TOKEN_ENV, token)
    photo = [("file", ("a.png", png(40, 30)))]
    with TestClient(create_app(load_model(model))) as client:
        assert client.get("/health").status_code == 200  # open: says nothing about the model
        for answer in (client.get("/model"), client.get("/"), client.post("/predict", files=photo),
                       client.get("/model", headers={"Authorization": "Bearer wrong-token-of-some-length"})):  # fmt: skip
            assert answer.status_code == 401 and answer.json()["error"].startswith(
                "this server needs its token"
            )
        bearer = {"Authorization": f"Bearer {token}"}
        assert client.post("/predict", files=photo, headers=bearer).status_code == 200
        opened = client.get(f"/?token={token}", follow_redirects=False)  # a browser, once
        assert opened.status_code == 303 and opened.headers["location"] == "/"
        assert client.get("/").text.startswith("<!doctype html>")  # the cookie it set opens the page
        assert client.post("/predict", files=photo).status_code == 200  # and the page's requests


def test_sigterm_stops_the_server_while_a_request_is_still_arriving(model):
    import signal

    with serving(model, "--idle-timeout-s", "3600", "--shutdown-grace-s", "1") as (url, process):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=60) as slow:
            slow.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 1000\r\n\r\n--b\r\n"
            )
            httpx.get(f"{url}/health")  # the slow request is under way
            process.send_signal(signal.SIGTERM)
            # It gave the request its grace period, then stopped (uvicorn ends by re-raising the signal).
            assert process.wait(timeout=120) in (0, -signal.SIGTERM)
