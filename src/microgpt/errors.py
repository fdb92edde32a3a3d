"""The one exception the command line turns into a one-line message and exit status 2."""


class UserError(Exception):
    """Bad input from the user: a file, a flag value or a checkpoint. The message says what is
    wrong and what to do; the CLI prints it as one line, without a traceback."""


class PeerError(UserError):
    """This process stops because another failed (a rank of a torchrun job died or hung): the
    message names the other, and no run of this process is to blame."""
