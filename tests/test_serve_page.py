"""The web page of `sensorium serve` in headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
Selenium): type a query and see results, upload an image and see results, click a result to search by it, chat
with an attached image. Screenshots go to $SENSORIUM_SCREENSHOTS (default: the test's tmp dir)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from _serve import ANSWERS, COLOURS, QUESTION, Server, aligned_model, chat_model, png, write_shard

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                "(scripts/setup test installs them)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    import torch

    from sensorium.index import build

    root = tmp_path_factory.mktemp("page")
    model = aligned_model(root / "model")
    write_shard(root / "part-000.tar")
    build(model, root / "idx", [root / "part-000.tar"], progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        chat_model(root / "decoder", steps=60)
    finally:
        torch.set_num_threads(threads)
    server = Server(str(root / "idx"), "--chat", str(root / "decoder"))
    yield server, root
    server.stop()


@pytest.fixture(scope="module")
def browser(site):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900",
                "--no-proxy-server", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("SENSORIUM_SCREENSHOTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _results(browser, wait, expect_first: str) -> list:
    from selenium.webdriver.common.by import By

    def ready(d):  # the grid is swapped in whole once a search finishes (aria-busy gone)
        if d.find_element(By.ID, "results").get_attribute("aria-busy"):
            return False
        cards = d.find_elements(By.CSS_SELECTOR, "#results .card")
        return cards if cards and expect_first in cards[0].text else False

    return wait.until(ready)


def test_type_a_query_upload_an_image_and_click_a_result(site, browser, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server, root = site
    wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(server.url + "/")
    wait.until(lambda d: "12 items" in d.find_element(By.ID, "status").text)
    box = browser.find_element(By.ID, "query")
    box.send_keys("a yellow square", Keys.ENTER)
    cards = _results(browser, wait, "a yellow square")
    assert len(cards) == 12 and cards[0].get_attribute("data-modality") == "text"
    assert cards[0].find_element(By.CLASS_NAME, "score").text == "1.000"
    images = [c for c in cards if c.get_attribute("data-modality") == "image"]
    assert len(images) == 4 and all(c.find_element(By.TAG_NAME, "img").get_attribute("naturalWidth") != "0"
                                    for c in images)
    browser.save_screenshot(str(_shots(tmp_path) / "page_text_query.png"))

    Select(browser.find_element(By.ID, "modality")).select_by_value("image")
    upload = tmp_path / "blue.png"
    upload.write_bytes(png("blue"))
    browser.find_element(By.ID, "file").send_keys(str(upload))
    cards = _results(browser, wait, "a blue square")
    assert all(c.get_attribute("data-modality") == "image" for c in cards) and len(cards) == 4
    assert cards[0].find_element(By.CLASS_NAME, "score").text == "1.000"
    assert "blue.png" in browser.find_element(By.ID, "query-shown").text
    browser.save_screenshot(str(_shots(tmp_path) / "page_image_query.png"))

    clicked = cards[1].get_attribute("data-id")
    cards[1].click()  # search by that result: it comes back first, as itself, scored 1
    wait.until(lambda d: "similar to" in d.find_element(By.ID, "query-shown").text)
    first = _results(browser, wait, "")[0]
    assert first.get_attribute("data-id") == clicked and first.find_element(By.CLASS_NAME, "score").text == "1.000"


def test_chat_pane_answers_about_an_attached_image(site, browser, tmp_path):
    import io

    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    import _vlm

    server, _ = site
    wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(server.url + "/")
    wait.until(lambda d: d.find_element(By.ID, "chat-pane").is_displayed())
    for colour, answer in ANSWERS.items():
        picture = tmp_path / f"{colour}16.png"
        buf = io.BytesIO()
        _vlm.image(COLOURS[colour]).save(buf, format="PNG")
        picture.write_bytes(buf.getvalue())
        browser.find_element(By.ID, "chat-file").send_keys(str(picture))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#attached img"))
        browser.find_element(By.ID, "chat-input").send_keys(QUESTION)
        browser.find_element(By.CSS_SELECTOR, "#chat-form button").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant")
                   and d.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].text.strip() != "")
        assert browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].text.strip() == answer
        browser.save_screenshot(str(_shots(tmp_path) / f"page_chat_{colour}.png"))
        browser.get(server.url + "/")  # a fresh conversation for the next picture
        wait.until(lambda d: d.find_element(By.ID, "chat-pane").is_displayed())
