"""The web console in a real browser (Debian's headless Chromium, driven by Selenium)
against a running cluster started by `clustermail up`: log in, see the virtual servers
online, move one and watch it arrive, kill a node and watch its virtual server move
without reloading the page, kill the node of the admin service and find the console
back at the same address, disable and enable IMAP4 and POP3 of a virtual server from
the page and find their ports closed and answering again, log in as a viewer and find
every action disabled.

Screenshots of the main views go to the test's temporary folder; with
``CLUSTERMAIL_SCREENSHOTS=docs/console`` they refresh the ones docs/console.md shows.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    ROOT,
    banner,
    cluster_toml,
    free_addresses,
    mail_port,
    mail_resources,
)
from tests.support.local_up import read_until, start_up

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Where the screenshots go instead of the test's temporary folder (relative: to the
#: repository), e.g. docs/console to refresh the documentation's.
SHOTS_ENV = "CLUSTERMAIL_SCREENSHOTS"

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):  # pragma: no cover
    pytest.skip("needs Debian's chromium and chromium-driver "
                "(scripts/install-system-deps.sh installs them)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


def _mail_protocols(v: int, port: int) -> str:
    """The mail store, IMAP4 and POP3 of mail{v} (no SMTP: the test needs none)."""
    lines = mail_resources(v, port)
    smtp = lines.index(f"[virtual_servers.mail{v}.resources.smtp]")
    return "\n".join(lines[:smtp] + lines[smtp + 4:]) + "\n"


def console_toml(base: str, port: int) -> str:
    """Three banner virtual servers (mail3 with IMAP4 and POP3 too), fast timing, node
    metrics and the cluster group."""
    text = cluster_toml(base, port, timing="fast") + _mail_protocols(3, port)
    for n in range(1, 5):
        text = text.replace(f"[nodes.node{n}]\n",
                            f'[nodes.node{n}]\nmetrics = "{base}.1:{port + 2 + n}"\n')
    return text + f"""
[virtual_servers.cluster]
kind = "cluster"
preferred_owners = ["node3", "node1", "node2", "node4"]
failback = "never"
[virtual_servers.cluster.resources.ip]
type = "ip_address"
properties = {{ address = "{base}.10" }}
[virtual_servers.cluster.resources.admin]
type = "admin_service"
depends_on = ["ip"]
properties = {{ http_port = {port + 1}, https_port = {port + 2} }}
"""


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1000",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, what: str, check: Callable[[], Any], timeout: float = 45) -> Any:
    last: list[Any] = [None]

    def attempt(_: WebDriver) -> Any:
        last[0] = check()
        return last[0]

    try:
        # The page redraws on every status: an element found just before a redraw is
        # stale by the time it is read, so the check runs again.
        return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException)).until(attempt)
    except Exception as exc:
        try:
            page = driver.find_element(By.ID, "nodes").text
        except Exception:  # what the page showed is a hint only
            page = "?"
        raise AssertionError(f"timed out waiting for {what} (last: {last[0]!r}); the page "
                             f"showed:\n{page}") from exc


def card(driver: WebDriver, vs: str) -> dict[str, str] | None:
    found: dict[str, str] | None = driver.execute_script(
        "const c = document.getElementById('vs-' + arguments[0]);"
        "if (!c) return null;"
        "return {state: c.dataset.state, owner: c.dataset.owner,"
        "        node: c.closest('.node') ? c.closest('.node').id : ''};", vs)
    return found


def log_in(driver: WebDriver, url: str, name: str, password: str) -> None:
    # `up` prints the console's address once it answers; after a failover (or when the
    # test reaches the page some other way) it may not yet: wait, bounded.
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except urllib.error.HTTPError:
            break  # it answers (a login page or a redirect status is an answer)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    driver.get(url)
    wait(driver, "the login form", lambda: driver.find_element(By.ID, "login-name")
         .is_displayed())
    driver.find_element(By.ID, "login-name").send_keys(name)
    driver.find_element(By.ID, "login-password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, "the cluster view", lambda: driver.find_element(By.ID, "app").is_displayed())


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    chosen = os.environ.get(SHOTS_ENV)
    folder = ROOT / chosen if chosen else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def resource_badge(driver: WebDriver, vs: str, resource: str) -> str | None:
    """The state badge of a resource in a virtual server's dependency tree."""
    text: str | None = driver.execute_script(
        "const b = document.querySelector(`#vs-${arguments[0]} "
        "li[data-resource='${arguments[1]}'] > span > .badge`);"
        "return b ? b.textContent : null;", vs, resource)
    return text


