"""STAND-IN of modules/textual_inversion/textual_inversion.py: the prompt templates, {file name: template with
its .path}, listed from cmd_opts.textual_inversion_templates_dir (empty here unless a test sets it)."""
import os

from modules import shared

textual_inversion_templates = {}


class TextualInversionTemplate:
    def __init__(self, name, path):
        self.name, self.path = name, path


def list_textual_inversion_templates():
    textual_inversion_templates.clear()
    for root, _, names in os.walk(shared.cmd_opts.textual_inversion_templates_dir):
        for name in names:
            textual_inversion_templates[name] = TextualInversionTemplate(name, os.path.join(root, name))
    return textual_inversion_templates
