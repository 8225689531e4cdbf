"""The playground (lamina-playground) in a real headless chromium, against a real server and the fake upstream.

One browser and one server for the module; the tests run in order, as a user would: give the API key, chat,
stop, reload, upload and search documents, chat over them, try a shield, inspect. Screenshots go to
test-artifacts/playground/. The server requires an API key through a small `asgi_wrapper` registered here,
standing in for the authentication being built elsewhere.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import browser, require_browser
from e2e_helpers import SECRET
from fake_openai import FakeOpenAI
from lamina.hookspecs import hookimpl
from lamina.plugins import make_plugin_manager
from lamina.testing import serve
from playground_config import GUARDED_MODEL, STRICT_MODEL, playground_config
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
from mcp_servers import McpServer

API_KEY = "playground-test-key"
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "playground"
BEES = "Honey bees live in colonies with one queen and thousands of workers that make honey."
TIDES = "Tides rise and fall twice a day because the Moon pulls on the oceans."


class RequireKey:
    """401 for /v1 requests without `Authorization: Bearer API_KEY`; the playground's own files stay open."""

    @hookimpl
    def asgi_wrapper(self, stack: Any) -> Callable[[ASGIApp], ASGIApp]:
        def wrap(app: ASGIApp) -> ASGIApp:
            async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
                headers = dict(scope.get("headers") or [])
                guarded_path = scope["type"] == "http" and scope["path"].startswith("/v1/")
                if guarded_path and headers.get(b"authorization") != f"Bearer {API_KEY}".encode():
                    error = {"message": "invalid API key", "type": "authentication_error", "param": None}
                    await JSONResponse({"error": {**error, "code": "invalid_api_key"}}, 401)(scope, receive, send)
                    return
                await app(scope, receive, send)

            return guarded

        return wrap


@pytest.fixture(scope="module")
def site(fake_server: FakeOpenAI) -> Iterator[str]:
    require_browser()
    pm = make_plugin_manager()
    pm.register(RequireKey())
    with serve(playground_config(fake_server), pm=pm) as url:
        yield url.removesuffix("/v1")
    fake_server.reset()  # the upstream is shared with the other end-to-end tests


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpServer]:
    with McpServer("streamable_http") as server:
        yield server


@pytest.fixture(scope="module")
def driver(site: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    chromium = browser(tmp_path_factory.mktemp("chromium") / "profile")
    try:
        yield chromium
    finally:
        chromium.quit()


def wait(driver: Any, condition: Callable[[], Any], timeout: float = 30) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page re-renders lists as data arrives: an element found a moment ago may be gone; look again.
    waiting = WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException])
    return waiting.until(lambda _: condition())


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def texts(driver: Any, selector: str) -> list[str]:
    """The text of every match, read in one step (a list re-rendered meanwhile cannot go stale under us)."""
    script = "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)"
    return list(driver.execute_script(script, selector))


def shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def keys() -> Any:
    from selenium.webdriver.common.keys import Keys

    return Keys


def press(driver: Any, *sequence: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*sequence).perform()


def focused_id(driver: Any) -> str:
    return str(driver.execute_script("return document.activeElement && document.activeElement.id"))


def last_answer(driver: Any) -> Any:
    return css(driver, "#chat-log li.assistant")[-1]


def send_message(driver: Any, text: str) -> None:
    box = by_id(driver, "chat-input")
    box.click()
    box.send_keys(text)
    box.send_keys(keys().ENTER)


def wait_answer_done(driver: Any) -> Any:
    wait(driver, lambda: css(driver, "#chat-log li.assistant") and not css(driver, "#chat-log li.streaming"))
    wait(driver, lambda: by_id(driver, "chat-send").is_enabled())
    return last_answer(driver)


def test_without_a_browser_the_tests_skip_in_one_line_but_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import browser as browser_module

    monkeypatch.setattr(browser_module, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^browser tests skipped: /nonexistent/chromium is missing"):
        require_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"^browser tests cannot run: /nonexistent/chromium is missing"):
        require_browser()


