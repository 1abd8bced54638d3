"""The one exception type that means "the user's input is wrong"."""


class PipelineError(Exception):
    """A problem with params, data or sizes that the user can fix.

    Stages print its message as a single line and exit non-zero, without a
    traceback: the message itself names the key and the numbers.
    """
