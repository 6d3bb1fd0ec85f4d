// Train_Gamma: live progress through the WebUI's own polling (progressbar.js), the way its Train tab
// shows progress: a task id replaces the first (hidden) input, then the bar, the live preview and the
// status text (with the loss chart) follow /internal/progress until training ends.
function hnext_start_training() {
    var id = randomId();
    requestProgress(
        id,
        gradioApp().getElementById("hnext_train_output"),
        gradioApp().getElementById("hnext_train_gallery"),
        function() {},
        function(progress) {
            var status = gradioApp().getElementById("hnext_train_progress");
            if (status && progress.textinfo) {
                status.innerHTML = progress.textinfo;
            }
        }
    );
    var args = Array.from(arguments);
    args[0] = id;
    return args;
}
