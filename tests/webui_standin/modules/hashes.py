"""STAND-IN of modules/hashes.py: sha256 of a file (the WebUI keeps a cache keyed by title; not needed here)."""
import hashlib


def sha256_from_cache(filename, title, use_addnet_hash=False):
    with open(filename, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()
