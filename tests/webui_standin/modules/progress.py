"""STAND-IN of modules/progress.py (§3.8): the task bookkeeping the progress polling reads."""
from collections import OrderedDict

current_task = None
pending_tasks = OrderedDict()
finished_tasks = []


def add_task_to_queue(id_job):
    pending_tasks[id_job] = True


def start_task(id_task):
    global current_task
    current_task = id_task
    pending_tasks.pop(id_task, None)


def finish_task(id_task):
    global current_task
    if current_task == id_task:
        current_task = None
    finished_tasks.append(id_task)
