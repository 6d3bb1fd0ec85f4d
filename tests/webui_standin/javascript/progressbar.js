// STAND-IN of the WebUI's page scripts that our javascript/hypernetwork_ext.js calls, written from
// webui-interfaces.md §1.8 and §3.8: gradioApp() (script.js), randomId() and requestProgress()
// (progressbar.js), and the few `opts` they read. Not the WebUI's code; it keeps the behaviours an
// extension sees: a bar inserted above the container, one-line textinfo shown inside the bar, live
// previews beside the gallery, polling until the task was active and no longer is.

var opts = {show_progressbar: true, live_previews_enable: true, live_preview_refresh_period: 250};

function gradioApp() {
    var app = document.getElementsByTagName("gradio-app")[0];
    var root = app ? (app.shadowRoot || app) : document;
    if (!root.getElementById) {
        root.getElementById = function(id) { return document.getElementById(id); };
    }
    return root;
}

function randomId() {
    var chars = "";
    while (chars.length < 15) {
        chars += Math.random().toString(36).slice(2);
    }
    return "task(" + chars.slice(0, 15) + ")";
}

function postJson(url, body, onAnswer, onFailure) {
    fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)})
        .then(function(response) { return response.ok ? response.json() : Promise.reject(response.status); })
        .then(onAnswer, onFailure);
}

function requestProgress(id_task, progressbarContainer, gallery, atEnd, onProgress, inactivityTimeout = 40) {
    var started = Date.now();
    var wasEverActive = false;
    var bar = document.createElement("div");
    bar.className = "progressDiv";
    var inner = document.createElement("div");
    inner.className = "progress";
    bar.appendChild(inner);
    progressbarContainer.parentNode.insertBefore(bar, progressbarContainer);
    var livePreview = null;
    if (gallery) {
        livePreview = document.createElement("div");
        livePreview.className = "livePreview";
        gallery.parentNode.insertBefore(livePreview, gallery);
    }

    function finish() {
        bar.remove();
        if (livePreview) livePreview.remove();
        atEnd();
    }

    function poll(id_live_preview) {
        postJson("./internal/progress", {id_task: id_task, id_live_preview: id_live_preview}, function(res) {
            if (res.completed) return finish();
            var text = res.progress > 0 ? (res.progress * 100).toFixed(0) + "%" : "";
            if (res.eta) text += " ETA: " + Math.floor(res.eta) + "s";
            if (res.textinfo && res.textinfo.indexOf("\n") == -1) text = res.textinfo + " " + text;
            inner.style.width = ((res.progress || 0) * 100) + "%";
            inner.textContent = text;
            if (res.active) wasEverActive = true;
            if (!res.active && wasEverActive) return finish();
            if ((Date.now() - started) / 1000 > inactivityTimeout && !res.queued && !res.active) return finish();
            if (res.live_preview && livePreview) {
                var img = new Image();
                img.onload = function() {
                    livePreview.appendChild(img);
                    if (livePreview.childElementCount > 2) livePreview.removeChild(livePreview.firstElementChild);
                };
                img.src = res.live_preview;
            }
            if (onProgress) onProgress(res);
            setTimeout(function() { poll(res.id_live_preview); }, opts.live_preview_refresh_period);
        }, finish);
    }

    poll(0);
}
