"""User-facing errors: raised for bad input (files, flags, prompts, models); CLIs print them and exit with code 2."""


class UserError(Exception):
    """Base class of errors whose message tells the user what to fix."""


class UserInputError(UserError, ValueError):
    """Bad input from the user (file, flag or prompt)."""


class PriorLoadError(UserError, RuntimeError):
    """The diffusion model could not be loaded; the message says why and what to do."""
