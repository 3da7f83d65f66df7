"""The web UI in a real headless Chromium, against the dashboard a real head starts.

Each test loads pages the way a user does and waits for what a user would
look for: a running actor shown ALIVE, a finished job SUCCEEDED with its
output, the node ALIVE, the charts drawn. After every page the browser's
console must hold no error (a failed request or a script exception is logged
there as SEVERE). A screenshot of each page is saved under the test's
temporary directory; with ``EMBER_UPDATE_SCREENSHOTS=1`` the overview and jobs
pages are also copied to ``docs/images/`` for the README.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs
them) and ``selenium``; without them the tests are skipped, saying why.
"""
from __future__ import annotations

import os
import shutil
import sys

import pytest

import ember as ray
from helpers import cluster_with_dashboard, wait_for_condition

pytest.importorskip("aiohttp")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install 'ember[test]')")
from selenium.common.exceptions import (StaleElementReferenceException,  # noqa: E402
                                        TimeoutException)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no chromium/chromedriver: apt-get install -y chromium chromium-driver")

PAGES = ("overview", "jobs", "actors", "tasks", "nodes", "logs", "metrics")
DOCS_IMAGES = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "images")


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    return tmp_path_factory.mktemp("dashboard-screenshots")


@pytest.fixture(scope="module")
def dashboard():
    """A cluster of this module's own, and its dashboard's URL (``http://HOST:PORT``)."""
    with cluster_with_dashboard(num_cpus=2) as url:
        yield url


