"""The command-line boundary: the user's mistakes are one ``error:`` line (exit 2), bugs keep their traceback (exit 1)."""

import io

from glide_jax.errors import InputError, run_command
from glide_jax.hub.checkpoint_zip import CheckpointFormatError


def _run(exc):
    stream = io.StringIO()

    def command():
        raise exc

    return run_command(command, stream), stream.getvalue()


def test_input_errors_are_one_line_and_exit_2():
    for exc in (InputError("steps must be >= 1, got 0"), CheckpointFormatError("x.pt is not a checkpoint"),
                FileNotFoundError(2, "No such file or directory", "missing.pt")):
        status, text = _run(exc)
        assert status == 2 and text.count("\n") == 1 and text.startswith("error: "), text
        assert "Traceback" not in text


def test_a_plain_value_error_is_a_bug_with_its_traceback():
    status, text = _run(ValueError("operands could not be broadcast together"))
    assert status == 1
    assert "Traceback" in text and "ValueError: operands could not be broadcast together" in text
    assert not text.startswith("error:")
