"""STAND-IN of modules/call_queue.py (§3.8): the lock that serialises GPU jobs, and the wrapper that
runs a UI job under it with its task id and `shared.state` bookkeeping."""
import threading

queue_lock = threading.Lock()


def wrap_gradio_gpu_call(func, extra_outputs=None):
    def f(*args, **kwargs):
        from modules import progress, shared
        id_task = args[0] if args and isinstance(args[0], str) and args[0].startswith("task(") else None
        if id_task:
            progress.add_task_to_queue(id_task)
        with queue_lock:
            shared.state.begin(job=id_task or "(unknown)")
            if id_task:
                progress.start_task(id_task)
            try:
                return func(*args, **kwargs)
            finally:
                if id_task:
                    progress.finish_task(id_task)
                shared.state.end()
    return f
