"""Entry point of the README's first command.

The Gradio app is not built yet (issue 5); until then this runs the command-line tour of the
embedded pocket world, so the command in the README stays the same when the app lands.
Global options pass through, e.g. ``python app.py --device cpu``.
"""

import sys

from inspector.cli import main

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "demo"]))
