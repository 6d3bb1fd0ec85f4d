"""The tabs as the WebUI hosts them, driven in headless Chromium. The host is the WebUI stand-in
(tests/webui_standin/webui_host.py: the Train tab page, /internal/progress, the page scripts) with the
extension loaded as the WebUI loads it; progress reaches the page only through our
javascript/hypernetwork_ext.js and the WebUI's polling, as in the real WebUI. Screenshots of both tabs
are kept in tests/artifacts/."""

import re

from browser import (chromium_page, choose, fill, free_port, open_tab, record_html, recorded_html, screenshot,
                     wait_for_text)
from test_webui_training import webui_training  # noqa: F401  (the stand-in WebUI with a tiny ldm model)

import webui


def test_create_and_train_in_the_webui_tabs(webui_training):  # noqa: F811
    from webui_host import serve
    modules, folder, tmp_path = webui_training
    webui.load_extension()
    modules["shared"].reload_hypernetworks()
    with serve(free_port(), [webui.EXTENSION_ROOT]) as url, chromium_page() as page:
        page.goto(url)
        open_tab(page, "Create Beta hypernetwork")
        fill(page, {"hnext_create_name": "browser_net", "hnext_create_layers": "1, 2"})
        page.click("#hnext_create_button")
        wait_for_text(page, "hnext_create_layers_message", "must start and end with 1")  # a message beside the input
        fill(page, {"hnext_create_layers": "1, 2, 1"})
        page.click("#hnext_create_button")
        wait_for_text(page, "hnext_create_output", "Created:")
        assert (folder / "browser_net.pt").exists() and "browser_net" in modules["shared"].hypernetworks
        screenshot(page, "webui_create_tab")

        open_tab(page, "Train_Gamma")
        choose(page, "hnext_train_hypernetwork", "style", refresh_id="hnext_train_refresh")
        fill(page, {"hnext_train_data_dir": tmp_path / "data", "hnext_train_log_dir": tmp_path / "logs",
                    "hnext_train_learn_rate": "1e-3", "hnext_train_width": 64, "hnext_train_height": 64,
                    "hnext_train_max_steps": 12, "hnext_train_save_every": 0, "hnext_train_preview_every": 4,
                    "hnext_train_preview_steps": 2, "hnext_train_preview_width": 64, "hnext_train_preview_height": 64})
        record_html(page, "hnext_train_progress")
        page.evaluate("""() => {  // what the WebUI's progress bar and live preview showed, sampled while they exist
            window.__hnext_bar = [];
            window.__hnext_previews = 0;
            setInterval(() => {
                const bar = document.querySelector('.progressDiv .progress');
                if (bar) window.__hnext_bar.push(bar.textContent);
                const previews = document.querySelectorAll('.livePreview img').length;
                window.__hnext_previews = Math.max(window.__hnext_previews, previews);
            }, 50);
        }""")
        page.click("#hnext_train_train")
        page.locator("#hnext_train_progress img.hnext-chart").wait_for()
        screenshot(page, "webui_train_tab_running")
        wait_for_text(page, "hnext_train_output", "Training finished at step 12")
        statuses = recorded_html(page, "hnext_train_progress")
        charts = {m for html in statuses for m in re.findall(r"class=\"hnext-chart\" src=\"([^\"]+)\"", html)}
        steps = {m for html in statuses for m in re.findall(r"Step: (\d+)", html)}
        assert len(steps) >= 2 and len(charts) >= 2, statuses  # status text and chart updated while it ran
        bar_texts = page.evaluate("() => window.__hnext_bar")
        assert any("%" in text for text in bar_texts), bar_texts  # the WebUI's bar followed the run
        assert page.evaluate("() => window.__hnext_previews") >= 1  # training previews as the WebUI's live preview
        screenshot(page, "webui_train_tab")
        raw_html = [text for text in bar_texts if "<" in text]
        assert not raw_html, ("the WebUI's progress bar shows the status HTML as text: shared.state.textinfo must "
                              "hold a newline (as the WebUI's own training status does); bar: " + raw_html[0][:200])
