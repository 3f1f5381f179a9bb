"""Drives examples/spa in headless Chromium against a real tessera.

Usage: spa_check.py SPA_URL OTHER_ORIGIN_URL ISSUER USERNAME PASSWORD

Checks, in a real browser: login works; document.cookie does not show the
refresh token; the API call with the access token works; a silent refresh
works (also after a reload, from the cookie alone); a request from an
origin that is not registered fails; logout works and refresh fails after.
Prints one line per step; exits non-zero on the first failure.
"""

import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

spa, other, issuer, username, password = sys.argv[1:6]

options = Options()
options.binary_location = os.environ.get("TESSERA_CHROMIUM", "/usr/bin/chromium")
for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
    options.add_argument(arg)
service = Service(os.environ.get("TESSERA_CHROMEDRIVER", "/usr/bin/chromedriver"))
driver = webdriver.Chrome(service=service, options=options)
wait = WebDriverWait(driver, 10)


def status_is(expected):
    try:
        wait.until(lambda d: d.find_element(By.ID, "status").text == expected)
    except Exception:
        status = driver.find_element(By.ID, "status").text
        result = driver.find_element(By.ID, "result").text
        raise AssertionError(f"expected status {expected!r}, got {status!r}: {result}")
    print(f"ok: {expected}")


def click(element_id):
    driver.find_element(By.ID, element_id).click()


try:
    driver.get(spa)
    status_is("logged out")

    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    click("login-button")
    status_is("logged in")

    cookies = driver.execute_script("return document.cookie")
    assert "tessera-rt" not in cookies, f"the refresh token is visible to JavaScript: {cookies!r}"
    print("ok: document.cookie does not contain the refresh token")

    click("call-api")
    status_is("api ok")
    assert '"sub"' in driver.find_element(By.ID, "result").text

    click("refresh")
    status_is("refreshed")
    click("call-api")
    status_is("api ok")

    # A reload loses the in-memory access token; the cookie alone refreshes.
    driver.get(spa)
    status_is("logged out")
    click("refresh")
    status_is("refreshed")

    # From an origin that is not registered (a different site), the
    # credentialed request is blocked by CORS.
    driver.get(other)
    outcome = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch(arguments[0] + "/oauth/token", {
          method: "POST", credentials: "include",
          headers: {"Content-Type": "application/x-www-form-urlencoded", "X-Tessera-CSRF": "1"},
          body: "grant_type=refresh_token&client_id=spa",
        }).then(r => done("status " + r.status), () => done("blocked"));
        """,
        issuer,
    )
    assert outcome == "blocked", f"a disallowed origin got through: {outcome}"
    print("ok: a disallowed origin is blocked")

    driver.get(spa)
    status_is("logged out")
    click("refresh")
    status_is("refreshed")
    click("logout")
    status_is("logged out")
    click("refresh")
    status_is("refresh failed")
    print("browser check passed")
finally:
    driver.quit()