def test_the_page_asks_for_the_api_key_and_keeps_it(driver: Any, site: str) -> None:
    driver.get(site + "/playground")  # redirected to /playground/
    assert driver.current_url.split("#")[0] == site + "/playground/"
    wait(driver, lambda: by_id(driver, "key-dialog").get_attribute("open") is not None)
    assert "401" in by_id(driver, "key-reason").text
    shot(driver, "01-api-key")
    by_id(driver, "key-input").send_keys(API_KEY, keys().ENTER)
    wait(driver, lambda: len(css(driver, "#chat-model option")) > 0)
    names = [o.get_attribute("value") for o in css(driver, "#chat-model option")]
    assert "fake/gpt-fake" in names and GUARDED_MODEL in names
    assert "fake/text-embedding-fake" not in names  # embedding models cannot chat
    assert driver.execute_script("return localStorage.getItem('lamina.playground.apiKey')") == API_KEY


def test_every_control_has_an_accessible_name(driver: Any) -> None:
    for tab in ("tab-chat", "tab-documents", "tab-agents", "tab-safety", "tab-inspect"):
        by_id(driver, tab).click()
        panel = by_id(driver, by_id(driver, tab).get_attribute("aria-controls"))
        wait(driver, lambda panel=panel: panel.is_displayed() and panel.get_attribute("aria-busy") is None)
        assert [p.get_attribute("id") for p in css(driver, "[role=tabpanel]") if p.is_displayed()] == [
            panel.get_attribute("id")
        ]
        controls = [c for c in css(driver, "input, select, textarea, button") if c.is_displayed()]
        controls += css(driver, "#docs-file") if tab == "tab-documents" else []
        assert len(controls) >= 4
        unnamed = [c.get_attribute("outerHTML")[:80] for c in controls if not c.accessible_name.strip()]
        assert unnamed == [], unnamed
    by_id(driver, "tab-chat").click()


def test_keyboard_alone_reaches_and_operates_everything(driver: Any, fake_server: FakeOpenAI) -> None:
    fake_server.reset()
    css(driver, "h1")[0].click()  # Tab starts from the top of the page
    order = []
    for _ in range(40):
        press(driver, keys().TAB)
        order.append(focused_id(driver))
        if order[-1] == "chat-send":
            break
    expected = ["tab-chat", "tab-documents", "tab-agents", "tab-safety", "tab-inspect", "api-key-button", "chat-model"]
    assert order[: len(expected)] == expected, order
    assert {"chat-system", "chat-temperature", "chat-use-docs", "chat-clear", "chat-input", "chat-send"} <= set(order)
    # Space and Enter select tabs.
    by_id(driver, "tab-safety").send_keys(keys().SPACE)
    wait(driver, lambda: by_id(driver, "panel-safety").is_displayed())
    by_id(driver, "tab-chat").send_keys(keys().ENTER)
    wait(driver, lambda: by_id(driver, "panel-chat").is_displayed())
    # Type in the message box, Tab to Send, press Space.
    by_id(driver, "chat-input").send_keys("typed by keyboard")
    press(driver, keys().TAB)
    assert focused_id(driver) == "chat-send"
    press(driver, keys().SPACE)
    assert "echo: typed by keyboard" in wait_answer_done(driver).text


def test_chat_streams_the_answer_as_it_comes(driver: Any, fake_server: FakeOpenAI) -> None:
    fake_server.reset()
    fake_server.stream_delay = 0.2
    driver.execute_script("localStorage.removeItem('lamina.playground.chat')")
    by_id(driver, "chat-clear").click()
    temperature = by_id(driver, "chat-temperature")
    temperature.clear()
    temperature.send_keys("0.3")
    by_id(driver, "chat-system").send_keys("Be brief.")
    prompt = "alpha beta gamma delta epsilon zeta"
    send_message(driver, prompt)
    seen: list[str] = []

    def finished() -> bool:
        answers = css(driver, "#chat-log li.assistant .content")
        if answers and (text := answers[-1].text) and (not seen or seen[-1] != text):
            seen.append(text)
        return by_id(driver, "chat-send").is_enabled() and bool(seen)

    wait(driver, finished)
    final = f"echo: {prompt}"
    assert seen[-1] == final
    partial = [text for text in seen if text != final]
    assert partial and all(final.startswith(text) for text in partial), seen  # text grew chunk by chunk
    stats = by_id(driver, "chat-stats").text
    assert "first token" in stats and "tokens/s" in stats and f"{len(final.split())} tokens" in stats, stats
    sent = fake_server.hits("/v1/chat/completions")[-1]["body"]
    assert sent["stream"] is True and sent["temperature"] == 0.3 and sent["max_tokens"] == 512
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    shot(driver, "02-chat-streamed")


