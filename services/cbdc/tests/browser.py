"""Drives headless Chromium (through chromedriver) over the central bank's console and a
merchant checkout page, for services/cbdc/tests/browser.rs, which starts the network, pays
the order when told and checks what this prints. Lines on stdout are the protocol:
`CONSOLE <json>`, `CHECKOUT <json>`, `READY` (then one line `PAID` is read from stdin),
`AFTER <json>`, `OK`. Any failure exits non-zero with the reason on stderr."""

import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

args = dict(a.split("=", 1) for a in sys.argv[1:])
shots = args["shots"]


def say(*parts):
    print(*parts, flush=True)


def wait(what, f, timeout=30.0):
    deadline = time.time() + timeout
    while True:
        try:
            v = f()
            if v:
                return v
        except Exception:  # an element not there yet
            pass
        if time.time() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.2)


def local_only(driver, origin):
    """Every resource the page loaded came from its own origin."""
    names = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    outside = [n for n in names if not n.startswith(origin)]
    if outside:
        raise SystemExit(f"{driver.current_url} loaded from outside: {outside}")
    return len(names)


options = webdriver.ChromeOptions()
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
          "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"]:
    options.add_argument(a)
options.binary_location = args["chromium"]
driver = webdriver.Chrome(service=Service(args["chromedriver"]), options=options)
try:
    console = args["console"]
    # The console without a session: the login page. A wrong token is refused.
    driver.get(console + "/")
    driver.find_element(By.ID, "token").send_keys("not-the-token")
    driver.find_element(By.ID, "login").click()
    message = wait("the refusal", lambda: driver.find_element(By.ID, "message").text)
    if "not the console's token" not in message:
        raise SystemExit(f"wrong token: {message!r}")
    driver.save_screenshot(f"{shots}/console-login-refused.png")
    # The right token: the console, live.
    driver.find_element(By.ID, "token").send_keys(args["token"])
    driver.find_element(By.ID, "login").click()
    wait("the console's figures", lambda: "¥" in driver.find_element(By.ID, "issued").text)
    row = lambda n: driver.find_element(By.CSS_SELECTOR, f'#ledgers tr[data-ledger="{n}"]')
    wait("both ledgers", lambda: row(1) and row(2))
    wait("a balanced audit",
         lambda: driver.find_element(By.ID, "audit").get_attribute("data-balanced") == "true")
    before = {
        "issued": driver.find_element(By.ID, "issued").text,
        "books1": row(1).get_attribute("data-books"),
        "books2": row(2).get_attribute("data-books"),
        "log1": int(row(1).get_attribute("data-checkpoint-size")),
    }
    local_only(driver, console)
    driver.save_screenshot(f"{shots}/console-before.png")
    say("CONSOLE", json.dumps(before))
    console_tab = driver.current_window_handle

    # The checkout page in another tab: the QR code and the payment URI, waiting.
    driver.switch_to.new_window("tab")
    driver.get(args["gateway"] + args["checkout"])
    uri = wait("the payment URI", lambda: driver.find_element(By.ID, "payment-uri").text)
    status = driver.find_element(By.ID, "status")
    if status.get_attribute("data-status") != "CREATED":
        raise SystemExit(f"a new order reads {status.get_attribute('data-status')}")
    qr = driver.find_element(By.ID, "qr")
    wait("the QR code drawn", lambda: driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", qr))
    description = driver.find_element(By.ID, "description").text
    local_only(driver, args["gateway"])
    driver.save_screenshot(f"{shots}/checkout-waiting.png")
    say("CHECKOUT", json.dumps({"uri": uri, "description": description,
                                "amount": driver.find_element(By.ID, "amount").text}))
    say("READY")
    if sys.stdin.readline().strip() != "PAID":
        raise SystemExit("expected PAID on stdin")

    # The page turns to paid by itself.
    wait("the checkout page shows paid", lambda: driver.find_element(
        By.ID, "status").get_attribute("data-status") == "PAID")
    paid_text = driver.find_element(By.ID, "status").text
    hidden = not driver.find_element(By.ID, "pay").is_displayed()
    driver.save_screenshot(f"{shots}/checkout-paid.png")

    # And the console's figures move: the payment settled from bank 2 into bank 1.
    driver.switch_to.window(console_tab)
    wait("bank 1's books grow", lambda: float(row(1).get_attribute("data-books"))
         > float(before["books1"]), timeout=40)
    wait("bank 1's audit log grows", lambda: int(
        row(1).get_attribute("data-checkpoint-size")) > before["log1"], timeout=40)
    after = {
        "issued": driver.find_element(By.ID, "issued").text,
        "books1": row(1).get_attribute("data-books"),
        "books2": row(2).get_attribute("data-books"),
        "paid_text": paid_text,
        "pay_hidden": hidden,
    }
    driver.save_screenshot(f"{shots}/console-after.png")
    say("AFTER", json.dumps(after))
    say("OK")
finally:
    driver.quit()
