"""STAND-IN of modules/shared_state.State (§3.8): the progress fields and methods training touches."""
import time


class State:
    def __init__(self):
        self.skipped = self.interrupted = self.stopping_generation = False
        self.job, self.job_no, self.job_count = "", 0, 0
        self.sampling_step = self.sampling_steps = 0
        self.current_latent = self.current_image = None
        self.id_live_preview = 0
        self.textinfo = None
        self.time_start = None

    def begin(self, job="(unknown)"):
        self.__init__()
        self.job, self.job_count, self.time_start = job, -1, time.time()

    def end(self):
        self.job, self.job_count = "", 0

    def interrupt(self):
        self.interrupted = True

    def nextjob(self):
        self.job_no += 1
        self.sampling_step = 0

    def assign_current_image(self, image):
        self.current_image = image
        self.id_live_preview += 1