def test_stop_aborts_the_request_and_the_upstream_stops(driver: Any, fake_server: FakeOpenAI) -> None:
    fake_server.reset()
    fake_server.stream_delay = 0.5
    send_message(driver, "one two three four five six seven eight nine ten eleven twelve")
    streaming = "#chat-log li.streaming .content"
    wait(driver, lambda: css(driver, streaming) and len(css(driver, streaming)[0].text.split()) >= 3)
    by_id(driver, "chat-stop").click()
    assert fake_server.disconnected.wait(20), "the upstream stream was not cancelled"
    answer = wait_answer_done(driver)
    assert "Stopped." in answer.text and "twelve" not in answer.text
    assert fake_server.streams_finished == 0


def test_the_conversation_survives_a_reload(driver: Any) -> None:
    before = [m.text for m in css(driver, "#chat-log li")]
    driver.refresh()
    wait(driver, lambda: len(css(driver, "#chat-model option")) > 0)
    assert [m.text for m in css(driver, "#chat-log li")] == before and len(before) == 4
    assert by_id(driver, "chat-system").get_attribute("value") == "Be brief."


def test_guardrails_cutting_a_stream_or_blocking_the_input_are_shown(driver: Any, fake_server: FakeOpenAI) -> None:
    fake_server.reset()
    from selenium.webdriver.support.ui import Select

    Select(by_id(driver, "chat-model")).select_by_value(GUARDED_MODEL)
    send_message(driver, "please write to bob@example.org today about the plan")
    answer = wait_answer_done(driver)
    notice = answer.find_element("css selector", ".notice.guardrail").text
    assert "content_filter" in notice
    assert "bob@example.org" not in answer.find_element("css selector", ".content").text
    shot(driver, "03-guardrail-cut")
    Select(by_id(driver, "chat-model")).select_by_value(STRICT_MODEL)
    send_message(driver, "my address is bob@example.org")
    answer = wait_answer_done(driver)
    notice = answer.find_element("css selector", ".notice.guardrail").text
    assert "blocked by guardrail 'shield:rules'" in notice and "pii/email" in notice, notice
    assert fake_server.hits("/v1/chat/completions")[-1]["body"]["model"] == "gpt-fake"  # only the cut stream's
    assert len(fake_server.hits("/v1/chat/completions")) == 1
    Select(by_id(driver, "chat-model")).select_by_value("fake/gpt-fake")


def test_documents_upload_ingest_and_search(driver: Any, tmp_path: Path) -> None:
    by_id(driver, "tab-documents").click()
    by_id(driver, "store-name").send_keys("notes", keys().ENTER)
    wait(driver, lambda: texts(driver, "#docs-store option") == ["notes"])
    bees = tmp_path / "bees.txt"
    bees.write_text(BEES)
    by_id(driver, "docs-file").send_keys(str(bees))
    # The second file arrives as a drop on the drop zone, as dragging it from the desktop does.
    driver.execute_script(
        """
        const transfer = new DataTransfer();
        transfer.items.add(new File([arguments[0]], "tides.txt", {type: "text/plain"}));
        const zone = document.getElementById("docs-drop");
        zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        """,
        TIDES,
    )
    wait(driver, lambda: texts(driver, "#docs-uploads .status") == ["ingested"] * 2)
    wait(driver, lambda: texts(driver, "#docs-files .badge") == ["completed"] * 2)
    assert set(texts(driver, "#docs-files .name")) == {"bees.txt", "tides.txt"}
    assert "2 of 2 files ingested" in by_id(driver, "docs-store-info").text
    by_id(driver, "docs-query").send_keys("Who makes honey?", keys().ENTER)
    wait(driver, lambda: len(css(driver, "#docs-results li")) == 2)
    results = {r.find_element("css selector", ".chunk").text: r for r in css(driver, "#docs-results li")}
    assert set(results) == {BEES, TIDES}
    for result in results.values():
        meta = result.find_element("css selector", ".meta").text
        score = float(result.find_element("css selector", ".score").text)
        assert meta.endswith(".txt") and 0 < score <= 1.001, meta
    shot(driver, "04-documents")


