"""The two exception types a user of the library ever sees.

Every message is written for the person who typed the input or chose the file:
it names the entry or file that is wrong and says why.
"""


class HypernetworkError(Exception):
    """Base class: anything the user can fix by changing input or choosing another file."""


class ConfigError(HypernetworkError, ValueError):
    """User text or a setting is invalid.

    ``field`` names the input it belongs to (``"layer_structure"``, ``"dropout_structure"``, ...)
    so that a UI can show the message beside that input.
    """

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class HypernetworkFileError(HypernetworkError):
    """A file could not be read or written as a hypernetwork (or sidecar, or set).

    This is the one exception every loader raises for a bad file: empty, truncated, not a
    hypernetwork, holding code or objects that are not plain weights, or with wrong shapes.
    """

    def __init__(self, path, message: str):
        super().__init__(f"{path}: {message}")
        self.path = str(path)
        self.reason = message
