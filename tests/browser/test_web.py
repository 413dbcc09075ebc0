"""test_web.py - drives the zimage web page in headless Chromium (Debian's
chromium + chromedriver, via selenium): generates an image through the page
with keyboard submit and a custom 64x64 size, sees it in the gallery with its
parameters and seed, reuses the seed (same seed again, fixed), checks the
download link and that a phone-width window has no horizontal overflow.

usage: python3 tests/browser/test_web.py http://127.0.0.1:PORT/
"""
import shutil
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:7860/"
TIMEOUT = 120


def make_driver(width, height):
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={width},{height}"):
        opts.add_argument(a)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary:
        opts.binary_location = binary
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver_path), options=opts)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def generate_with_keyboard(d, wait, prompt, n_before):
    box = d.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(prompt)
    box.send_keys(Keys.CONTROL, Keys.ENTER)  # keyboard submit
    wait.until(lambda drv: len(drv.find_elements(By.CSS_SELECTOR, "#gallery .card")) > n_before)
    card = d.find_elements(By.CSS_SELECTOR, "#gallery .card")[0]  # newest first
    img = card.find_element(By.TAG_NAME, "img")
    wait.until(lambda drv: drv.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img))
    return card, img


def main():
    d = make_driver(1200, 900)
    try:
        wait = WebDriverWait(d, TIMEOUT)
        d.get(URL)
        wait.until(EC.text_to_be_present_in_element((By.ID, "info"), "tiny-a"))
        # custom 64x64, 2 steps, random seed
        Select(d.find_element(By.ID, "size")).select_by_value("custom")
        for fid, val in (("width", "64"), ("height", "64"), ("steps", "2")):
            el = d.find_element(By.ID, fid)
            el.clear()
            el.send_keys(val)
        check(d.find_element(By.ID, "seed-random").is_selected(), "seed should start random")

        card, img = generate_with_keyboard(d, wait, "a tiny red cube", 0)
        w = d.execute_script("return arguments[0].naturalWidth", img)
        h = d.execute_script("return arguments[0].naturalHeight", img)
        check((w, h) == (64, 64), f"gallery image is {w}x{h}, want 64x64")
        seed = card.get_attribute("data-seed")
        check(seed and seed.isdigit(), f"card has no seed: {seed!r}")
        meta = card.find_element(By.CLASS_NAME, "meta").text
        check("a tiny red cube" in meta and "64×64" in meta and f"seed {seed}" in meta, f"card meta: {meta!r}")
        last = d.find_element(By.ID, "last-seed").text
        check(last == seed, f"last seed shown {last!r}, card seed {seed}")
        status = d.find_element(By.ID, "status").text
        check(status.startswith("Done"), f"status after run: {status!r}")
        dl = card.find_element(By.LINK_TEXT, "Download")
        check(dl.get_attribute("href").startswith("data:image/png;base64,"), "download link is not a PNG")
        check(dl.get_attribute("download") == f"zimage-{seed}.png", "download name")

        # reuse the seed: fixed seed, same value; a new run keeps it
        card.find_element(By.CLASS_NAME, "reuse-seed").click()
        check(not d.find_element(By.ID, "seed-random").is_selected(), "reuse seed should fix the seed")
        check(d.find_element(By.ID, "seed").get_attribute("value") == seed, "reuse seed value")
        card2, img2 = generate_with_keyboard(d, wait, "a tiny red cube", 1)
        check(card2.get_attribute("data-seed") == seed, "fixed seed not used")
        # same prompt + seed + size: identical pixels
        same = d.execute_script("return arguments[0].src === arguments[1].src", img, img2)
        check(same, "same seed and parameters gave a different image")

        # reuse all parameters
        card2.find_element(By.CLASS_NAME, "reuse-params").click()
        check(d.find_element(By.ID, "prompt").get_attribute("value") == "a tiny red cube", "reuse params prompt")
        check(d.find_element(By.ID, "width").get_attribute("value") == "64", "reuse params width")

        # phone width: one column, no horizontal scrolling
        d.set_window_size(390, 844)
        time.sleep(0.3)
        overflow = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        check(overflow <= 0, f"page overflows a phone-width window by {overflow}px")
        btn = d.find_element(By.ID, "generate")
        check(btn.is_displayed() and btn.size["width"] > 200, "generate button not usable at phone width")
        errors = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
        check(not errors, f"browser console errors: {errors}")
        print("browser test: generated 2 images through the page, gallery, seed reuse and phone layout OK")
    finally:
        d.quit()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001
        print(f"browser test FAILED: {e}", file=sys.stderr)
        sys.exit(1)
