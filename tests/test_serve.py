"""Serving a model: the API in-process and through a real server on loopback, bad input, the batcher, load."""

import asyncio
import io
import json
import os
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cats_model.bench.serving import multipart, multipart_body, running_server, send
from cats_model.config import compose_train_config
from cats_model.data.oxford import OxfordPet
from cats_model.inference import load_model
from cats_model.predict import predict_files
from cats_model.serve.app import create_app
from cats_model.serve.batcher import Batcher
from cats_model.serve.options import ServeOptions

pytestmark = pytest.mark.slow  # the module's model is trained (seconds)
LIMITS = ServeOptions(max_files=4, max_megabytes=1)


@pytest.fixture(scope="module")
def trained(learned_run, test_split) -> tuple[str, list[str]]:
    """The shared model of the synthetic data (tests/conftest.py) and some cat photos of its test split."""
    return learned_run[1]["best_model_path"], [p for p in test_split if Path(p).name[0].isupper()][::9][:12]


@pytest.fixture(scope="module")
def dogs(test_split) -> list[str]:
    """Dog photos of the model's test split: no cat to see."""
    return [p for p in test_split if Path(p).name[0].islower()][::5]


@pytest.fixture(scope="module")
def test_split(tmp_path_factory) -> list[str]:
    dataset = OxfordPet(compose_train_config(["data=synthetic"], tmp_path_factory.mktemp("cfg")).data.root)
    return [str(dataset.image_path(record)) for record in dataset.split("test")]


@pytest.fixture(scope="module")
def expected(trained) -> dict[str, list[dict]]:
    """What `predict` says about each photo: the reference every answer of the server is held to."""
    checkpoint, photos = trained
    return {
        row["path"]: row["predictions"] for row in predict_files(load_model(checkpoint, "cpu"), photos, k=3)
    }


@pytest.fixture(scope="module")
def client(trained):
    with TestClient(create_app(load_model(trained[0], "cpu"), LIMITS)) as client:
        yield client


def files(*paths: str) -> list[tuple[str, tuple[str, bytes]]]:
    return [("file", (Path(p).name, Path(p).read_bytes())) for p in paths]


def assert_same_predictions(answer: dict, paths: list[str], expected: dict) -> None:
    assert [r["name"] for r in answer["results"]] == [Path(p).name for p in paths]
    for result, path in zip(answer["results"], paths):
        assert [p["label"] for p in result["predictions"]] == [p["label"] for p in expected[path]]
        assert [p["probability"] for p in result["predictions"]] == pytest.approx(
            [p["probability"] for p in expected[path]], abs=1e-5
        )


def test_the_api_answers_what_predict_prints(client, trained, expected):
    checkpoint, photos = trained
    response = client.post("/predict", files=files(*photos[:4]), data={"top_k": "3"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert_same_predictions(answer, photos[:4], expected)
    assert answer["model"] == {
        "backbone": "mobilenet_v3_small",
        "kind": "checkpoint",
        "file": Path(checkpoint).name,
    }
    assert answer["elapsed_ms"] > 0
    assert (
        len(client.post("/predict?top_k=1", files=files(photos[0])).json()["results"][0]["predictions"]) == 1
    )

    about = client.get("/model").json()
    assert tuple(about["class_names"]) == load_model(checkpoint, "cpu").info.class_names
    assert (about["backbone"], about["image_size"], about["kind"]) == ("mobilenet_v3_small", 64, "checkpoint")
    metrics = json.loads((Path(checkpoint).parent.parent / "metrics.json").read_text())
    assert about["metrics"]["test/acc"] == metrics["test/acc"]
    assert about["limits"]["max_files"] == 4
    assert client.get("/health").json()["status"] == "ok"


@pytest.fixture(scope="module")
def verdicts(trained, dogs) -> dict[str, dict]:
    """What `predict` says of the cats and dogs: is it a cat, with what probability."""
    checkpoint, photos = trained
    return {row["path"]: row for row in predict_files(load_model(checkpoint, "cpu"), [*photos, *dogs], k=3)}


def test_the_api_says_whether_a_photo_shows_a_cat_as_predict_does(client, trained, dogs, verdicts):
    checkpoint, photos = trained
    assert not verdicts[dogs[0]]["is_cat"] and verdicts[photos[0]]["is_cat"]  # this model knows a dog
    answer = client.post("/predict", files=files(photos[0], dogs[0])).json()
    for result, path in zip(answer["results"], [photos[0], dogs[0]]):
        assert result["is_cat"] == verdicts[path]["is_cat"]
        assert result["cat_probability"] == pytest.approx(verdicts[path]["cat_probability"], abs=1e-5)
        assert len(result["predictions"]) == 3  # the breeds all the same, for whoever wants them
    metrics = json.loads((Path(checkpoint).parent.parent / "metrics.json").read_text())
    about = client.get("/model").json()
    assert about["cat_threshold"] == pytest.approx(metrics["cat_threshold"])
    assert about["metrics"]["test/dog_rejection"] == metrics["test/dog_rejection"]


def bad_files(folder: Path) -> dict[str, bytes]:
    folder.mkdir(exist_ok=True)
    jpeg = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 120, 40)).save(jpeg, format="JPEG")
    bomb = io.BytesIO()
    Image.new("1", (15000, 15000)).save(bomb, format="PNG")  # 225 Mpx in a few hundred kB
    return {
        "text.jpg": b"not a photo at all\n",
        "empty.jpg": b"",
        "truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
        "bomb.png": bomb.getvalue(),
    }