class Page:
    """The browser on one dashboard page, with the checks every page gets."""

    def __init__(self, driver, url, screenshots):
        self.driver = driver
        self.url = url
        self.screenshots = screenshots

    def open(self, route: str, timeout: float = 20.0):
        """Load ``#/route`` afresh and wait until it is drawn from live data."""
        self.driver.get(f"{self.url}/#/{route}")
        self.driver.refresh()  # a new document: nothing left of the page before
        name = route.split("/")[0].split("?")[0]
        self.wait(f'main#page[data-loaded="{name}"]', timeout)
        return self

    def until(self, condition, timeout: float = 20.0, what: str = "the condition"):
        """``condition(driver)``'s first truthy value. The page redraws its data every
        poll, so an element found may be replaced before it is read: try again."""
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2,
                                 ignored_exceptions=(StaleElementReferenceException,)
                                 ).until(condition)
        except TimeoutException:
            raise AssertionError(f"no {what} on {self.driver.current_url} within {timeout} s;"
                                 f" status: {self.status()!r}") from None

    def wait(self, selector: str, timeout: float = 20.0, text: str | None = None):
        """The text of the first element matching ``selector`` (containing ``text``)."""
        def found(driver):
            for el in driver.find_elements(By.CSS_SELECTOR, selector):
                if text is None or text in el.text:
                    return el.text or True
            return False
        return self.until(found, timeout, repr(selector) + (f" with {text!r}" if text else ""))

    def click(self, selector: str, timeout: float = 20.0) -> None:
        """Click the first element matching ``selector``, once there."""
        def clicked(driver):
            for el in driver.find_elements(By.CSS_SELECTOR, selector):
                el.click()
                return True
            return False
        self.until(clicked, timeout, repr(selector))

    def status(self) -> str:
        return self.driver.find_element(By.ID, "status").text

    def finish(self, name: str) -> None:
        """Screenshot the page, and fail on any console error since the last check."""
        path = self.screenshots / f"dashboard-{name}.png"
        self.driver.save_screenshot(str(path))
        if os.environ.get("EMBER_UPDATE_SCREENSHOTS") == "1" and name in ("overview", "jobs"):
            os.makedirs(DOCS_IMAGES, exist_ok=True)
            shutil.copy(path, os.path.join(DOCS_IMAGES, f"dashboard-{name}.png"))
        errors = [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"console errors on the {name} page: {errors}"


@pytest.fixture
def page(browser, dashboard, screenshots):
    browser.get_log("browser")  # drop what earlier tests left
    return Page(browser, dashboard, screenshots)


@ray.remote
class Greeter:
    def greet(self, name):
        print(f"hello, {name} <b>not bold</b>", flush=True)
        return name


@ray.remote
def add(a, b):
    return a + b


@ray.remote
def fails():
    raise ValueError("on purpose")


def submit_finished_job(url: str) -> str:
    """A job that prints and succeeds; its submission id once it has."""
    from ember.job_submission import JobStatus, JobSubmissionClient
    client = JobSubmissionClient(url)
    code = "print('hello from the job'); print('<script>alert(1)</script>')"
    submission_id = client.submit_job(entrypoint=f'{sys.executable} -c "{code}"')
    wait_for_condition(lambda: client.get_job_status(submission_id) == JobStatus.SUCCEEDED,
                       timeout=60, interval=0.5, message="the job to succeed")
    return submission_id


def test_every_page_loads_without_console_errors(page):
    ray.get(add.remote(1, 2))
    for name in PAGES:
        page.open(name)
        page.finish(name)


def test_a_running_actor_and_its_log(page):
    greeter = Greeter.remote()
    ray.get(greeter.greet.remote("browser"))
    actor_id = greeter._actor_id.hex()

    page.open("actors")
    row = page.wait(f'tr[data-actor-id="{actor_id}"][data-state="ALIVE"]')
    assert "Greeter" in row
    page.click(f'tr[data-actor-id="{actor_id}"] a[data-log="out"]')
    log = page.wait("#log-view", text="hello, browser")
    assert "<b>not bold</b>" in log  # shown as text, not markup
    page.finish("actor-log")

    ray.kill(greeter)
    page.open("actors")
    page.wait(f'tr[data-actor-id="{actor_id}"][data-state="DEAD"]')
    page.finish("actors")


def test_the_node_alive_on_overview_and_nodes(page):
    import numpy as np
    node_id = ray.get_runtime_context().get_node_id()
    greeter = Greeter.remote()  # something running and stored, for the screenshot
    ray.get(greeter.greet.remote("overview"))
    held = ray.put(np.ones(8 * 1024 * 1024, dtype=np.uint8))
    page.open("overview")
    page.wait(f'tr[data-node-id="{node_id}"] [data-state="ALIVE"]')
    assert "1 alive" in page.wait('[data-card="Nodes"]')
    assert "8.0 MiB" in page.wait('[data-card="Object store"]', text="MiB")
    page.finish("overview")
    ray.kill(greeter)
    del held
    page.open("nodes")
    row = page.wait(f'tr[data-node-id="{node_id}"][data-state="ALIVE"]')
    assert "head" in row and "127.0.0.1" in row
    page.finish("nodes")


def test_a_finished_job_and_its_output(page, dashboard):
    submission_id = submit_finished_job(dashboard)
    page.open("jobs")
    page.wait(f'tr[data-job-id="{submission_id}"] [data-state="SUCCEEDED"]')
    page.finish("jobs")
    page.click(f'tr[data-job-id="{submission_id}"] a')
    page.wait('[data-job-status="SUCCEEDED"]')
    log = page.wait("#job-log", text="hello from the job")
    assert "<script>alert(1)</script>" in log  # shown as text: it did not run
    page.finish("job-detail")


def test_tasks_summary_and_state_filter(page):
    ray.get([add.remote(i, i) for i in range(3)])
    with pytest.raises(ray.exceptions.RayTaskError):
        ray.get(fails.remote())
    page.open("tasks")
    page.wait('tr[data-func="add"] [data-state="FINISHED"]', timeout=20)
    page.wait('tr[data-func="fails"] [data-state="FAILED"]')
    Select(page.driver.find_element(By.CSS_SELECTOR, 'select[name="state"]')).select_by_value(
        "FAILED")

    def only_failed(driver):
        states = {r.get_attribute("data-state")
                  for r in driver.find_elements(By.CSS_SELECTOR, "tr[data-task-id]")}
        return states == {"FAILED"}
    page.until(only_failed, what="only FAILED task rows")
    page.finish("tasks")


def test_metrics_charts_drawn_from_samples(page):
    ray.get([add.remote(i, 1) for i in range(3)])
    page.open("metrics")
    for title in ("Tasks by state", "Object store use", "CPU use (%)"):
        page.wait(f'[data-chart="{title}"] svg path', timeout=30)
    page.finish("metrics")


def test_logs_page_lists_and_tails_a_file(page):
    page.open("logs")
    page.click('a[data-file="gcs.log"]')
    page.wait("#log-view", text="GCS listening")
    page.finish("logs")