def redrawn(driver: WebDriver, what: str, action: Callable[[], object]) -> None:
    """``action()`` on elements it looks up; the page redraws on every status, so one
    found just before a redraw is looked up again."""
    def attempt() -> bool:
        try:
            action()
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        return True

    wait(driver, what, attempt)


def click(driver: WebDriver, css: str) -> None:
    redrawn(driver, f"{css} to click", lambda: driver.find_element(By.CSS_SELECTOR, css).click())


def chosen(driver: WebDriver, css: str) -> str | None:
    """The value of the option chosen in the drop-down ``css`` finds."""
    return Select(driver.find_element(By.CSS_SELECTOR, css)).first_selected_option \
        .get_attribute("value")


def confirm(driver: WebDriver) -> None:
    wait(driver, "the confirmation", lambda: driver.find_element(By.ID, "confirm")
         .is_displayed())
    driver.find_element(By.ID, "confirm-ok").click()


def status(data: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "clustermail", "status", "--json",
                          "--data", str(data)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def toggle_protocol(driver: WebDriver, where: tuple[str, int], resource: str,
                    greeting: str) -> None:
    """Disables a mail protocol of mail3 from the page and enables it again: the resource
    is held offline in the tree and its port closes, then it is online and answers."""
    def answers() -> bool:
        return (banner(*where) or "").startswith(greeting)

    wait(driver, f"mail3's {resource} answering", answers)
    click(driver, f"#vs-mail3 [data-action=disable-{resource}]")
    confirm(driver)
    wait(driver, f"{resource} held offline on the page",
         lambda: resource_badge(driver, "mail3", resource) == "offline (held)")
    wait(driver, f"mail3's {resource} port closed", lambda: banner(*where) is None)
    click(driver, f"#vs-mail3 [data-action=enable-{resource}]")
    confirm(driver)
    wait(driver, f"{resource} online on the page",
         lambda: resource_badge(driver, "mail3", resource) == "online")
    wait(driver, f"mail3's {resource} answering again", answers)


def test_console_in_a_browser(tmp_path: Path, browser: WebDriver, shots: Path) -> None:
    def shot(name: str) -> None:
        browser.save_screenshot(str(shots / f"{name}.png"))

    base, port = free_addresses()
    data = tmp_path / "data"
    data.mkdir()
    (data / "cluster.toml").write_text(console_toml(base, port))
    up = start_up(data, new_session=True)
    try:
        out = read_until(up, "console: ", timeout=90)
        url = f"http://{base}.10:{port + 1}/console/"
        assert url in out
        password = json.loads((data / "passwords.json").read_text())["admin"]
        log_in(browser, url, "admin", password)
        def online(vs: str) -> Callable[[], bool]:
            return lambda: (card(browser, vs) or {}).get("state") == "online"

        for vs in ("mail1", "mail2", "mail3", "cluster"):
            wait(browser, f"{vs} online", online(vs))
        assert card(browser, "mail1") == {"state": "online", "owner": "node1",
                                          "node": "node-node1"}
        assert card(browser, "cluster") == {"state": "online", "owner": "node3",
                                            "node": "node-node3"}
        shot("cluster")

        # mail1's move target, chosen now, outlives the redraws of the steps below.
        redrawn(browser, "node4 chosen", lambda: Select(browser.find_element(
            By.CSS_SELECTOR, "#vs-mail1 .move-target")).select_by_value("node4"))

        # IMAP4 and POP3 of mail3, disabled and enabled from the page; mail3 stays where
        # it is (a resource held offline is not a failure).
        at_home = {"state": "online", "owner": "node3", "node": "node-node3"}
        wait(browser, "mail3 online on node3", lambda: card(browser, "mail3") == at_home)
        toggle_protocol(browser, (f"{base}.13", mail_port(port, "imap")), "imap4", "* OK")
        toggle_protocol(browser, (f"{base}.13", mail_port(port, "pop3")), "pop3", "+OK")
        wait(browser, "mail3 online on node3 again", lambda: card(browser, "mail3") == at_home)

        # Move mail1 to node4 from the page (the target chosen before the toggles, every
        # card since redrawn), confirm, and watch it arrive.
        assert wait(browser, "mail1's move target", lambda: chosen(
            browser, "#vs-mail1 .move-target")) == "node4"
        click(browser, "#vs-mail1 [data-action=move]")
        confirm(browser)
        wait(browser, "mail1 online on node4", lambda: card(browser, "mail1") == {
            "state": "online", "owner": "node4", "node": "node-node4"})

        # Explain it.
        click(browser, "#vs-mail1 [data-action=explain]")  # the card redraws on every status
        wait(browser, "the explanation", lambda: "candidates, in the order tried"
             in browser.find_element(By.ID, "explain-text").text)
        shot("moved-and-explained")

        # Kill node2: mail2 moves (to node1, which the move freed) without a reload.
        marker = browser.execute_script("window.__same_page = 42; return window.__same_page;")
        node2 = next(n for n in status(data)["nodes"] if n["name"] == "node2")
        os.kill(node2["pid"], signal.SIGKILL)
        wait(browser, "node2 down on the page", lambda: browser.find_element(
            By.ID, "node-node2").get_attribute("data-state") == "down", timeout=60)
        wait(browser, "mail2 online on node1", lambda: card(browser, "mail2") == {
            "state": "online", "owner": "node1", "node": "node-node1"}, timeout=60)
        assert browser.execute_script("return window.__same_page;") == marker
        shot("failover")

        # HTTPS with the cluster's own certificate, the same on every node.
        https = (f"{base}.10", port + 2)
        certificate = ssl.get_server_certificate(https, timeout=10)

        # Kill the node of the admin service: the console comes back at the same address.
        node3 = next(n for n in status(data)["nodes"] if n["name"] == "node3")
        os.kill(node3["pid"], signal.SIGKILL)
        def moved_on() -> bool:
            group = card(browser, "cluster") or {}
            return group.get("owner") not in (None, "", "node3") and group["state"] == "online"

        wait(browser, "the cluster group online elsewhere", moved_on, timeout=90)
        assert browser.execute_script("return window.__same_page;") == marker
        assert ssl.get_server_certificate(https, timeout=10) == certificate

        # Performance and events views.
        browser.find_element(By.CSS_SELECTOR, "#tabs [data-tab=performance]").click()
        time.sleep(0.5)  # one frame of the charts: a screenshot, not an assertion
        shot("performance")
        browser.find_element(By.CSS_SELECTOR, "#tabs [data-tab=events]").click()
        wait(browser, "admin changes in the event log", lambda: "admin: asked to move mail1"
             in browser.find_element(By.ID, "events").text)
        shot("events")

        # A viewer sees everything and can change nothing.
        subprocess.run([sys.executable, "-m", "clustermail", "admin-user", "add", "watcher",
                        "--role", "viewer", "--password-stdin", "--data", str(data)],
                       cwd=ROOT, input="watcher-password\n", text=True, check=True,
                       timeout=60, capture_output=True)
        browser.find_element(By.CSS_SELECTOR, "#tabs [data-tab=cluster]").click()
        browser.find_element(By.ID, "logout").click()
        wait(browser, "the login form again", lambda: browser.find_element(By.ID, "login")
             .is_displayed())
        log_in(browser, url, "watcher", "watcher-password")
        wait(browser, "mail1 shown to the viewer", lambda: card(browser, "mail1") is not None)
        buttons = browser.find_elements(By.CSS_SELECTOR, "#nodes [data-action], #unplaced "
                                        "[data-action], .move-target")
        changing = [b for b in buttons if b.get_attribute("data-action") != "explain"]
        assert changing and all(not b.is_enabled() for b in changing)
        assert any(b.get_attribute("data-action") == "explain" and b.is_enabled()
                   for b in buttons)
        shot("viewer")
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.communicate(timeout=10)