def test_bad_input_gets_one_sentence_and_the_server_goes_on(client, trained, expected, tmp_path):
    checkpoint, photos = trained
    sentences = {
        "text.jpg": "text.jpg is not an image",
        "empty.jpg": "empty.jpg is not an image",
        "truncated.jpg": "truncated.jpg could not be decoded (image file is truncated",
        "bomb.png": "bomb.png has too many pixels to decode safely",
    }
    for name, data in bad_files(tmp_path).items():
        response = client.post("/predict", files=[("file", (name, data))])
        assert response.status_code == 422 and response.json()["error"].startswith(sentences[name]), (
            response.text
        )
    over = b"x" * (LIMITS.max_megabytes * 2**20 + 1)
    requests = {
        "too many files": (
            dict(files=files(*photos[:5])),
            413,
            "5 files in one request; at most 4 are allowed",
        ),
        "too many bytes": (
            dict(files=[("file", ("big.jpg", over))]),
            413,
            "the request is larger than the 1 MiB",
        ),
        "no file": (dict(files=[("top_k", (None, b"2"))]), 400, "the request holds no image"),
        "not multipart": (dict(json={"image": "cat"}), 415, "send the images as multipart/form-data"),
        "bad top_k": (dict(files=files(photos[0]), data={"top_k": "0"}), 422, "top_k must be a whole number"),
    }
    for case, (arguments, status, sentence) in requests.items():
        response = client.post("/predict", **arguments)
        assert response.status_code == status and response.json()["error"].startswith(sentence), (
            case,
            response.text,
        )

    big_body, content_type = multipart_body("big.jpg", over)

    def chunks():  # no Content-Length: the body is counted as it arrives
        for start in range(0, len(big_body), 2**18):
            yield big_body[start : start + 2**18]

    response = client.post("/predict", content=chunks(), headers={"content-type": content_type})
    assert response.status_code == 413 and response.json()["error"].startswith("the request is larger")

    response = client.post("/predict", files=files(photos[0]))  # still answering
    assert response.status_code == 200
    assert_same_predictions(response.json(), photos[:1], expected)


def test_the_batcher_runs_items_that_arrive_together_as_one_batch():
    calls = []

    def double(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [2 * item for item in items]

    async def prepared(batcher, item, seconds):
        with batcher.coming():
            await asyncio.sleep(seconds)  # being decoded
        return await batcher(item)

    async def scenario():
        batcher = Batcher(double, max_batch_size=4, max_wait_ms=500)
        await batcher.start()
        together = await asyncio.gather(*(batcher(i) for i in range(10)))
        alone = await batcher(7)  # nothing else on its way: no waiting for company
        on_the_way = await asyncio.gather(prepared(batcher, 1, 0), prepared(batcher, 2, 0.05))
        failed = await asyncio.gather(batcher("bad"), batcher("ok"), return_exceptions=True)
        after = await batcher(21)
        await batcher.stop()
        return together, alone, on_the_way, failed, after, batcher

    together, alone, on_the_way, failed, after, batcher = asyncio.run(scenario())
    assert together == [2 * i for i in range(10)] and alone == 14 and on_the_way == [2, 4] and after == 42
    # at most max_batch_size at a time, in arrival order; an item being prepared is waited for
    assert calls[:5] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [7], [1, 2]]
    assert isinstance(failed[0], ValueError) and isinstance(failed[1], ValueError)  # one batch, one error
    assert (batcher.batches, batcher.images) == (7, 16)


