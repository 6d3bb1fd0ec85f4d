"""STAND-IN of modules/call_queue.py: the lock that serialises GPU jobs."""
import threading

queue_lock = threading.Lock()
