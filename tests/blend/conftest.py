import pytest
from typer.testing import CliRunner

import vadasm.cli.blend_cmd  # noqa: F401  (registers blend, decompose, rotations on the app)
from vadasm.cli import app


@pytest.fixture
def vadasm():
    """Run `vadasm ARGS...` in-process; return the result, re-raising the command's exception."""
    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(app, [str(a) for a in args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == 0, result.output
        return result

    return invoke