@pytest.fixture(scope="module")
def server(trained):
    with running_server(trained[0], "--device", "cpu", "--max-files", "4", "--max-megabytes", "1") as url:
        yield url


def test_a_real_server_answers_like_predict_and_survives_bad_input(server, trained, expected, tmp_path):
    checkpoint, photos = trained
    response = httpx.post(f"{server}/predict", files=files(*photos[:3]), timeout=60)
    assert response.status_code == 200
    assert_same_predictions(response.json(), photos[:3], expected)
    for name, data in bad_files(tmp_path).items():
        response = httpx.post(f"{server}/predict", files=[("file", (name, data))], timeout=60)
        assert response.status_code == 422 and response.json()["error"].startswith(name)
    big = httpx.post(f"{server}/predict", files=[("file", ("big.jpg", b"x" * 2**21))], timeout=60)
    assert big.status_code == 413 and "1 MiB" in big.json()["error"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    assert httpx.get(server).text.startswith("<!doctype html>")


def test_64_concurrent_requests_from_16_clients_are_all_answered_correctly(server, trained, expected):
    checkpoint, photos = trained
    order = [photos[i % len(photos)] for i in range(64)]
    before = httpx.get(f"{server}/health").json()
    result = send(server, [multipart(p) for p in order], clients=16)
    after = httpx.get(f"{server}/health").json()
    for path, (status, answer) in zip(order, result["answers"]):
        assert status == 200
        assert_same_predictions(answer, [path], expected)
    batches = after["batches"] - before["batches"]
    assert after["images"] - before["images"] == 64
    print(
        f"\n64 requests from 16 clients: {result['images_per_sec']:.1f} images/s, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, {batches} forward passes (mean batch {64 / batches:.1f})"
    )


def test_the_serve_bench_runs_both_sides_in_one_run(trained, tmp_path):
    from cats_model.bench.cli import main

    checkpoint, photos = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in photos[:4]:
        (folder / Path(photo).name).write_bytes(Path(photo).read_bytes())
    out = tmp_path / "bench.json"
    results = main(["serve", checkpoint, "--images", str(folder), "--requests", "8", "--clients", "4",
                    "--rounds", "1", "--json", str(out)])  # fmt: skip
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    runs = results["runs"]
    assert list(runs) == ["one at a time", "4 clients"] and runs["one at a time"]["mean_batch"] == 1.0
    assert all(
        r["failed"] == 0 and r["images_per_sec"] > 0 and r["p50_ms"] <= r["p99_ms"] for r in runs.values()
    )
    assert results["speedup"] == pytest.approx(
        runs["4 clients"]["images_per_sec"] / runs["one at a time"]["images_per_sec"]
    )


def test_serve_refuses_bad_options_in_one_line(trained, capsys):
    from cats_model.serve.__main__ import main

    for args, sentence in ((["--max-batch-size", "0"], "--max-batch-size must be an integer in [1, 4096]"),
                           (["--port", "70000"], "--port must be 1 to 65535"),
                           (["--shutdown-grace-s", "nan"], "--shutdown-grace-s must be a number in [0, 3600]"),
                           (["--device", "meta"], "--device meta: only cpu and cuda")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main([trained[0], *args])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().startswith(f"error: {sentence}")


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium, driven by Selenium through Debian's chromedriver (.ci/run installs both)."""
    if not Path(CHROMEDRIVER).is_file():
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing: .ci/run installs them with apt-get")
        pytest.skip("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_classifies_a_chosen_photo_and_explains_a_non_image(
    server, browser, trained, expected, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    checkpoint, photos = trained
    wait = WebDriverWait(browser, 60)
    browser.set_window_size(1000, 760)
    browser.get(server)
    wait.until(lambda d: "mobilenet_v3_small" in d.find_element(By.ID, "model").text)
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)  # the keyboard reaches the real file input
    assert browser.switch_to.active_element.get_attribute("id") == "files"
    assert browser.find_element(By.ID, "results").get_attribute("aria-live") == "polite"

    chooser = browser.find_element(By.ID, "files")
    for photo in photos[:3]:
        chooser.send_keys(photo)
        wait.until(
            lambda d, name=Path(photo).name: any(
                card.find_elements(By.CSS_SELECTOR, ".bars li")
                for card in d.find_elements(By.CSS_SELECTOR, ".card")
                if card.find_element(By.CLASS_NAME, "name").text == name
            )
        )
    for card in browser.find_elements(By.CSS_SELECTOR, "#results .card"):
        photo = next(p for p in photos if Path(p).name == card.find_element(By.CLASS_NAME, "name").text)
        top = card.find_element(By.CSS_SELECTOR, ".bars li .label span").text
        assert top == expected[photo][0]["label"]  # the breed predict names
        assert len(card.find_elements(By.CSS_SELECTOR, ".bars li")) == 3
        assert "ms on the server" in card.find_element(By.CLASS_NAME, "message").text

    notes = tmp_path / "notes.jpg"
    notes.write_text("milk, eggs, cat food\n")
    chooser.send_keys(str(notes))
    error = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .card.error .message"))[0]
    assert error.text == "notes.jpg is not an image (or not in a format Pillow reads)"

    screenshots = {"desktop": (1000, 760), "phone": (390, 844)}
    for name, size in screenshots.items():
        browser.set_window_size(*size)
        path = tmp_path / f"page-{name}.png"
        assert browser.save_screenshot(str(path))
        print(f"\nscreenshot of the page ({name}): {path}")
    page = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert page[0] <= page[1]  # nothing wider than a phone's screen: no sideways scrolling


def test_the_page_says_when_a_photo_shows_no_cat_and_shows_its_breeds_on_request(
    server, browser, trained, dogs, verdicts, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    dog, cat = dogs[0], trained[1][0]
    assert not verdicts[dog]["is_cat"] and verdicts[cat]["is_cat"]
    wait = WebDriverWait(browser, 60)
    browser.set_window_size(1000, 760)
    browser.get(server)
    wait.until(lambda d: "mobilenet_v3_small" in d.find_element(By.ID, "model").text)

    def card_of(photo: str):
        def answered(driver):
            for card in driver.find_elements(By.CSS_SELECTOR, "#results .card"):
                if card.find_element(By.CLASS_NAME, "name").text == Path(
                    photo
                ).name and "ms on the server" in (card.find_element(By.CLASS_NAME, "message").text):
                    return card
            return None

        return wait.until(answered)

    chooser = browser.find_element(By.ID, "files")
    chooser.send_keys(dog)
    card = card_of(dog)
    percent = f"{verdicts[dog]['cat_probability'] * 100:.1f}"
    verdict = card.find_element(By.CLASS_NAME, "verdict")
    assert verdict.is_displayed()
    assert verdict.text == f"This does not look like a cat (cat probability {percent}%)."
    bars, toggle = card.find_element(By.CLASS_NAME, "bars"), card.find_element(By.CLASS_NAME, "show-anyway")
    assert not bars.is_displayed() and toggle.is_displayed() and toggle.text == "show anyway"
    assert toggle.get_attribute("aria-expanded") == "false"
    toggle.click()
    assert bars.is_displayed() and toggle.get_attribute("aria-expanded") == "true"
    breeds = [label.text for label in card.find_elements(By.CSS_SELECTOR, ".bars li .label span:first-child")]
    assert breeds == [p["label"] for p in verdicts[dog]["predictions"]]
    toggle.click()
    assert not bars.is_displayed()

    chooser.send_keys(cat)
    card = card_of(cat)
    assert card.find_element(By.CLASS_NAME, "bars").is_displayed()
    first = card.find_element(By.CSS_SELECTOR, ".bars li .label span").text
    assert first == verdicts[cat]["predictions"][0]["label"]
    assert not card.find_element(By.CLASS_NAME, "verdict").is_displayed()
    assert not card.find_element(By.CLASS_NAME, "show-anyway").is_displayed()
    assert browser.save_screenshot(str(tmp_path / "page-not-a-cat.png"))
    print(f"\nscreenshot of the page with a dog and a cat: {tmp_path / 'page-not-a-cat.png'}")