def test_chat_over_documents_puts_results_in_the_prompt_and_cites_them(driver: Any, fake_server: FakeOpenAI) -> None:
    fake_server.reset()
    by_id(driver, "tab-chat").click()
    by_id(driver, "chat-use-docs").click()
    top_k = by_id(driver, "chat-top-k")
    top_k.clear()
    top_k.send_keys("1")
    send_message(driver, "Who makes honey?")
    answer = wait_answer_done(driver)
    system = fake_server.hits("/v1/chat/completions")[-1]["body"]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.")
    cited = [b for b in answer.find_elements("css selector", "button.citation")]
    assert len(cited) == 1
    cited_file = cited[0].text.removeprefix("[1] ")
    chunk = {"bees.txt": BEES, "tides.txt": TIDES}[cited_file]
    assert f"[1] {cited_file}\n{chunk}" in system["content"]
    cited[0].send_keys(keys().ENTER)
    wait(driver, lambda: by_id(driver, "source-dialog").get_attribute("open") is not None)
    assert by_id(driver, "source-text").text == chunk
    shot(driver, "05-citation")
    press(driver, keys().ESCAPE)
    wait(driver, lambda: by_id(driver, "source-dialog").get_attribute("open") is None)
    by_id(driver, "chat-use-docs").click()


def test_an_agent_searches_a_store_and_the_timeline_shows_the_call(driver: Any, fake_server: FakeOpenAI) -> None:
    fake_server.reset()
    by_id(driver, "tab-agents").click()
    wait(driver, lambda: texts(driver, "#agent-store option") == ["notes"] and texts(driver, "#agent-model option"))
    by_id(driver, "agent-instructions").send_keys("Answer from the search results.")
    # An MCP server is added and removed by keyboard (the next test runs one).
    by_id(driver, "agent-mcp-label").send_keys("calc")
    by_id(driver, "agent-mcp-url").send_keys("http://127.0.0.1:9/mcp", keys().ENTER)
    wait(driver, lambda: texts(driver, "#agent-mcp-list .name") == ["calc · http://127.0.0.1:9/mcp"])
    css(driver, "#agent-mcp-list button")[0].send_keys(keys().ENTER)
    wait(driver, lambda: texts(driver, "#agent-mcp-list li") == ["None."])
    by_id(driver, "agent-use-search").send_keys(keys().SPACE)
    by_id(driver, "agent-force-search").send_keys(keys().SPACE)
    box = by_id(driver, "agent-input")
    box.send_keys("Who makes honey?", keys().ENTER)
    wait(driver, lambda: by_id(driver, "agent-run").is_enabled() and by_id(driver, "agent-status").text)
    status = by_id(driver, "agent-status").text
    assert status.startswith("completed") and "tokens" in status and "bees.txt" in status.split("cites ")[1], status
    # The forced search ran without asking the model; the one model call got the instructions and the results.
    (call,) = fake_server.hits("/v1/chat/completions")
    messages = call["body"]["messages"]
    assert messages[0] == {"role": "system", "content": "Answer from the search results."}
    tool_output = next(m["content"] for m in messages if m["role"] == "tool")
    assert BEES in tool_output
    assert by_id(driver, "agent-answer").text == "echo: Who makes honey?"
    (entry,) = css(driver, "#agent-timeline > li")
    assert entry.get_attribute("data-type") == "file_search_call" and entry.get_attribute("class") == "completed"
    summary = entry.find_element("css selector", "summary")
    assert summary.text == "file_search_call Who makes honey? · 2 results"
    summary.send_keys(keys().ENTER)  # opens it
    chunks = [c.text for c in entry.find_elements("css selector", ".result .chunk")]
    assert set(chunks) == {BEES, TIDES}
    scores = [float(s.text) for s in entry.find_elements("css selector", ".result .score")]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] <= 1.001
    shot(driver, "06-agent")


