"""The one exception type that carries a clinician-readable sentence.

Every check on user input raises :class:`InputError` with one sentence that names the file
(or parameter), says what is wrong and what to do. The CLI prints it and exits with status 2;
widgets show it as a napari notification. Anything else is a bug and is reported as such.
"""


class InputError(ValueError):
    """Bad input: the message is one complete sentence meant for the user."""
