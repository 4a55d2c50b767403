"""The browser page of `sertune serve`: real headless Chromium (selenium) against a real uvicorn server.

The page must show what the API answers for the same file: the tests POST each file with httpx as well
and compare the bars' `data-probability` attributes, the dimensions and the timeline's bands with it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from sertune.dimensions import Dimension
from test_inference import LABELS, RATE, make_run

from served import ServerProcess, launched_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = "headless Chromium is not installed (apt-get install chromium chromium-driver)"
# Clips up to 5 s are taken whole (the ~3-s sentence); longer ones are cut into 2-s windows, 1 s apart.
AUDIO = {"sample_rate": RATE, "max_seconds": 2.0, "eval_max_seconds": 5.0}
LONG_SECONDS = 20.0
WAIT_SECONDS = 30
TOLERANCE = 1e-3

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def clips(speech: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ~3-s sentence, 20 s of it repeated with pauses, and a file that is not audio."""
    root = tmp_path_factory.mktemp("web-clips")
    sf.write(root / "short.wav", speech, RATE, subtype="PCM_16")
    pause = np.zeros(RATE // 2, dtype=np.float32)
    repeats = int(LONG_SECONDS * RATE // (len(speech) + len(pause))) + 1
    long = np.concatenate([np.concatenate([speech, pause])] * repeats)[: int(LONG_SECONDS * RATE)]
    sf.write(root / "long.wav", long, RATE, subtype="PCM_16")
    (root / "notes.txt").write_text("these bytes are not audio\n")
    return {"short": root / "short.wav", "long": root / "long.wav", "text": root / "notes.txt"}


@pytest.fixture(scope="module")
def _server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`python -m sertune serve` with a classifier (a) and a multitask model (m), started but maybe not yet
    listening: the browser starts while the server imports torch (see `driver`)."""
    root = tmp_path_factory.mktemp("web-runs")
    make_run(root / "a", audio=AUDIO, seed=1)
    dimensions = [Dimension("arousal", 1.0, 5.0), Dimension("valence", 1.0, 5.0)]
    make_run(root / "m", audio=AUDIO, seed=4, dimensions=dimensions)
    with launched_server({"a": root / "a", "m": root / "m"}, root / "stderr.txt", "--device", "cpu") as server:
        yield server


@pytest.fixture(scope="module")
def server(_server_process: ServerProcess) -> str:
    """The base URL of the server, once it answers /health."""
    return _server_process.wait_until_up()


@pytest.fixture(scope="module")
def driver(_server_process: ServerProcess, clips: dict[str, Path]) -> Iterator[Any]:
    """Headless Chromium with its console log kept; its fake microphone plays the short sentence.

    It asks for the server process only to start after it: the tests name `driver` before `server`, so
    Chromium starts while the server is still importing (pytest sets fixtures up in argument order)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip(INSTALL_HINT)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1100,1300",
        # A microphone without a person: permission granted, and the capture device reads a WAV file.
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={clips['short']}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()


# -- helpers ---------------------------------------------------------------------------------------------
def _state(driver: Any) -> str:
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def _wait_for(driver: Any, *states: str) -> str:
    WebDriverWait(driver, WAIT_SECONDS).until(lambda d: _state(d) in states)
    return _state(driver)


def _open(driver: Any, url: str, model: str) -> None:
    """A fresh page with `model` chosen and the console log emptied."""
    driver.get(url)
    assert _wait_for(driver, "ready", "error") == "ready", driver.find_element(By.ID, "error").text
    Select(driver.find_element(By.ID, "model")).select_by_value(model)
    driver.get_log("browser")  # reading the log empties it: what follows is this test's own


def _upload_and_wait(driver: Any, path: Path) -> str:
    driver.find_element(By.ID, "file").send_keys(str(path))
    return _wait_for(driver, "done", "error")


def _api(url: str, driver: Any, model: str, path: Path) -> dict:
    """What POST /predict answers for `path`, asked as the page asks (with segment=vad where it offers that)."""
    params = {"model": model}
    if (
        driver.find_element(By.ID, "segment-field").is_displayed()
        and driver.find_element(By.ID, "segment").is_selected()
    ):
        params["segment"] = "vad"
    with open(path, "rb") as audio:
        response = httpx.post(
            f"{url}/predict", params=params, files={"file": (path.name, audio, "audio/wav")}, timeout=60
        )
    assert response.status_code == 200, response.text
    return response.json()


def _severe(driver: Any) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _bars(driver: Any) -> dict[str, float]:
    bars = driver.find_elements(By.CSS_SELECTOR, "#bars .bar[data-label]")
    return {bar.get_attribute("data-label"): float(bar.get_attribute("data-probability")) for bar in bars}


def _screenshot(driver: Any, path: Path) -> None:
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _no_alert(driver: Any) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 (the property raises when no alert() is open)


# -- tests -----------------------------------------------------------------------------------------------
def test_upload_shows_the_api_probabilities(driver: Any, server: str, clips: dict[str, Path], tmp_path: Path) -> None:
    _open(driver, server, "a")
    assert _upload_and_wait(driver, clips["short"]) == "done", driver.find_element(By.ID, "error").text
    expected = _api(server, driver, "a", clips["short"])
    shown = _bars(driver)
    assert list(shown) == LABELS  # every class, in the model's order
    for label, probability in expected["probabilities"].items():
        assert shown[label] == pytest.approx(probability, abs=TOLERANCE)
    assert driver.find_element(By.ID, "top-label").text == expected["label"]
    assert driver.find_element(By.CSS_SELECTOR, "#bars .bar.top").get_attribute("data-label") == expected["label"]
    percent = driver.find_element(By.CSS_SELECTOR, f'#bars .bar[data-label="{expected["label"]}"] .value').text
    assert percent == f"{100 * expected['probabilities'][expected['label']]:.1f}%"
    assert expected["windows"] is None and not driver.find_element(By.ID, "timeline-box").is_displayed()
    assert not driver.find_element(By.ID, "dimensions-box").is_displayed()
    assert not driver.find_element(By.ID, "error").is_displayed()
    _screenshot(driver, tmp_path / "short.png")
    assert _severe(driver) == []


def test_long_file_draws_a_timeline(driver: Any, server: str, clips: dict[str, Path], tmp_path: Path) -> None:
    _open(driver, server, "a")
    assert _upload_and_wait(driver, clips["long"]) == "done", driver.find_element(By.ID, "error").text
    expected = _api(server, driver, "a", clips["long"])
    parts = expected.get("segments") or expected["windows"]
    assert parts and len(parts) > 1
    timeline = driver.find_element(By.ID, "timeline")
    assert timeline.is_displayed()
    bands = timeline.find_elements(By.CSS_SELECTOR, "rect.band")
    assert len(bands) == len(parts)
    assert [band.get_attribute("data-label") for band in bands] == [part["label"] for part in parts]
    for band, part in zip(bands, parts, strict=True):
        assert float(band.get_attribute("data-start")) == pytest.approx(part["start"], abs=TOLERANCE)
        assert float(band.get_attribute("data-end")) == pytest.approx(part["end"], abs=TOLERANCE)
    legend = [entry.get_attribute("data-label") for entry in driver.find_elements(By.CSS_SELECTOR, "#legend li")]
    assert set(legend) == {part["label"] for part in parts}
    for label, probability in expected["probabilities"].items():
        assert _bars(driver)[label] == pytest.approx(probability, abs=TOLERANCE)
    _screenshot(driver, tmp_path / "long.png")
    assert _severe(driver) == []


def test_vad_segments_are_drawn_as_they_are(driver: Any, server: str) -> None:
    """An answer with `segments` (POST /predict?segment=vad) is drawn by them, gaps and all, not by its windows."""
    _open(driver, server, "a")
    segments = [
        {"start": 0.5, "end": 3.0, "label": "sad", "probabilities": dict.fromkeys(LABELS, 0.25)},
        {"start": 4.0, "end": 9.0, "label": "happy", "probabilities": dict.fromkeys(LABELS, 0.25)},
    ]
    answer = {"label": "sad", "probabilities": dict.fromkeys(LABELS, 0.25), "duration": 10.0, "silent": False}
    answer |= {"windows": [{"start": 0.0, "end": 2.0, "label": "angry", "probabilities": {}}], "segments": segments}
    # The page's own drawing function, given an answer as the segmenting server will send it.
    driver.execute_script("render(arguments[0], state.models[0], 'talk.wav')", answer)
    bands = driver.find_elements(By.CSS_SELECTOR, "#timeline rect.band")
    assert driver.find_element(By.ID, "timeline").get_attribute("data-kind") == "segments"
    assert [band.get_attribute("data-label") for band in bands] == ["sad", "happy"]
    assert [float(band.get_attribute("x")) for band in bands] == [50.0, 400.0]  # viewBox width 1000 for 10 s
    assert [float(band.get_attribute("width")) for band in bands] == [250.0, 500.0]
    assert "2 segments" in driver.find_element(By.ID, "summary").text
    assert _severe(driver) == []


def test_a_vad_timeline_from_the_server_is_drawn_with_its_mean(driver: Any, server: str, clips: dict[str, Path]
                                                                ) -> None:
    """With the box ticked the page asks for segment=vad; the bars are the segments' duration-weighted mean."""
    _open(driver, server, "a")
    assert driver.find_element(By.ID, "segment-field").is_displayed()  # the schema lists `segment`
    box = driver.find_element(By.ID, "segment")
    assert not box.is_selected()  # windows by default; the timeline on request
    box.click()
    assert _upload_and_wait(driver, clips["long"]) == "done", driver.find_element(By.ID, "error").text
    expected = _api(server, driver, "a", clips["long"])
    segments = expected["segments"]
    assert len(segments) > 1 and "probabilities" not in expected
    bands = driver.find_elements(By.CSS_SELECTOR, "#timeline rect.band")
    assert driver.find_element(By.ID, "timeline").get_attribute("data-kind") == "segments"
    assert [band.get_attribute("data-label") for band in bands] == [s["label"] for s in segments]
    total = sum(s["end"] - s["start"] for s in segments)
    for label, shown in _bars(driver).items():
        mean = sum(s["probabilities"][label] * (s["end"] - s["start"]) for s in segments) / total
        assert shown == pytest.approx(mean, abs=TOLERANCE)
    box.click()  # back to the default for the other tests
    assert _severe(driver) == []


def test_dimensions_are_shown_on_their_scale(driver: Any, server: str, clips: dict[str, Path]) -> None:
    _open(driver, server, "m")
    assert _upload_and_wait(driver, clips["short"]) == "done", driver.find_element(By.ID, "error").text
    expected = _api(server, driver, "m", clips["short"])
    assert driver.find_element(By.ID, "dimensions-box").is_displayed()
    rows = driver.find_elements(By.CSS_SELECTOR, "#dimensions .dimension")
    assert [row.get_attribute("data-name") for row in rows] == ["arousal", "valence"]
    for row in rows:
        name = row.get_attribute("data-name")
        assert float(row.get_attribute("data-value")) == pytest.approx(expected["dimensions"][name], abs=TOLERANCE)
        normalized = expected["dimensions_normalized"][name]
        assert float(row.get_attribute("data-normalized")) == pytest.approx(normalized, abs=TOLERANCE)
        assert row.find_element(By.CLASS_NAME, "value").text == f"{expected['dimensions'][name]:.2f} on 1–5"
    assert driver.find_element(By.ID, "top-label").text == expected["label"]
    assert _severe(driver) == []


def test_errors_are_shown_in_the_page(driver: Any, server: str, clips: dict[str, Path]) -> None:
    _open(driver, server, "a")
    assert _upload_and_wait(driver, clips["text"]) == "error"
    with open(clips["text"], "rb") as body:
        answer = httpx.post(f"{server}/predict", params={"model": "a"}, files={"file": ("notes.txt", body)})
    assert answer.status_code == 422
    error = driver.find_element(By.ID, "error")
    assert error.is_displayed() and answer.json()["detail"] in error.text and "422" in error.text
    _no_alert(driver)
    # The only console error is Chromium's own note of the failed request, not one from the page's script.
    assert all("422" in entry["message"] for entry in _severe(driver))


def test_microphone_recording_is_sent_as_wav(driver: Any, server: str) -> None:
    _open(driver, server, "a")
    if not driver.find_element(By.ID, "record").is_enabled():
        pytest.skip(f"this Chromium cannot record: {driver.find_element(By.ID, 'mic-note').text}")
    driver.find_element(By.ID, "record").click()
    _wait_for(driver, "recording", "error")
    time.sleep(1.0)
    driver.find_element(By.ID, "stop").click()
    assert _wait_for(driver, "done", "error") == "done", driver.find_element(By.ID, "error").text
    assert "recording.wav" in driver.find_element(By.ID, "summary").text
    # What the server decoded from the page's WAV is about as long as the recording was.
    assert 0.5 < float(driver.find_element(By.ID, "result").get_attribute("data-duration")) < 6.0
    assert set(_bars(driver)) == set(LABELS)
    assert sum(_bars(driver).values()) == pytest.approx(1.0, abs=TOLERANCE)
    assert driver.find_element(By.ID, "top-label").text in LABELS
    assert _severe(driver) == []


def test_page_is_served_offline(server: str) -> None:
    """The page and its files come from the server itself: nothing refers to another host."""
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name in ("app.js", "style.css"):
        asset = httpx.get(f"{server}/static/{name}")
        assert asset.status_code == 200 and asset.text
        assert "http://" not in asset.text.replace("http://www.w3.org/2000/svg", "") and "https://" not in asset.text
    assert "https://" not in page.text and "http://" not in page.text
