"""Drives examples/spa in headless Chromium against a real tessera.

Usage: spa_check.py SPA_URL OTHER_ORIGIN_URL ISSUER USERNAME PASSWORD TOTP_USER TOTP_SECRET_HEX

Checks, in a real browser: "Sign in" leads to tessera's login page (which
passes axe-core with no serious or critical violation), the password typed
there brings the browser back to the app with a code that the app redeems
(authorization code + PKCE); document.cookie does not show the refresh
token; the API call works; a silent refresh works (also after a reload, from
the cookie alone); a request from an origin that is not registered fails; a
second sign-in skips the form (the browser sign-in); logout works and
refresh fails after; a TOTP user signs in through the code step.
With TESSERA_SCREENSHOTS=DIR it saves login.png, login-otp.png and spa.png
there. Prints one line per step; exits non-zero on the first failure.
"""

import hashlib
import hmac
import os
import struct
import sys
import time

import selenium_axe_python
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

spa, other, issuer, username, password, totp_user, totp_secret = sys.argv[1:8]
shots = os.environ.get("TESSERA_SCREENSHOTS")

options = Options()
options.binary_location = os.environ.get("TESSERA_CHROMIUM", "/usr/bin/chromium")
for arg in (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--window-size=900,700",
):
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


def on_login_page(step_field):
    wait.until(lambda d: d.current_url.startswith(issuer + "/oauth/authorize"))
    wait.until(lambda d: d.find_elements(By.ID, step_field))
    print(f"ok: tessera's login page ({step_field})")


def accessible(what):
    """axe-core on the current page: no serious or critical violation."""
    axe = selenium_axe_python.Axe(driver)
    axe.inject()
    results = axe.run()
    bad = [v for v in results["violations"] if v.get("impact") in ("serious", "critical")]
    assert not bad, f"{what}: accessibility violations:\n{axe.report(bad)}"
    print(f"ok: {what} passes axe-core ({len(results['passes'])} rules passed)")


def screenshot(name):
    if shots:
        os.makedirs(shots, exist_ok=True)
        driver.save_screenshot(os.path.join(shots, name))


def totp(secret_hex, at):
    """RFC 6238: HMAC-SHA1, 30 s steps, 6 digits."""
    mac = hmac.new(bytes.fromhex(secret_hex), struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{number % 1_000_000:06d}"


try:
    driver.get(spa)
    status_is("logged out")
    assert not driver.find_elements(By.CSS_SELECTOR, "input[type=password]"), "the app has no password field"

    click("sign-in")
    on_login_page("username")
    accessible("the login page")
    screenshot("login.png")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    status_is("logged in")
    assert driver.find_element(By.ID, "user").text == username
    assert "code=" not in driver.current_url, "the code left the address bar"
    assert '"token_type": "DPoP"' in driver.find_element(By.ID, "result").text, "the access token is DPoP-bound"
    print("ok: the access token is bound to the page's non-extractable DPoP key")
    screenshot("spa.png")

    cookies = driver.execute_script("return document.cookie")
    assert "tessera-rt" not in cookies, f"the refresh token is visible to JavaScript: {cookies!r}"
    assert "tessera-sso" not in cookies, f"the sign-in cookie is visible to JavaScript: {cookies!r}"
    print("ok: document.cookie holds neither the refresh token nor the sign-in")

    click("call-api")
    status_is("api ok")
    assert '"sub"' in driver.find_element(By.ID, "result").text

    click("refresh")
    status_is("refreshed")
    assert '"token_type": "DPoP"' in driver.find_element(By.ID, "result").text
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

    # Signed in at tessera already: a second sign-in skips the form.
    driver.get(spa)
    status_is("logged out")
    click("sign-in")
    status_is("logged in")
    print("ok: the browser sign-in skipped the form")

    click("logout")
    status_is("logged out")
    click("refresh")
    status_is("refresh failed")

    # A user with TOTP, in a browser signed in as nobody.
    driver.delete_all_cookies()
    driver.get(spa)
    status_is("logged out")
    click("sign-in")
    on_login_page("username")
    driver.find_element(By.ID, "username").send_keys(totp_user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    on_login_page("otp")
    accessible("the code step")
    screenshot("login-otp.png")
    # Not a code that could have been used already in this 30 s step.
    now = time.time()
    if now % 30 > 27:
        time.sleep(30 - now % 30 + 0.5)
    driver.find_element(By.ID, "otp").send_keys(totp(totp_secret, time.time()))
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    status_is("logged in")
    assert driver.find_element(By.ID, "user").text == totp_user
    assert '"otp"' in driver.find_element(By.ID, "result").text, "amr names the second factor"
    print("browser check passed")
finally:
    driver.quit()