def test_an_agent_with_an_mcp_server_shows_its_tools_and_the_failed_call_and_stop_works(
    driver: Any, fake_server: FakeOpenAI, mcp_server: McpServer
) -> None:
    fake_server.reset()
    by_id(driver, "agent-use-search").send_keys(keys().SPACE)  # off: the MCP server's tools alone
    by_id(driver, "agent-mcp-label").send_keys("calc")
    by_id(driver, "agent-mcp-url").send_keys(mcp_server.url)
    by_id(driver, "agent-mcp-add").send_keys(keys().ENTER)
    wait(driver, lambda: texts(driver, "#agent-mcp-list .name") == [f"calc · {mcp_server.url}"])
    box = by_id(driver, "agent-input")
    box.clear()
    box.send_keys("Add two and three.", keys().ENTER)
    wait(driver, lambda: by_id(driver, "agent-run").is_enabled() and by_id(driver, "agent-status").text)
    assert by_id(driver, "agent-status").text.startswith("completed"), by_id(driver, "agent-status").text
    # The fake model calls the first tool offered with its fixed weather arguments, which `add` refuses.
    offered = [t["function"]["name"] for t in fake_server.hits("/v1/chat/completions")[0]["body"]["tools"]]
    assert len(offered) == 2
    listing, call = css(driver, "#agent-timeline > li")
    assert listing.get_attribute("data-type") == "mcp_list_tools"
    assert listing.find_element("css selector", "summary").text == "mcp_list_tools calc · 2 tools"
    assert call.get_attribute("data-type") == "mcp_call" and call.get_attribute("class") == "failed"
    summary = call.find_element("css selector", "summary")
    assert summary.text.startswith("mcp_call calc.") and summary.text.endswith(" · failed"), summary.text
    summary.click()
    assert call.find_element("css selector", "pre").text.startswith("error: Error executing tool add: ")
    assert by_id(driver, "agent-answer").text == "echo: Add two and three."
    shot(driver, "06-agent-mcp")
    # Stop mid-answer: the page aborts the stream and the server stops the upstream call.
    css(driver, "#agent-mcp-list button")[0].send_keys(keys().ENTER)
    fake_server.reset()
    fake_server.stream_delay = 0.5
    box.clear()
    box.send_keys("one two three four five six seven eight nine ten eleven twelve", keys().ENTER)
    wait(driver, lambda: len(by_id(driver, "agent-answer").text.split()) >= 3)
    by_id(driver, "agent-stop").click()
    assert fake_server.disconnected.wait(20), "the upstream stream was not cancelled"
    wait(driver, lambda: by_id(driver, "agent-status").text == "Stopped.")
    assert "twelve" not in by_id(driver, "agent-answer").text and fake_server.streams_finished == 0
    fake_server.reset()


def test_try_a_shield(driver: Any) -> None:
    by_id(driver, "tab-safety").click()
    wait(driver, lambda: "rules" in by_id(driver, "shields-table").text)
    guardrails = by_id(driver, "guardrails-table").text
    assert "rules" in guardrails and "output" in guardrails and GUARDED_MODEL in guardrails
    text = by_id(driver, "shield-text")
    text.send_keys("Mail me at jane@example.org")
    by_id(driver, "shield-form").submit()
    wait(driver, lambda: "Violation" in by_id(driver, "shield-result").text)
    assert "pii/email" in [c.text for c in css(driver, "#shield-result .chips li")]
    shot(driver, "07-shield")
    text.clear()
    text.send_keys("The weather is nice today.")
    by_id(driver, "shield-form").submit()
    wait(driver, lambda: "No violation" in by_id(driver, "shield-result").text)


def test_inspect_shows_providers_routes_and_the_redacted_config(driver: Any) -> None:
    by_id(driver, "tab-inspect").click()
    wait(driver, lambda: by_id(driver, "inspect-config").text.startswith("{"))
    providers = by_id(driver, "inspect-providers").text
    assert "remote::openai" in providers and "inline::hnswlib" in providers and "inline::rules" in providers
    assert "/v1/chat/completions" in by_id(driver, "inspect-routes").text
    assert GUARDED_MODEL in by_id(driver, "inspect-models").text
    config = json.loads(by_id(driver, "inspect-config").get_attribute("textContent"))
    assert config["providers"]["inference"][0]["config"]["api_key"] == "********"
    assert SECRET not in driver.page_source
    shot(driver, "08-inspect")


def test_a_401_asks_for_the_key_again(driver: Any) -> None:
    driver.execute_script("localStorage.setItem('lamina.playground.apiKey', 'wrong-key')")
    by_id(driver, "inspect-refresh").click()
    wait(driver, lambda: by_id(driver, "key-dialog").get_attribute("open") is not None)
    field = by_id(driver, "key-input")
    field.clear()
    field.send_keys(API_KEY, keys().ENTER)
    wait(driver, lambda: by_id(driver, "key-dialog").get_attribute("open") is None)
    wait(driver, lambda: "remote::openai" in by_id(driver, "inspect-providers").text)
    assert driver.execute_script("return localStorage.getItem('lamina.playground.apiKey')") == API_KEY


def test_the_page_logged_no_errors_and_loaded_nothing_from_elsewhere(driver: Any, site: str) -> None:
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(name.startswith(site + "/") for name in resources), resources
    # Chromium logs the 401s and the guardrail's 400 the tests provoked as failed resources; anything else is a fault.
    provoked = (
        "status of 401",
        "/v1/chat/completions - Failed to load resource: the server responded with a status of 400",
    )
    errors = [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and not any(p in entry["message"] for p in provoked)
    ]
    assert errors == []
